"""Person instance metrics (perception.eval.instances) against pycocotools and the PQ of metrics.py."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.errors import DataError
from perception.eval.instances import InstanceTally, average_precision, mask_ious, pennfudan_pairs
from perception.eval.metrics import panoptic_counts


def _random_image(rng: np.random.Generator, h: int = 60, w: int = 80):
    """A true id map with up to 4 boxes-with-holes persons and predictions that are jittered copies, misses and
    false alarms, with scores."""
    gt = np.zeros((h, w), np.uint16)
    pred = np.zeros((h, w), np.uint16)
    scores = []
    g = int(rng.integers(0, 5))
    for i in range(1, g + 1):
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 25))
        bw, bh = int(rng.integers(6, 20)), int(rng.integers(10, 25))
        gt[y:y + bh, x:x + bw] = i
        if rng.random() < 0.8:  # found, shifted by a random amount (some below IoU 0.5)
            dx, dy = (int(v) for v in rng.integers(-6, 7, 2))
            k = len(scores) + 1
            pred[max(0, y + dy):max(0, y + dy + bh), max(0, x + dx):max(0, x + dx + bw)] = k
            scores.append(float(rng.random()))
    for _ in range(int(rng.integers(0, 3))):  # false alarms
        x, y = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        k = len(scores) + 1
        pred[y:y + 8, x:x + 8] = k
        scores.append(float(rng.random()))
    ids = [k for k in range(1, len(scores) + 1) if (pred == k).any()]
    return gt, pred, ids, [scores[k - 1] for k in ids]


def _rle(mask: np.ndarray):
    from pycocotools import mask as mask_util

    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _coco(images):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gts, dts, infos = [], [], []
    for n, (gt, pred, ids, scores) in enumerate(images):
        h, w = gt.shape
        infos.append({"id": n, "height": h, "width": w})
        for g in np.unique(gt)[1:]:
            m = gt == g
            gts.append({"id": len(gts) + 1, "image_id": n, "category_id": 1, "segmentation": _rle(m),
                        "area": float(m.sum()), "bbox": list(cv2.boundingRect(m.astype(np.uint8))), "iscrowd": 0})
        for k, s in zip(ids, scores):
            dts.append({"image_id": n, "category_id": 1, "segmentation": _rle(pred == k), "score": s})
    coco = COCO()
    coco.dataset = {"images": infos, "annotations": gts, "categories": [{"id": 1, "name": "person"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        det = coco.loadRes(dts) if dts else COCO()
        ev = COCOeval(coco, det, "segm")
        ev.params.iouThrs = np.array([0.5])
        ev.params.maxDets = [100]
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][0, :, 0, 0, 0]  # [T, R, K, A, M]
    rec = ev.eval["recall"][0, 0, 0, 0]
    return float(np.mean(prec)), float(rec)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap50_and_recall_match_pycocotools(seed):
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(seed)
    images = [_random_image(rng) for _ in range(12)]
    tally = InstanceTally()
    for gt, pred, ids, scores in images:
        iou, _ = mask_ious(pred, ids, gt)
        tally.add(iou, scores)
    ours = tally.scores_dict()
    ap, rec = _coco(images)
    assert ours["person_ap50"] == pytest.approx(ap, abs=1e-9)
    assert ours["person_recall50"] == pytest.approx(rec, abs=1e-9)


def test_pq_matches_panoptic_counts():
    rng = np.random.default_rng(5)
    tally = InstanceTally()
    total = None
    for _ in range(10):
        gt, pred, ids, scores = _random_image(rng)
        iou, _ = mask_ious(pred, ids, gt)
        tally.add(iou, scores)
        c = panoptic_counts((pred > 0).astype(np.uint8), pred, (gt > 0).astype(np.uint8), gt, num_classes=2)
        total = c if total is None else total + c
    pq = total.scores()[0][1]
    assert tally.scores_dict()["person_pq"] == pytest.approx(pq, abs=1e-9)


def test_precision_recall_by_hand():
    gt = np.zeros((10, 10), np.uint8)
    gt[0:4, 0:4] = 1
    gt[6:10, 6:10] = 2
    pred = np.zeros((10, 10), np.uint16)
    pred[0:4, 0:4] = 1  # exact
    pred[6:10, 8:10] = 2  # IoU 0.5 with person 2: a match (>= 0.5), not a PQ match (> 0.5)
    pred[0:2, 7:9] = 3  # false alarm
    iou, gids = mask_ious(pred, [1, 2, 3], gt)
    assert gids.tolist() == [1, 2] and iou[1, 1] == pytest.approx(0.5)
    t = InstanceTally()
    t.add(iou, [0.9, 0.8, 0.1])
    s = t.scores_dict()
    assert s["person_recall50"] == 1.0 and s["person_precision50"] == pytest.approx(2 / 3)
    assert s["person_ap50"] == pytest.approx(1.0)
    assert s["person_pq"] == pytest.approx(1.0 / (1 + 0.5 * 2 + 0.5 * 1))
    assert np.isnan(average_precision([], [], 0))


def test_pennfudan_layout_and_command(tmp_path, capsys):
    (tmp_path / "PNGImages").mkdir()
    (tmp_path / "PedMasks").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / "PNGImages" / f"{name}.png"), rng.integers(0, 255, (96, 128, 3), np.uint8))
        m = np.zeros((96, 128), np.uint8)
        m[20:80, 30:50] = 1
        cv2.imwrite(str(tmp_path / "PedMasks" / f"{name}_mask.png"), m)
    assert [p.name for p in pennfudan_pairs(tmp_path)] == ["a", "b"]
    (tmp_path / "one.txt").write_text("b\n")
    assert [p.name for p in pennfudan_pairs(tmp_path, "one")] == ["b"]
    assert [p.name for p in pennfudan_pairs(tmp_path, str(tmp_path / "one.txt"))] == ["b"]
    with pytest.raises(DataError, match="PedMasks"):
        pennfudan_pairs(tmp_path / "PNGImages")
    from perception.cli import main

    assert main(["eval", "--data", str(tmp_path), "--layout", "pennfudan", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("person_recall50", "person_precision50", "person_ap50", "person_pq"):
        assert k in out
    assert out["images"] == 2 and out["persons"] == 2


def test_bundled_model_finds_the_held_out_penn_fudan_people(capsys):
    """The shipped model on the Penn-Fudan images its training held out (configs/training/
    pennfudan_holdout.txt): issue 25's target is mask recall >= 0.8 at IoU 0.5 on the owners' own part.
    Measured when the model was made: see the model card's metrics.pennfudan_holdout."""
    from perception.cli import main
    from perception.config import default_model_path
    from tests.conftest import SHARED_DATA

    root = SHARED_DATA / "pennfudan"
    if not (root / "PedMasks").is_dir():
        pytest.skip("../shared/data/pennfudan is absent")
    holdout = Path(__file__).resolve().parents[2] / "configs" / "training" / "pennfudan_holdout.txt"
    assert main(["eval", "--data", str(root), "--layout", "pennfudan", "--split", str(holdout), "--json",
                 "--no-progress", "--model", str(default_model_path())]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["images"] == 30 and out["persons"] == 67
    assert out["person_recall50"] >= 0.8 and out["person_ap50"] >= 0.7
