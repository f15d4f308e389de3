"""``evaluate`` against independent implementations (torchmetrics, scipy) on real model predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception.backends.factory import open_backend
from perception.config import default_model_path
from perception.eval.datasets import open_dataset
from perception.eval.metrics import BoundaryCounts
from perception.eval.segmentation import evaluate
from perception.inference import Segmenter
from perception.postprocess.upsample import make_upsampler
from tests.eval.evaldata import write_camvid
from tests.eval.test_metrics import reference_boundary_counts
from tests.tinymodel import make_tiny_model

torch = pytest.importorskip("torch")
tm = pytest.importorskip("torchmetrics.classification")


def _predictions(backend, dataset, input_size, upsample):
    """The same predictions evaluate() scores, made here from the public pieces."""
    seg = Segmenter(backend=backend, input_size=input_size)
    preds, labels = [], []
    for _name, image, label in dataset:
        up = make_upsampler(upsample, card=backend.card, out_size=(label.shape[1], label.shape[0]))
        preds.append(up(seg(image).semantic_logits, image).copy())
        labels.append(label)
    return preds, labels


def _check_against_torchmetrics(report, preds, labels, num_classes, ignore):
    kw = dict(num_classes=num_classes, ignore_index=ignore)
    jac = tm.MulticlassJaccardIndex(average=None, **kw)
    f1 = tm.MulticlassF1Score(average=None, **kw)  # per-class F1 = Dice
    acc = tm.MulticlassAccuracy(average="micro", **kw)
    for p, g in zip(preds, labels):
        pt, gt = torch.from_numpy(p.astype(np.int64))[None], torch.from_numpy(g.astype(np.int64))[None]
        for m in (jac, f1, acc):
            m.update(pt, gt)
    ref_iou = jac.compute().double().numpy()
    ref_dice = f1.compute().double().numpy()
    present = ~np.isnan(report.per_class_iou)
    assert present.sum() >= 2, "the check needs several classes present"
    np.testing.assert_allclose(report.per_class_iou[present], ref_iou[present], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ref_iou[~present], 0.0)  # torchmetrics reports absent classes as 0
    np.testing.assert_allclose(report.per_class_dice[present], ref_dice[present], rtol=1e-6, atol=1e-7)
    assert report.miou == pytest.approx(float(ref_iou[present].mean()), rel=1e-6)
    assert report.mean_dice == pytest.approx(float(ref_dice[present].mean()), rel=1e-6)
    assert report.pixel_accuracy == pytest.approx(float(acc.compute()), rel=1e-6)
    # the confusion matrix counts every labelled pixel once
    assert report.confusion.sum() == sum(int((g != ignore).sum()) for g in labels)


def _check_boundaries(report, preds, labels, ignore, card, tol):
    assert set(report.boundary_f1) == {"Road", "Pavement"}
    for name, score in report.boundary_f1.items():
        cid = card.class_id(name)
        total = BoundaryCounts()
        for p, g in zip(preds, labels):
            total = total + reference_boundary_counts(p, g, cid, tol, g == ignore)
        ref = total.scores()
        assert score.tolerance_px == tol
        for a, b in zip((score.precision, score.recall, score.f1), ref):
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def test_evaluate_matches_torchmetrics_on_real_camvid(camvid_dir, tmp_path):
    model = default_model_path()
    if not model.is_file():
        model = make_tiny_model(tmp_path, input_size=(480, 360))
    ds = open_dataset(camvid_dir, split="val", num_classes=11, ignore_index=11, limit=6)
    with open_backend(model) as backend:
        report = evaluate(dataset=ds, backend_or_model=backend, upsample="bilinear", progress=False)
        preds, labels = _predictions(backend, ds, None, "bilinear")
    assert report.images == 6 and report.fps > 0
    _check_against_torchmetrics(report, preds, labels, 11, 11)
    _check_boundaries(report, preds, labels, 11, backend.card, 2.0)


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_evaluate_matches_torchmetrics_on_written_images(tmp_path, upsample):
    """Runs without ../shared: a tiny real model on images written to disk."""
    model = make_tiny_model(tmp_path / "m", input_size=(64, 48))
    write_camvid(tmp_path / "d", n=4, size=(128, 96))
    ds = open_dataset(tmp_path / "d", num_classes=11, ignore_index=11)
    with open_backend(model, input_size=(64, 48)) as backend:
        report = evaluate(dataset=ds, backend_or_model=backend, upsample=upsample, progress=False,
                          boundary_tolerance_px=1.5)
        preds, labels = _predictions(backend, ds, None, upsample)
    assert report.images == 4 and report.input_size == (64, 48) and report.upsample == upsample
    assert preds[0].shape == (96, 128)
    _check_against_torchmetrics(report, preds, labels, 11, 11)
    _check_boundaries(report, preds, labels, 11, backend.card, 1.5)


def test_evaluate_refuses_classes_that_do_not_fit(tmp_path):
    import cv2

    from perception.errors import DataError

    root = tmp_path / "cs"
    (root / "leftImg8bit/val/x").mkdir(parents=True)
    (root / "gtFine/val/x").mkdir(parents=True)
    cv2.imwrite(str(root / "leftImg8bit/val/x/a_leftImg8bit.png"), np.zeros((48, 64, 3), np.uint8))
    cv2.imwrite(str(root / "gtFine/val/x/a_gtFine_labelIds.png"), np.full((48, 64), 7, np.uint8))
    model = make_tiny_model(tmp_path / "m", num_classes=19)  # classes class0..class18, not Cityscapes'
    ds = open_dataset(root, layout="cityscapes", num_classes=19)
    with pytest.raises(DataError, match="cityscapes layout's classes"):
        evaluate(dataset=ds, backend_or_model=model, progress=False)
    ds11 = open_dataset(write_camvid(tmp_path / "d", n=1), num_classes=11, ignore_index=11)
    with pytest.raises(DataError, match="opened for 11 classes but model"):
        evaluate(dataset=ds11, backend_or_model=model, progress=False)
