"""tools/train.py end to end on a tiny CamVid-layout folder: checkpoints, log, resume, export of the result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import train as train_tool  # noqa: E402

from perception.errors import DataError  # noqa: E402
from perception.models.data import load_split  # noqa: E402
from perception.models.export import load_checkpoint  # noqa: E402
from tests.models.helpers import fake_camvid as _fake_camvid  # noqa: E402


def test_train_writes_checkpoints_and_resumes(tmp_path: Path) -> None:
    data = _fake_camvid(tmp_path / "camvid")
    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--no-pretrained", "--batch-size", "2", "--input-size", "96x64",
              "--crop", "64x64", "--eval-every", "1", "--warmup-iters", "1", "--threads", "1"]
    assert train_tool.main([*common, "--epochs", "1"]) == 0
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    assert train_tool.main([*common, "--epochs", "2", "--resume"]) == 0
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1]
    assert lines[1]["iter"] == 4 and 0.0 <= lines[1]["val_miou"] <= 1.0
    model, state = load_checkpoint(out / "best.pt")
    assert state["input_size"] == [96, 64]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 96))[0].shape == (1, 11, 16, 24)


_TINY = ["--no-pretrained", "--batch-size", "2", "--input-size", "96x64", "--crop", "64x64", "--warmup-iters", "1",
         "--threads", "1"]


def test_holdout_sequence_trains_on_the_rest_and_scores_the_left_out_recording(tmp_path: Path, capsys) -> None:
    """One cross-validation fold: train + val minus sequence B; the evaluation row pools into a confusion
    matrix over exactly B's labelled pixels."""
    data = _fake_camvid(tmp_path / "camvid", n=3, sequences={"train": "A", "val": "B"})
    out = tmp_path / "fold"
    assert train_tool.main(["--data", str(data), "--out", str(out), *_TINY, "--epochs", "1",
                            "--train-splits", "train", "val", "--holdout-sequence", "B"]) == 0
    assert "loaded 3 training images (train, val without B) / 3 evaluation images" in capsys.readouterr().out
    row = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert row["iter"] == 1  # 3 images of A, batches of 2
    assert np.asarray(row["val_confusion"]).sum() == 3 * (72 * 96 - 1)  # one Unlabelled pixel per image
    assert train_tool.main(["--data", str(data), "--out", str(out), *_TINY, "--holdout-sequence", "C"]) == 2
    assert "no image of sequence 'C'; the sequences are ['A']" in capsys.readouterr().err


def test_final_model_on_train_and_val_is_the_last_checkpoint(tmp_path: Path, capsys) -> None:
    data = _fake_camvid(tmp_path / "camvid", n=2)
    out = tmp_path / "final"
    common = ["--data", str(data), "--out", str(out), *_TINY, "--train-splits", "train", "val"]
    assert train_tool.main([*common, "--epochs", "1"]) == 2  # val would be evaluated while trained on
    assert "--eval-split val is also trained on" in capsys.readouterr().err
    assert train_tool.main([*common, "--epochs", "2", "--eval-split", "none", "--eval-every", "1"]) == 0
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [2, 4] and all("val_miou" not in r for r in rows)
    best = torch.load(out / "best.pt", weights_only=False)
    assert best["epoch"] == 1 and best["iter"] == 4  # no selection: the last one


def test_load_split_names_bad_label_file(tmp_path: Path) -> None:
    data = _fake_camvid(tmp_path / "camvid", n=1)
    bad = data / "valannot" / "f0.png"
    cv2.imwrite(str(bad), np.full((72, 96), 40, dtype=np.uint8))
    with pytest.raises(DataError, match=r"f0\.png has class id 40"):
        load_split(data, "val")
    cv2.imwrite(str(bad), np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(DataError, match="has shape"):
        load_split(data, "val")


def _fake_pennfudan(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(1)
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    for i in range(n):
        img = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
        mask = np.zeros((90, 70), dtype=np.uint8)
        mask[10:80, 8:25] = 1
        mask[20:85, 40:60] = 2
        img[mask > 0] = (40, 40, 200)
        cv2.imwrite(str(root / "PNGImages" / f"P{i}.png"), img)
        cv2.imwrite(str(root / "PedMasks" / f"P{i}_mask.png"), mask)
    (root / "train.txt").write_text("".join(f"P{i}\n" for i in range(n)))
    return root


def test_finetune_from_onnx_with_pennfudan(tmp_path: Path) -> None:
    """--init-onnx + --pennfudan: trains on both, holds out every 4th Penn-Fudan image and scores persons on
    it through the exported model each evaluation."""
    data = _fake_camvid(tmp_path / "camvid")
    pf = _fake_pennfudan(tmp_path / "pf")
    out = tmp_path / "run"
    args = ["--data", str(data), "--out", str(out), "--batch-size", "2", "--input-size", "96x64", "--crop", "64x64",
            "--eval-every", "1", "--warmup-iters", "1", "--threads", "1", "--epochs", "1",
            "--init-onnx", str(REPO / "engines" / "camvid_lite0_panoptic.onnx"), "--pennfudan", str(pf)]
    assert train_tool.main(args) == 0
    assert (out / "pennfudan_holdout.txt").read_text().split() == ["P3"]
    line = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert line["iter"] == (4 + 3 * 2) // 2  # 4 CamVid + 3 Penn-Fudan images twice, batches of 2
    assert set(line["pennfudan_holdout"]) == {"person_recall50", "person_precision50", "person_ap50", "person_pq"}

    import export_onnx as export_tool

    onnx_path = tmp_path / "ft.onnx"
    assert export_tool.main(["--checkpoint", str(out / "best.pt"), "--out", str(onnx_path), "--data", str(data),
                             "--threads", "1"]) == 0
    card = json.loads(onnx_path.with_suffix(".card.json").read_text())
    start = json.loads((REPO / "engines" / "camvid_lite0_panoptic.card.json").read_text())
    expected = f"{start['name']} v{start['version']} (camvid_lite0_panoptic.onnx)"
    assert card["training"]["fine_tuned_from"]["model"] == expected
    assert "Penn-Fudan" in card["training"]["terms"] and "every 4th image" in card["training"]["splits"]
    held = card["metrics"]["pennfudan_holdout"]
    assert held["stems"] == ["P3"] and held["persons"] == 2 and 0.0 <= held["person_recall50"] <= 1.0


def test_config_file_sets_options_and_names_a_bad_key(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text("lr: 0.0005\ncrop: 320x256\ninit-onnx: engines/camvid_lite0_panoptic.onnx\nepochs: 3\n")
    args = train_tool.parse_args(["--config", str(cfg), "--epochs", "5"])
    assert args.lr == 0.0005 and args.crop == (320, 256) and args.epochs == 5  # the command line wins
    assert args.init_onnx == REPO / "engines" / "camvid_lite0_panoptic.onnx"
    shipped = train_tool.parse_args(["--config", str(REPO / "configs" / "training" / "panoptic_pennfudan.yaml")])
    assert shipped.init_onnx.is_file() and shipped.pennfudan_holdout_every == 4
    cfg.write_text("learning-rate: 0.1\n")
    with pytest.raises(SystemExit) as exc:
        train_tool.parse_args(["--config", str(cfg)])
    assert exc.value.code == 2 and "unknown option 'learning-rate'" in capsys.readouterr().err
