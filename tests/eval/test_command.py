"""``perception eval`` as a real subprocess on tiny data sets written in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from tests.eval.evaldata import write_camvid, write_pair
from tests.tinymodel import make_tiny_model

KEYS = {"miou", "pixel_accuracy", "per_class_iou", "mean_dice", "boundary_f1", "fps", "images", "skipped",
        "model", "input_size", "upsample"}


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perception.cli", "eval", "--no-progress", *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    return make_tiny_model(d, input_size=(64, 48)), make_tiny_model(d, input_size=(64, 48), dynamic=False, name="fixed")


def test_eval_json(tmp_path, tiny):
    data = write_camvid(tmp_path / "data", n=3, size=(96, 72))
    r = run_eval("--data", str(data), "--model", str(tiny[0]), "--input-size", "32x24",
                 "--upsample", "nearest", "--boundary-tolerance", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # exactly one JSON object on stdout
    assert KEYS <= set(out)
    assert out["images"] == 3 and out["skipped"] == 0
    assert out["input_size"] == [32, 24] and out["upsample"] == "nearest"
    assert set(out["per_class_iou"]) == {"Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
                                         "Fence", "Car", "Pedestrian", "Bicyclist"}
    assert 0.0 <= out["miou"] <= 1.0 and 0.0 <= out["pixel_accuracy"] <= 1.0 and out["fps"] > 0
    assert set(out["boundary_f1"]) == {"Road", "Pavement"}
    assert out["boundary_f1"]["Road"]["tolerance_px"] == 3.0
    assert set(out["boundary_f1"]["Road"]) == {"precision", "recall", "f1", "tolerance_px"}


def test_eval_table(tmp_path, tiny):
    data = write_camvid(tmp_path / "data", n=2)
    r = run_eval("--data", str(data / "val"), "--model", str(tiny[0]))
    assert r.returncode == 0, r.stderr
    for text in ("mIoU", "pixel accuracy", "mean Dice", "boundary F1 (tolerance 2 px", "Pavement", "images/s"):
        assert text in r.stdout


def _bad_data(tmp_path, kind):
    data = write_camvid(tmp_path / "data", n=3)
    if kind == "missing":
        (data / "valannot" / "img001.png").unlink()
    elif kind == "size":
        write_pair(data / "val", data / "valannot", "img001", label_size=(32, 24))
    else:
        p = data / "valannot" / "img001.png"
        lab = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        lab[3, 3] = 42
        cv2.imwrite(str(p), lab)
    return data


@pytest.mark.parametrize("kind,message", [
    ("missing", "label file missing"), ("size", "is 32x24 but its image"), ("unknown", "class ids [42]")])
def test_bad_input_names_the_file_or_is_skipped(tmp_path, tiny, kind, message):
    data = _bad_data(tmp_path, kind)
    r = run_eval("--data", str(data), "--model", str(tiny[0]), "--json")
    assert r.returncode == 2
    assert r.stdout == ""
    assert message in r.stderr and "img001.png" in r.stderr
    r = run_eval("--data", str(data), "--model", str(tiny[0]), "--json", "--skip-bad")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["images"] == 2 and out["skipped"] == 1
    assert message in out["skipped_files"][0]["reason"]


def test_fixed_size_model_rejects_other_input_size(tmp_path, tiny):
    data = write_camvid(tmp_path / "data", n=1)
    r = run_eval("--data", str(data), "--model", str(tiny[1]), "--input-size", "32x24")
    assert r.returncode == 2
    assert "fixed input size 64x48" in r.stderr and "32x24" in r.stderr


def test_missing_model_and_missing_data(tmp_path, tiny):
    r = run_eval("--data", str(tmp_path), "--model", str(tmp_path / "none.onnx"))
    assert r.returncode == 2 and "model file not found" in r.stderr
    r = run_eval("--data", str(tmp_path), "--model", str(tiny[0]))
    assert r.returncode == 2 and "cannot find a camvid-layout data set" in r.stderr


def test_both_subcommands_are_registered():
    import argparse
    import importlib.util

    from perception.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "eval" in sub.choices
    args = parser.parse_args(["eval", "--data", "somewhere", "--input-size", "480x352", "--limit", "3"])
    assert args.input_size == (480, 352) and args.limit == 3 and args.upsample == "bilinear"
    has_tracking = importlib.util.find_spec("perception.cli.eval_tracking") is not None
    assert ("eval-tracking" in sub.choices) == has_tracking
