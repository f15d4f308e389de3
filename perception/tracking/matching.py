"""Pure matching helpers: box IoU, mask IoU from instance maps, thresholded linear assignment.

None of these functions modifies its arguments.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from perception.errors import DataError

__all__ = [
    "box_iou",
    "buffered_box_iou",
    "linear_assignment",
    "linear_assignment_pairs",
    "mask_iou",
    "normalized_center_distance",
    "normalized_center_distance_sq",
    "shifted_mask_iou",
]


_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}  # unsigned type of each item size


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair of boxes.

    Args:
        a: ``float[N, 4]`` ``(x0, y0, x1, y1)``, x1/y1 exclusive; b: ``float[M, 4]``.

    Returns:
        ``float64[N, M]`` in ``[0, 1]`` (0 for empty boxes).
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    # both axes at once: [2, N, M] arrays, x in the first row and y in the second
    at, bt = a.T.copy(), b.T.copy()  # contiguous coordinate rows
    a_lo, a_hi = at[:2, :, None], at[2:, :, None]
    b_lo, b_hi = bt[:2, None, :], bt[2:, None, :]
    overlap = np.minimum(a_hi, b_hi)
    overlap -= np.maximum(a_lo, b_lo)
    np.maximum(overlap, 0.0, out=overlap)
    inter = overlap[0] * overlap[1]
    size_a = np.maximum(a_hi - a_lo, 0.0)
    size_b = np.maximum(b_hi - b_lo, 0.0)
    union = (size_a[0] * size_a[1]) + (size_b[0] * size_b[1])
    union -= inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


def buffered_box_iou(a: np.ndarray, b: np.ndarray, buffer: np.ndarray | float) -> np.ndarray:
    """Buffered IoU (C-BIoU, Yang et al. 2023): IoU after growing both boxes of a pair by a margin.

    Box ``a[i]`` and every ``b[j]`` are each grown by ``buffer[i]`` times their own width/height on
    every side before the IoU is taken, so that boxes that moved or changed shape more than expected
    (a track coasting through an occlusion, a partly hidden object) still overlap.

    Args:
        a: ``float[N, 4]`` ``(x0, y0, x1, y1)``; b: ``float[M, 4]``.
        buffer: scalar or ``float[N]``, margin per side as a fraction of box size (0 = plain IoU).

    Returns:
        ``float64[N, M]``.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    buf = np.broadcast_to(np.asarray(buffer, np.float64), (a.shape[0],))
    wh_a = a[:, 2:] - a[:, :2]
    ga = np.concatenate([a[:, :2] - buf[:, None] * wh_a, a[:, 2:] + buf[:, None] * wh_a], axis=1)  # [N, 4]
    wh_b = (b[:, 2:] - b[:, :2])[None, :, :] * buf[:, None, None]  # [N, M, 2]
    gb = np.concatenate([b[None, :, :2] - wh_b, b[None, :, 2:] + wh_b], axis=2)  # [N, M, 4]
    lt = np.maximum(ga[:, None, :2], gb[..., :2])
    rb = np.minimum(ga[:, None, 2:], gb[..., 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.prod(np.clip(ga[:, 2:] - ga[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(gb[..., 2:] - gb[..., :2], 0, None), axis=2)
    union = area_a[:, None] + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def normalized_center_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance between box centres in units of the pair's mean size, per axis, then Euclidean.

    ``d[i, j] = hypot(dx / mean_w, dy / mean_h)`` with ``dx``, ``dy`` the centre offsets and
    ``mean_w = (w_a[i] + w_b[j]) / 2`` (likewise ``mean_h``): 1 means "one box size apart". Unlike IoU
    it stays informative when the boxes do not overlap or one of them changed shape (partial occlusion).

    Args:
        a: ``float[N, 4]`` ``(x0, y0, x1, y1)``; b: ``float[M, 4]``.

    Returns:
        ``float64[N, M]`` (``inf`` for degenerate pairs of zero size).
    """
    return np.sqrt(normalized_center_distance_sq(a, b))


def normalized_center_distance_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The square of :func:`normalized_center_distance` (no square root: cheaper for costs).

    Args:
        a: ``float[N, 4]`` ``(x0, y0, x1, y1)``; b: ``float[M, 4]``.

    Returns:
        ``float64[N, M]`` (``inf`` for degenerate pairs of zero size).
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    # twice the centres and twice the mean sizes (the factors of 2 cancel), both axes at once: [2, N, M]
    at, bt = a.T.copy(), b.T.copy()  # contiguous coordinate rows
    a_lo, a_hi = at[:2, :, None], at[2:, :, None]
    b_lo, b_hi = bt[:2, None, :], bt[2:, None, :]
    diff = (a_lo + a_hi) - (b_lo + b_hi)
    two_mean = (a_hi - a_lo) + (b_hi - b_lo)
    if a.shape[0] and b.shape[0] and two_mean.min() <= 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            diff /= two_mean
        diff *= diff
        d2 = diff[0] + diff[1]
        d2[~np.isfinite(d2)] = np.inf
        return d2
    diff /= two_mean
    diff *= diff
    return diff[0] + diff[1]


def mask_iou(map_a: np.ndarray, ids_a: np.ndarray, map_b: np.ndarray, ids_b: np.ndarray) -> np.ndarray:
    """Mask IoU between the ids of two instance maps of the same size.

    One ``bincount`` over (id in ``map_a``, id in ``map_b``) pairs of the pixels that are non-zero in
    either map gives every intersection at once.

    Args:
        map_a: ``uint16[H, W]`` instance map (0 = none); ids_a: ``int[N]`` ids of ``map_a`` to compare.
        map_b: ``uint16[H, W]``; ids_b: ``int[M]``.

    Returns:
        ``float64[N, M]`` IoU (0 where an id has no pixels).
    """
    if map_a.shape != map_b.shape:
        raise DataError(f"mask_iou: instance maps differ in size: {map_a.shape} vs {map_b.shape}")
    ids_a = np.asarray(ids_a, np.int64).ravel()
    ids_b = np.asarray(ids_b, np.int64).ravel()
    if ids_a.size == 0 or ids_b.size == 0:
        return np.zeros((ids_a.size, ids_b.size))
    fa, fb = map_a.ravel(), map_b.ravel()
    nz = np.flatnonzero((fa != 0) | (fb != 0))
    va = fa[nz].astype(np.int64)
    vb = fb[nz].astype(np.int64)
    na = int(max(va.max(initial=0), ids_a.max())) + 1
    nb = int(max(vb.max(initial=0), ids_b.max())) + 1
    joint = np.bincount(va * nb + vb, minlength=na * nb).reshape(na, nb)
    area_a = joint.sum(axis=1)
    area_b = joint.sum(axis=0)
    area_a[0] = 0
    area_b[0] = 0
    inter = joint[np.ix_(ids_a, ids_b)].astype(np.float64)
    union = area_a[ids_a][:, None] + area_b[ids_b][None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def shifted_mask_iou(
    prev_pixels: np.ndarray,
    prev_rows: np.ndarray,
    shifts: np.ndarray,
    cur_map: np.ndarray,
    cur_ids: np.ndarray,
    cur_areas: np.ndarray,
    *,
    pixel_weight: float = 1.0,
) -> np.ndarray:
    """Mask IoU of previous masks, each moved by its own predicted displacement, against a new map.

    Motion compensation for tracking: track ``r``'s last mask is translated by ``shifts[r]`` (the
    motion its Kalman filter predicts since then) before it is compared with this frame's instances.
    Vectorised over all pixels of all previous masks: one gather and one ``bincount``.

    Args:
        prev_pixels: ``int32[P, 2]`` or ``int64[P, 2]`` ``(y, x)`` of the previous masks' pixels.
        prev_rows: ``int64[P]`` which mask (row ``0..N-1``) each pixel belongs to.
        shifts: ``float[N, 2]`` ``(dx, dy)`` displacement of each mask, pixels.
        cur_map: ``uint16[H, W]`` this frame's instance map.
        cur_ids: ``int[M]`` ids of ``cur_map`` (columns of the result).
        cur_areas: ``int[M]`` pixel count of each of those ids.
        pixel_weight: how many pixels each of ``prev_pixels`` stands for (``s * s`` when the previous
            masks were sampled on every ``s``-th row and column): areas and intersections are
            estimated from the sample.

    Returns:
        ``float64[N, M]`` IoU; a mask's pixels that move out of the frame no longer count.
    """
    n = int(np.asarray(shifts).shape[0])
    cur_ids = np.asarray(cur_ids, np.int64).ravel()
    m = cur_ids.size
    if n == 0 or m == 0 or prev_pixels.shape[0] == 0:
        return np.zeros((n, m))
    pix = np.asarray(prev_pixels)
    if pix.dtype.kind not in "iu":
        pix = pix.astype(np.int64)
    h, w = cur_map.shape
    rows = np.asarray(prev_rows, np.intp)
    # (dy, dx) of every mask, then of every pixel: one gather of whole rows
    sh = np.rint(np.asarray(shifts, np.float64)[:, ::-1]).astype(pix.dtype)
    moved = pix + sh.take(rows, axis=0)
    ys, xs = moved[:, 0], moved[:, 1]
    # one unsigned comparison per axis also rejects negative coordinates
    udt = _UNSIGNED[moved.dtype.itemsize]
    inside = ((ys.view(udt) < h) & (xs.view(udt) < w)).nonzero()[0]
    rows = rows.take(inside)
    # 1-D take(): several times faster than fancy indexing for a few thousand pixels (the flat
    # index of a pixel outside the frame may be anything: it is dropped before the gather)
    if cur_map.flags.c_contiguous:
        hit = cur_map.ravel().take((ys * w + xs).take(inside))
    else:
        hit = cur_map[ys.take(inside), xs.take(inside)]
    # column of every id (m = "no instance"; ids above the largest of cur_ids clip to the last entry,
    # which is m): one bincount gives the intersections and, summed over the columns, each moved
    # mask's area inside the frame
    col_of_id = np.full(int(cur_ids.max()) + 2, m, np.intp)
    col_of_id[cur_ids] = np.arange(m)
    col_of_id[0] = m
    key = rows * (m + 1)
    key += col_of_id.take(hit, mode="clip")
    joint = np.bincount(key, minlength=n * (m + 1)).reshape(n, m + 1)
    weight = float(pixel_weight)
    area_t = joint.sum(axis=1) * weight
    cur_a = np.asarray(cur_areas, np.float64).reshape(1, m)
    inter = joint[:, :m] * weight
    np.minimum(inter, cur_a, out=inter)  # a sample can overshoot
    union = area_t[:, None] + cur_a
    union -= inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


_UNMATCHED_MARGIN = 1e-3
"""With ``saturate``: how much more leaving a row unmatched costs than matching it to a saturated pair."""


def linear_assignment(cost: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment that never pairs rows and columns costing more than ``threshold``.

    Pairs above the threshold are made infeasible before solving (on a copy), so the solver can pick
    a different feasible partner instead of a forbidden pair that would later be discarded.

    Args:
        cost: ``float[N, M]`` (``nan``/``inf`` = forbidden). Not modified.
        threshold: largest acceptable cost (inclusive).

    Returns:
        ``(matches int64[K, 2] (row, col), unmatched_rows int64[N-K], unmatched_cols int64[M-K])``,
        matches sorted by row.
    """
    cost = np.asarray(cost, np.float64)
    rows, cols = linear_assignment_pairs(cost, threshold)
    n, m = cost.shape
    matches = np.empty((rows.size, 2), np.int64)
    matches[:, 0] = rows
    matches[:, 1] = cols
    um_r = np.ones(n, bool)
    um_r[rows] = False
    um_c = np.ones(m, bool)
    um_c[cols] = False
    return matches, um_r.nonzero()[0].astype(np.int64, copy=False), um_c.nonzero()[0].astype(np.int64, copy=False)


def linear_assignment_pairs(
    cost: np.ndarray, threshold: float, *, saturate: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The matched pairs of :func:`linear_assignment` alone (what a tracker needs), as two arrays.

    By default the assignment first matches as many pairs as it can, then minimises their total cost.
    That lets a poor pair displace a good one: with tracks A, B and detections x, y where A-x costs
    0.85, B-y 1.2, B-x 0.4 and A-y is forbidden, it takes A-x and B-y (two matches) rather than B-x
    alone, although B-x is much the best pair and A-x likely wrong. ``saturate`` bounds what a pair
    is worth: costs above it count as ``saturate`` (such a pair is a fallback, taken only when it
    displaces no cheaper pair), and leaving a row unmatched costs just a little more than a
    saturated pair. The solver then takes B-x alone when ``0.85 + min(1.2, saturate)`` exceeds
    ``0.4 + saturate``. This is the cost-limit rule of ByteTrack's ``lapjv(..., cost_limit)``,
    except that a pair above the limit is not forbidden: a row and column that are each other's
    only feasible partner are always matched.

    Args:
        cost: ``float[N, M]`` (``nan``/``inf`` = forbidden). Not modified.
        threshold: largest acceptable cost (inclusive).
        saturate: see above; None = most matches first.

    Returns:
        ``(rows int64[K], cols int64[K])``: row ``rows[k]`` is matched to column ``cols[k]``; sorted
        by row.
    """
    cost = np.asarray(cost, np.float64)
    if cost.ndim != 2:
        raise DataError(f"linear_assignment: cost must be 2-D, got shape {cost.shape}")
    if cost.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    feasible = np.isfinite(cost)
    if threshold != np.inf:  # (no pair is excluded by an infinite threshold)
        feasible &= cost <= threshold
    # a row and a column that are each other's only feasible partner are matched in every optimal
    # assignment: pair them directly and solve only what remains (usually little: tracks of
    # separated objects gate to one detection each), which is the solver's cost
    row_deg = feasible.sum(axis=1)
    col_deg = feasible.sum(axis=0)
    row_open = row_deg > 0
    if not row_open.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    r1 = (row_deg == 1).nonzero()[0]
    c1 = feasible.take(r1, 0).argmax(axis=1)
    lone = col_deg.take(c1) == 1
    lone_r, lone_c = r1[lone], c1[lone]
    row_open[lone_r] = False
    col_open = col_deg > 0
    col_open[lone_c] = False
    rest_r, rest_c = row_open.nonzero()[0], col_open.nonzero()[0]
    if rest_r.size == 0 or rest_c.size == 0:
        return lone_r.astype(np.int64, copy=False), lone_c.astype(np.int64, copy=False)  # sorted by row
    sub = cost.take(rest_r, 0).take(rest_c, 1)
    sub_ok = feasible.take(rest_r, 0).take(rest_c, 1)
    # (np.where makes a new array: the caller's is untouched)
    if saturate is None:
        # a forbidden pair must cost more than any set of feasible pairs could save
        big = (np.abs(sub[sub_ok]).max() + 1.0) * (min(rest_r.size, rest_c.size) + 1)
        rows, cols = linear_sum_assignment(np.where(sub_ok, sub, big))
    else:
        # a forbidden pair stands for "unmatched": a little dearer than any saturated pair
        unmatched = saturate + _UNMATCHED_MARGIN
        rows, cols = linear_sum_assignment(np.where(sub_ok, np.minimum(sub, saturate), unmatched))
    keep = sub_ok[rows, cols]
    mr = np.concatenate([lone_r, rest_r[rows[keep]]])
    mc = np.concatenate([lone_c, rest_c[cols[keep]]])
    # lone pairs come sorted by row, the solver's pairs after them
    order = np.argsort(mr, kind="stable")
    return mr.take(order).astype(np.int64, copy=False), mc.take(order).astype(np.int64, copy=False)
