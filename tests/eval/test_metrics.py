"""Known answers for the metric functions (no data set needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from perception.errors import DataError
from perception.eval.metrics import (
    BoundaryCounts,
    boundary_counts,
    boundary_f1,
    class_boundary,
    confusion_matrix,
    dice_from_confusion,
    iou_from_confusion,
    mean_ignore_nan,
    panoptic_counts,
    pixel_accuracy,
)

# hand-computed case: 4 classes (class 3 absent), 255 = ignore
GT = np.array([[0, 0, 1, 1], [2, 2, 1, 255]], np.uint8)
PRED = np.array([[0, 1, 1, 1], [2, 0, 2, 0]], np.uint8)


def test_confusion_matrix_known_answer():
    cm = confusion_matrix(PRED, GT, 4, ignore_index=255)
    assert cm.dtype == np.int64
    expected = np.array([[1, 1, 0, 0], [0, 2, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)


def test_scores_known_answer():
    cm = confusion_matrix(PRED, GT, 4, ignore_index=255)
    iou = iou_from_confusion(cm)
    np.testing.assert_allclose(iou[:3], [1 / 3, 1 / 2, 1 / 3])
    assert math.isnan(iou[3])
    dice = dice_from_confusion(cm)
    np.testing.assert_allclose(dice[:3], [1 / 2, 2 / 3, 1 / 2])
    assert math.isnan(dice[3])
    assert pixel_accuracy(cm) == pytest.approx(4 / 7)
    assert mean_ignore_nan(iou) == pytest.approx(7 / 18)
    assert math.isnan(mean_ignore_nan(np.array([np.nan, np.nan])))


def test_confusion_matrices_add_up_over_images():
    rng = np.random.default_rng(1)
    gts = [rng.integers(0, 5, (30, 40), dtype=np.uint8) for _ in range(3)]
    preds = [rng.integers(0, 4, (30, 40), dtype=np.uint8) for _ in range(3)]
    total = sum(confusion_matrix(p, g, 4, ignore_index=4) for p, g in zip(preds, gts))
    whole = confusion_matrix(np.concatenate(preds), np.concatenate(gts), 4, ignore_index=4)
    np.testing.assert_array_equal(total, whole)
    assert total.sum() == sum(int((g != 4).sum()) for g in gts)


def test_confusion_matrix_rejects_bad_ids_and_shapes():
    with pytest.raises(DataError, match=r"ground truth has class ids \[7\]"):
        confusion_matrix(PRED, np.where(GT == 255, 7, GT).astype(np.uint8), 4, ignore_index=255)
    with pytest.raises(DataError, match="prediction has class ids"):
        confusion_matrix(PRED + 4, GT, 4, ignore_index=255)
    with pytest.raises(DataError, match="differ in size"):
        confusion_matrix(PRED[:, :3], GT, 4)
    # without an ignore id, 255 is a bad id too: never dropped silently
    with pytest.raises(DataError, match="255"):
        confusion_matrix(PRED, GT, 4)


def test_metrics_do_not_modify_inputs():
    g, p = GT.copy(), PRED.copy()
    cm = confusion_matrix(p, g, 4, ignore_index=255)
    cm_copy = cm.copy()
    iou_from_confusion(cm), dice_from_confusion(cm), pixel_accuracy(cm)
    boundary_counts(p, g, 1, 2, g == 255)
    np.testing.assert_array_equal(g, GT)
    np.testing.assert_array_equal(p, PRED)
    np.testing.assert_array_equal(cm, cm_copy)


# --- boundary F1 ---------------------------------------------------------------------------------
def _square(shift_x: int = 0, shape=(60, 80)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[20:40, 20 + shift_x:40 + shift_x] = 3
    return m


def test_boundary_f1_identical_masks():
    assert boundary_f1(_square(), _square(), 3, tolerance_px=2) == (1.0, 1.0, 1.0)


def test_boundary_f1_one_pixel_shift_within_tolerance():
    assert boundary_f1(_square(1), _square(), 3, tolerance_px=2) == (1.0, 1.0, 1.0)
    assert boundary_f1(_square(1), _square(), 3, tolerance_px=1) == (1.0, 1.0, 1.0)
    # with no tolerance the same shift costs: the vertical edges no longer coincide
    _p, _r, f = boundary_f1(_square(1), _square(), 3, tolerance_px=0)
    assert f < 0.8


def test_boundary_f1_shift_beyond_tolerance_is_lower():
    p, r, f = boundary_f1(_square(5), _square(), 3, tolerance_px=2)
    assert 0.0 < f < 0.8 and 0.0 < p < 1.0 and 0.0 < r < 1.0
    # larger tolerance forgives it
    assert boundary_f1(_square(5), _square(), 3, tolerance_px=5) == (1.0, 1.0, 1.0)


def test_boundary_counts_known_answer_and_image_frame():
    gt = np.zeros((10, 20), np.uint8)
    gt[:, :10] = 1  # class 1 touches the frame on three sides: only column 9 is its boundary
    pred = np.zeros_like(gt)
    pred[:, :13] = 1  # boundary at column 12: 3 px away
    bc = boundary_counts(pred, gt, 1, tolerance_px=2)
    assert bc == BoundaryCounts(pred_matched=0, pred_total=10, gt_matched=0, gt_total=10)
    assert boundary_counts(pred, gt, 1, tolerance_px=3) == BoundaryCounts(10, 10, 10, 10)
    np.testing.assert_array_equal(np.flatnonzero(class_boundary(gt == 1).any(axis=0)), [9])


def test_boundary_f1_edge_cases():
    empty = np.zeros((20, 20), np.uint8)
    assert all(math.isnan(v) for v in boundary_f1(empty, empty, 3))
    gt = empty.copy()
    gt[5:15, 5:15] = 3
    p, r, f = boundary_f1(empty, gt, 3)
    assert (p, r, f) == (1.0, 0.0, 0.0)  # nothing predicted: nothing wrong, everything missed


def test_boundary_ignore_mask_drops_unknown_boundary():
    gt = _square()
    pred = _square()
    pred[20:40, 40:50] = 3  # the prediction runs on to the right ...
    unknown = np.zeros(gt.shape, bool)
    unknown[:, 40:] = True  # ... where the truth is unknown
    assert boundary_f1(pred, gt, 3, 2) != (1.0, 1.0, 1.0)
    assert boundary_f1(pred, gt, 3, 2, ignore_mask=unknown) == (1.0, 1.0, 1.0)


def test_boundary_counts_add_up_not_averaged():
    a = boundary_counts(_square(5), _square(), 3, 2)
    b = boundary_counts(_square(), _square(), 3, 2)
    total = a + b
    p, r, _f = total.scores()
    assert p == pytest.approx((a.pred_matched + b.pred_matched) / (a.pred_total + b.pred_total))
    assert r == pytest.approx((a.gt_matched + b.gt_matched) / (a.gt_total + b.gt_total))


def reference_boundary_counts(pred, gt, cls, tol, unknown):
    """Independent implementation with scipy (exact EDT, binary erosion)."""
    st = np.ones((3, 3), bool)

    def bnd(m):
        return m & ~ndimage.binary_erosion(m, st, border_value=1)

    pb, gb = bnd(pred == cls), bnd(gt == cls)
    near = ndimage.binary_dilation(unknown, st)
    pc, gc = pb & ~near, gb & ~near
    dg = ndimage.distance_transform_edt(~gb) if gb.any() else np.full(gt.shape, np.inf)
    dp = ndimage.distance_transform_edt(~pb) if pb.any() else np.full(gt.shape, np.inf)
    return BoundaryCounts(int((pc & (dg <= tol)).sum()), int(pc.sum()), int((gc & (dp <= tol)).sum()), int(gc.sum()))


@pytest.mark.parametrize("tol", [0, 1, 2, 3.5])
def test_boundary_counts_match_scipy_reference_on_blobs(tol):
    rng = np.random.default_rng(7)
    noise = ndimage.gaussian_filter(rng.normal(size=(90, 120)), 4)
    gt = np.digitize(noise, np.quantile(noise, [0.3, 0.6, 0.95])).astype(np.uint8)  # 0..3, 3 = unknown
    pred = np.digitize(ndimage.shift(noise, (1.3, -2.1), order=1) + rng.normal(0, 0.01, noise.shape),
                       np.quantile(noise, [0.3, 0.6])).astype(np.uint8)
    unknown = gt == 3
    for cls in range(3):
        assert boundary_counts(pred, gt, cls, tol, unknown) == reference_boundary_counts(pred, gt, cls, tol, unknown)


# --- panoptic quality -----------------------------------------------------------------------------
def test_panoptic_counts_known_answer():
    gt_sem = np.zeros((10, 10), np.uint8)
    gt_inst = np.zeros((10, 10), np.uint16)
    gt_sem[0:4, 0:4] = 1
    gt_inst[0:4, 0:4] = 1  # thing A
    gt_sem[6:10, 6:10] = 1
    gt_inst[6:10, 6:10] = 2  # thing B
    pred_sem = np.zeros_like(gt_sem)
    pred_inst = np.zeros_like(gt_inst)
    pred_sem[0:4, 0:4] = 1
    pred_inst[0:4, 0:4] = 5  # A found exactly (other id)
    pred_sem[0:2, 7:10] = 1
    pred_inst[0:2, 7:10] = 7  # a false thing on stuff; B is missed (predicted as stuff)
    pc = panoptic_counts(pred_sem, pred_inst, gt_sem, gt_inst, 2)
    np.testing.assert_array_equal(pc.tp, [1, 1])
    np.testing.assert_array_equal(pc.fp, [0, 1])
    np.testing.assert_array_equal(pc.fn, [0, 1])
    pq, sq, rq = pc.scores()
    np.testing.assert_allclose(sq, [62 / 84, 1.0])
    np.testing.assert_allclose(rq, [1.0, 0.5])
    np.testing.assert_allclose(pq, [62 / 84, 0.5])


def test_panoptic_prediction_inside_unknown_truth_is_not_a_false_positive():
    gt_sem = np.zeros((8, 8), np.uint8)
    gt_sem[:, 4:] = 255
    gt_inst = np.zeros((8, 8), np.uint16)
    pred_sem = np.zeros_like(gt_sem)
    pred_inst = np.zeros_like(gt_inst)
    pred_sem[2:5, 5:8] = 1
    pred_inst[2:5, 5:8] = 3
    pc = panoptic_counts(pred_sem, pred_inst, gt_sem, gt_inst, 2, ignore_index=255)
    np.testing.assert_array_equal(pc.fp, [0, 0])
    np.testing.assert_array_equal(pc.tp, [1, 0])  # stuff 0: IoU ignores the unknown half
    assert pc.iou_sum[0] == pytest.approx(1.0)
