"""Segmentation metrics as pure, vectorised numpy functions.

Everything is computed from counts that add up over a data set, so a data set's score is the score
of its summed counts (the usual "dataset-level" convention of the Cityscapes and CamVid benchmarks),
never a mean of per-image scores:

* :func:`confusion_matrix` gives ``int64[C, C]`` counts (rows = ground truth, columns = prediction);
  sum them over the images, then read IoU, Dice and pixel accuracy from the sum.
* :func:`boundary_counts` gives the four counts of the boundary F1 score (BF score, Csurka et al.,
  "What is a good evaluation measure for semantic segmentation?", BMVC 2013); add
  :class:`BoundaryCounts` over the images, then read precision / recall / F1 from the sum.
  (Csurka et al. average per-image F1s; summing counts instead weights every boundary pixel alike
  and is defined for images in which the class is absent.)
* :func:`panoptic_quality` gives PQ / SQ / RQ counts for panoptic predictions when the ground truth has
  instance ids (CamVid has none; Cityscapes has).

No function modifies its inputs. Bad inputs (wrong shapes, class ids out of range) raise
:class:`~perception.errors.DataError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from perception.errors import DataError

DEFAULT_BOUNDARY_TOLERANCE_PX = 2
"""Distance (pixels, Euclidean) within which a predicted boundary pixel matches a true one. Larger
values forgive more misplacement (and hide it); 2 px at 480×360 is stricter than Csurka et al.'s
0.75 % of the image diagonal (4.5 px there) and about what a planner can live with at the kerb."""


# --------------------------------------------------------------------------------------------------
# confusion-matrix metrics
# --------------------------------------------------------------------------------------------------
def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.ndim != 2 or gt.ndim != 2:
        raise DataError(f"label maps must be 2-D [H, W]; got prediction {pred.shape} and ground truth {gt.shape}")
    if pred.shape != gt.shape:
        raise DataError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    for what, a in (("prediction", pred), ("ground truth", gt)):
        if not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"{what} must be an integer label map, got {a.dtype}")


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """Count (true class, predicted class) pairs over the pixels of one image.

    Args:
        pred: ``uint8[H, W]`` predicted class ids, each in ``0..num_classes-1``.
        gt: ``uint8[H, W]`` true class ids, each in ``0..num_classes-1`` or equal to ``ignore_index``.
        num_classes: ``C``.
        ignore_index: ground-truth id whose pixels are left out (e.g. 11 = Unlabelled in CamVid,
            255 in Cityscapes); ``None`` leaves nothing out.

    Returns:
        ``int64[C, C]``: entry ``[t, p]`` is the number of pixels of true class ``t`` predicted as
        ``p`` (rows = ground truth, columns = prediction). Counts add up over a data set.

    Raises:
        DataError: shapes differ, or an id is out of range (a ground-truth id that is neither a class
            nor ``ignore_index`` would otherwise be silently dropped or miscounted).
    """
    _check_pair(pred, gt)
    c = int(num_classes)
    if c <= 0:
        raise DataError(f"num_classes must be positive, got {num_classes}")
    g = gt.ravel()
    p = pred.ravel()
    if ignore_index is not None:
        keep = g != ignore_index
        if not keep.all():
            g = g[keep]
            p = p[keep]
    if g.size:
        g_max = int(g.max())
        if g_max >= c or int(g.min()) < 0:
            bad = np.unique(g[(g >= c) | (g < 0)])
            raise DataError(
                f"ground truth has class ids {bad.tolist()} outside 0..{c - 1}"
                + (f" and the ignore id {ignore_index}" if ignore_index is not None else "")
            )
        if int(p.max()) >= c or int(p.min()) < 0:
            bad = np.unique(p[(p >= c) | (p < 0)])
            raise DataError(f"prediction has class ids {bad.tolist()} outside 0..{c - 1}")
    idx = g.astype(np.int64) * c + p.astype(np.int64)
    return np.bincount(idx, minlength=c * c).reshape(c, c).astype(np.int64, copy=False)


def _check_cm(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise DataError(f"a confusion matrix must be square [C, C], got {cm.shape}")
    return cm.astype(np.float64)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class intersection over union, ``TP / (TP + FP + FN)``.

    Args:
        cm: ``int64[C, C]`` from :func:`confusion_matrix` (rows = ground truth).

    Returns:
        ``float64[C]`` in ``[0, 1]``; NaN for a class absent from both ground truth and prediction.
    """
    m = _check_cm(cm)
    tp = np.diag(m)
    denom = m.sum(axis=0) + m.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)


def dice_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class Dice coefficient (= F1), ``2 TP / (2 TP + FP + FN)``.

    Returns:
        ``float64[C]`` in ``[0, 1]``; NaN for a class absent from both ground truth and prediction.
    """
    m = _check_cm(cm)
    tp = np.diag(m)
    denom = m.sum(axis=0) + m.sum(axis=1)
    return np.where(denom > 0, 2.0 * tp / np.where(denom > 0, denom, 1.0), np.nan)


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of counted (non-ignored) pixels whose class is right; NaN when nothing was counted."""
    m = _check_cm(cm)
    total = m.sum()
    return float(np.trace(m) / total) if total > 0 else math.nan


def mean_ignore_nan(values: np.ndarray) -> float:
    """Mean over the finite entries (NaN = class absent); NaN, without a warning, when there are none."""
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    return float(v[ok].mean()) if ok.any() else math.nan


# --------------------------------------------------------------------------------------------------
# boundary F1 (BF score)
# --------------------------------------------------------------------------------------------------
_CROSS = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))


@dataclass(frozen=True, slots=True)
class BoundaryCounts:
    """Counts behind one class's boundary F1; they add up over a data set with ``+``.

    A pixel lies on the boundary of a class when it belongs to the class and one of its 8 neighbours
    does not (the image frame is not a boundary).
    """

    pred_matched: int = 0
    """Predicted boundary pixels within the tolerance of a true boundary pixel."""
    pred_total: int = 0
    gt_matched: int = 0
    """True boundary pixels within the tolerance of a predicted boundary pixel."""
    gt_total: int = 0

    def __add__(self, other: BoundaryCounts) -> BoundaryCounts:
        return BoundaryCounts(
            self.pred_matched + other.pred_matched,
            self.pred_total + other.pred_total,
            self.gt_matched + other.gt_matched,
            self.gt_total + other.gt_total,
        )

    def scores(self) -> tuple[float, float, float]:
        """``(precision, recall, f1)`` in ``[0, 1]``.

        Precision with no predicted boundary is 1 (nothing claimed wrongly), recall with no true boundary
        is 1 (nothing missed); F1 is then 0 when the other side has boundary pixels. All three are NaN
        when neither side has any boundary pixel (the class's boundary is absent).
        """
        if self.pred_total == 0 and self.gt_total == 0:
            return math.nan, math.nan, math.nan
        precision = self.pred_matched / self.pred_total if self.pred_total else 1.0
        recall = self.gt_matched / self.gt_total if self.gt_total else 1.0
        f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return precision, recall, f1


def class_boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of a binary mask.

    Args:
        mask: ``bool[H, W]`` (or any integer array, nonzero = inside).

    Returns:
        ``bool[H, W]``: inside pixels with at least one 8-neighbour outside. Pixels outside the image
        count as inside, so the image frame is not a boundary.
    """
    m = (np.asarray(mask) != 0).astype(np.uint8)
    eroded = cv2.erode(m, _CROSS, borderType=cv2.BORDER_REPLICATE)
    return (m != 0) & (eroded == 0)


def _distance_to(points: np.ndarray) -> np.ndarray:
    """``float32[H, W]`` Euclidean distance (pixels) of every pixel to the nearest True of ``points``."""
    src = np.where(points, 0, 255).astype(np.uint8)
    return cv2.distanceTransform(src, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def boundary_counts(
    pred: np.ndarray,
    gt: np.ndarray,
    class_id: int,
    tolerance_px: float = DEFAULT_BOUNDARY_TOLERANCE_PX,
    ignore_mask: np.ndarray | None = None,
) -> BoundaryCounts:
    """Count matched and total boundary pixels of one class in one image.

    Args:
        pred: ``uint8[H, W]`` predicted class ids.
        gt: ``uint8[H, W]`` true class ids.
        class_id: the class whose boundary is scored.
        tolerance_px: a boundary pixel is matched when the other side has a boundary pixel within this
            Euclidean distance (pixels, ``>= 0``; 0 = exact position).
        ignore_mask: ``bool[H, W]``, True where the truth is unknown (e.g. ``gt == ignore_index``).
            Boundary pixels in it or touching it (8-neighbourhood) are not counted on either side,
            since a truth that stops at an unlabelled region says nothing about the class's edge there.
            They still serve as match targets.

    Returns:
        :class:`BoundaryCounts` for this image; add them up over a data set.
    """
    _check_pair(pred, gt)
    if tolerance_px < 0:
        raise DataError(f"tolerance_px must be >= 0, got {tolerance_px}")
    pb = class_boundary(pred == class_id)
    gb = class_boundary(gt == class_id)
    if ignore_mask is not None:
        im = np.asarray(ignore_mask)
        if im.shape != gt.shape:
            raise DataError(f"ignore_mask {im.shape} and ground truth {gt.shape} differ in size")
        near_unknown = cv2.dilate((im != 0).astype(np.uint8), _CROSS) != 0
        pb_counted = pb & ~near_unknown
        gb_counted = gb & ~near_unknown
    else:
        pb_counted, gb_counted = pb, gb
    pred_total = int(np.count_nonzero(pb_counted))
    gt_total = int(np.count_nonzero(gb_counted))
    pred_matched = gt_matched = 0
    if pred_total and gb.any():
        pred_matched = int(np.count_nonzero(pb_counted & (_distance_to(gb) <= tolerance_px)))
    if gt_total and pb.any():
        gt_matched = int(np.count_nonzero(gb_counted & (_distance_to(pb) <= tolerance_px)))
    return BoundaryCounts(pred_matched, pred_total, gt_matched, gt_total)


def boundary_f1(
    pred: np.ndarray,
    gt: np.ndarray,
    class_id: int,
    tolerance_px: float = DEFAULT_BOUNDARY_TOLERANCE_PX,
    ignore_mask: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Boundary F1 (BF score) of one class in one image: ``(precision, recall, f1)``.

    See :func:`boundary_counts` for the arguments and :meth:`BoundaryCounts.scores` for the edge cases.
    For a data set, add the :func:`boundary_counts` of its images instead of averaging these.
    """
    return boundary_counts(pred, gt, class_id, tolerance_px, ignore_mask).scores()


# --------------------------------------------------------------------------------------------------
# panoptic quality
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PanopticCounts:
    """Per-class PQ counts (Kirillov et al., "Panoptic Segmentation", CVPR 2019); add with ``+``.

    Arrays are ``float64[C]`` / ``int64[C]`` indexed by class id.
    """

    iou_sum: np.ndarray
    """Sum of the IoUs of the matched (IoU > 0.5) segment pairs."""
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    def __add__(self, other: PanopticCounts) -> PanopticCounts:
        return PanopticCounts(
            self.iou_sum + other.iou_sum, self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        )

    def scores(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(pq, sq, rq)``, each ``float64[C]``; NaN for a class with no segment on either side."""
        tp = self.tp.astype(np.float64)
        denom = tp + 0.5 * self.fp + 0.5 * self.fn
        with np.errstate(invalid="ignore", divide="ignore"):
            sq = np.where(tp > 0, self.iou_sum / np.where(tp > 0, tp, 1.0), 0.0)
            rq = np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)
        sq = np.where(denom > 0, sq, np.nan)
        return sq * rq, sq, rq


def panoptic_counts(
    pred_sem: np.ndarray,
    pred_inst: np.ndarray,
    gt_sem: np.ndarray,
    gt_inst: np.ndarray,
    num_classes: int,
    ignore_index: int | None = None,
) -> PanopticCounts:
    """PQ counts of one image.

    A segment is the set of pixels sharing (class, instance id); stuff classes carry instance id 0,
    so each stuff class is one segment. A predicted and a true segment of the same class match when
    their IoU exceeds 0.5 (then the match is unique). As in the reference implementation, pixels whose
    truth is ``ignore_index`` are left out, and an unmatched predicted segment that lies more than half
    in such pixels is not a false positive.

    Args:
        pred_sem, gt_sem: ``uint8[H, W]`` class ids.
        pred_inst, gt_inst: ``uint16[H, W]`` instance ids (0 = none / stuff).
        num_classes: ``C``.
        ignore_index: unknown-truth id in ``gt_sem``.
    """
    _check_pair(pred_sem, gt_sem)
    _check_pair(pred_inst, gt_inst)
    _check_pair(pred_sem, pred_inst)
    c = int(num_classes)
    gt_void = gt_sem == ignore_index if ignore_index is not None else np.zeros(gt_sem.shape, bool)
    gk = np.where(gt_void, -1, gt_sem.astype(np.int64) * 65536 + gt_inst.astype(np.int64)).ravel()
    pk = pred_sem.astype(np.int64).ravel() * 65536 + pred_inst.astype(np.int64).ravel()
    if (gk >= 0).any() and int(gk[gk >= 0].max() // 65536) >= c:
        raise DataError(f"ground truth has class ids outside 0..{c - 1}")
    if pk.size and int(pk.max() // 65536) >= c:
        raise DataError(f"prediction has class ids outside 0..{c - 1}")

    g_ids, g_inv, g_area = np.unique(gk, return_inverse=True, return_counts=True)
    p_ids, p_inv, p_area = np.unique(pk, return_inverse=True, return_counts=True)
    # joint areas of (gt segment, pred segment) pairs
    pair = g_inv.astype(np.int64) * len(p_ids) + p_inv
    pair_ids, inter = np.unique(pair, return_counts=True)
    gi = pair_ids // len(p_ids)
    pi = pair_ids % len(p_ids)
    g_key = g_ids[gi]
    p_key = p_ids[pi]
    # predicted area inside void truth, per predicted segment
    void_row = np.flatnonzero(g_ids == -1)
    p_void = np.zeros(len(p_ids), np.int64)
    if void_row.size:
        sel = gi == void_row[0]
        p_void[pi[sel]] = inter[sel]

    valid = (g_key >= 0) & (g_key // 65536 == p_key // 65536)
    union = g_area[gi] + p_area[pi] - inter - p_void[pi]
    iou = inter / np.maximum(union, 1)
    match = valid & (iou > 0.5)

    iou_sum = np.zeros(c, np.float64)
    tp = np.zeros(c, np.int64)
    np.add.at(iou_sum, g_key[match] // 65536, iou[match])
    np.add.at(tp, g_key[match] // 65536, 1)

    g_matched = np.zeros(len(g_ids), bool)
    g_matched[gi[match]] = True
    p_matched = np.zeros(len(p_ids), bool)
    p_matched[pi[match]] = True
    g_real = g_ids >= 0
    fn = np.bincount((g_ids[g_real & ~g_matched] // 65536).astype(np.int64), minlength=c)[:c]
    p_unmatched = ~p_matched & (p_void <= 0.5 * p_area)
    fp = np.bincount((p_ids[p_unmatched] // 65536).astype(np.int64), minlength=c)[:c]
    return PanopticCounts(iou_sum, tp, fp.astype(np.int64), fn.astype(np.int64))
