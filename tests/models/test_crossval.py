"""tools/crossval.py end to end: one real training process per left-out recording, pooled scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import crossval  # noqa: E402

from perception.models.training import iou_from_confusion  # noqa: E402
from tests.models.helpers import fake_camvid as _fake_camvid  # noqa: E402


def test_crossval_trains_one_fold_per_sequence_and_pools_their_confusions(tmp_path: Path, capsys) -> None:
    data = _fake_camvid(tmp_path / "camvid", n=2, sequences={"train": "A", "val": "B"})
    cfg = tmp_path / "cv.yaml"
    cfg.write_text(f"data: {data}\ntrain-splits: [train, val]\nno-pretrained: true\nbatch-size: 2\n"
                   "input-size: 96x64\ncrop: 64x64\nwarmup-iters: 1\nthreads: 1\nepochs: 1\n")
    out = tmp_path / "cv"
    assert crossval.main(["--config", str(cfg), "--out", str(out), "--sequences", "A", "B"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("--holdout-sequence") == 2 and "| **mIoU** |" in printed
    report = json.loads((out / "crossval.json").read_text())
    assert set(report["folds"]) == {"A", "B"}
    rows = {s: json.loads((out / s / "log.jsonl").read_text().splitlines()[-1]) for s in "AB"}
    pooled = np.asarray(rows["A"]["val_confusion"]) + np.asarray(rows["B"]["val_confusion"])
    assert report["pooled"]["miou"] == pytest.approx(float(np.nanmean(iou_from_confusion(pooled))), abs=1e-4)
    assert report["folds"]["A"]["labelled_pixels"] == 2 * (72 * 96 - 1)

    # finished folds are not trained again; --report only pools
    assert crossval.main(["--config", str(cfg), "--out", str(out), "--sequences", "A", "B"]) == 0
    assert "--holdout-sequence" not in capsys.readouterr().out
    assert crossval.main(["--config", str(cfg), "--out", str(out), "--sequences", "A", "C", "--report"]) == 2
    assert "no evaluation yet for the folds ['C']" in capsys.readouterr().err


def test_crossval_stops_on_a_failing_fold(tmp_path: Path, capsys) -> None:
    data = _fake_camvid(tmp_path / "camvid", n=2, sequences={"train": "A", "val": "B"})
    cfg = tmp_path / "cv.yaml"
    cfg.write_text(f"data: {data}\nno-pretrained: true\n")  # trains on train only: B is not there
    assert crossval.main(["--config", str(cfg), "--out", str(tmp_path / "cv"), "--sequences", "B"]) == 2
    assert "fold B failed (exit 2)" in capsys.readouterr().err
    assert crossval.main(["--config", str(tmp_path / "nope.yaml")]) == 2


def test_final_model_card_says_val_was_trained_on_and_carries_the_crossval(tmp_path: Path) -> None:
    import export_onnx as export_tool
    import train as train_tool

    data = _fake_camvid(tmp_path / "camvid", n=2, sequences={"train": "A", "val": "B"})
    cfg = tmp_path / "cv.yaml"
    cfg.write_text(f"data: {data}\ntrain-splits: [train, val]\nno-pretrained: true\nbatch-size: 2\n"
                   "input-size: 96x64\ncrop: 64x64\nwarmup-iters: 1\nthreads: 1\nepochs: 1\n")
    assert crossval.main(["--config", str(cfg), "--out", str(tmp_path / "cv"), "--sequences", "A", "B"]) == 0
    final = tmp_path / "final"
    assert train_tool.main(["--config", str(cfg), "--out", str(final), "--eval-split", "none"]) == 0
    onnx_path = tmp_path / "final.onnx"
    assert export_tool.main(["--checkpoint", str(final / "best.pt"), "--out", str(onnx_path), "--data", str(data),
                             "--threads", "1", "--crossval", str(tmp_path / "cv" / "crossval.json")]) == 0
    card = json.loads(onnx_path.with_suffix(".card.json").read_text())
    assert "camvid_val_miou" not in card["metrics"]
    assert "not a held-out score" in card["metrics"]["camvid_val_trained_on"]["note"]
    cv = card["metrics"]["crossval_by_sequence"]
    report = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    assert cv["pooled_miou"] == report["pooled"]["miou"] and set(cv["fold_miou"]) == {"A", "B"}
    training = card["training"]
    assert training["splits"].startswith("trained on CamVid train (367 images) + val (101 images); no checkpoint")
    assert training["machine"].startswith("CPU only: ") and "1 threads" in training["machine"]
