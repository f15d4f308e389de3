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
    "mask_iou",
    "normalized_center_distance",
    "normalized_center_distance_sq",
    "shifted_mask_iou",
]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair of boxes.

    Args:
        a: ``float[N, 4]`` ``(x0, y0, x1, y1)``, x1/y1 exclusive; b: ``float[M, 4]``.

    Returns:
        ``float64[N, M]`` in ``[0, 1]`` (0 for empty boxes).
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    at, bt = a.T.copy(), b.T.copy()  # contiguous coordinate rows: [N, M] operations on 2-D arrays only
    iw = np.minimum(at[2][:, None], bt[2][None, :])
    iw -= np.maximum(at[0][:, None], bt[0][None, :])
    ih = np.minimum(at[3][:, None], bt[3][None, :])
    ih -= np.maximum(at[1][:, None], bt[1][None, :])
    np.maximum(iw, 0.0, out=iw)
    np.maximum(ih, 0.0, out=ih)
    inter = iw
    inter *= ih
    area_a = np.maximum(at[2] - at[0], 0.0) * np.maximum(at[3] - at[1], 0.0)
    area_b = np.maximum(bt[2] - bt[0], 0.0) * np.maximum(bt[3] - bt[1], 0.0)
    union = area_a[:, None] + area_b[None, :]
    union -= inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


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
    # twice the centres and twice the mean sizes: the factors of 2 cancel; 2-D [N, M] arrays per axis
    d2 = np.zeros((a.shape[0], b.shape[0]))
    degenerate = False
    for lo, hi in ((0, 2), (1, 3)):
        wa, wb = a[:, hi] - a[:, lo], b[:, hi] - b[:, lo]
        diff = (a[:, lo] + a[:, hi])[:, None] - (b[:, lo] + b[:, hi])[None, :]
        two_mean = wa[:, None] + wb[None, :]
        if a.shape[0] and b.shape[0] and wa.min() + wb.min() <= 0:
            degenerate = True
            with np.errstate(divide="ignore", invalid="ignore"):
                q = diff / two_mean
        else:
            q = diff / two_mean
        d2 += q * q
    if degenerate:
        d2[~np.isfinite(d2)] = np.inf
    return d2


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
    sh = np.rint(np.asarray(shifts, np.float64)).astype(pix.dtype)
    # 1-D take(): several times faster than fancy indexing for a few thousand pixels
    ys = pix[:, 0] + np.ascontiguousarray(sh[:, 1]).take(rows)
    xs = pix[:, 1] + np.ascontiguousarray(sh[:, 0]).take(rows)
    # one unsigned comparison per axis also rejects negative coordinates
    udt = np.dtype(f"u{ys.dtype.itemsize}")
    inside = np.flatnonzero((ys.view(udt) < h) & (xs.view(udt) < w))
    ys, xs, rows = ys.take(inside), xs.take(inside), rows.take(inside)
    if cur_map.flags.c_contiguous:
        hit = cur_map.ravel().take(ys.astype(np.intp) * w + xs)
    else:
        hit = cur_map[ys, xs]
    # column of every id (m = "no instance"): one bincount gives the intersections and, summed over
    # the columns, each moved mask's area inside the frame
    col_of_id = np.full(int(max(hit.max(initial=0), cur_ids.max())) + 1, m, np.intp)
    col_of_id[cur_ids] = np.arange(m)
    col_of_id[0] = m
    joint = np.bincount(rows * (m + 1) + col_of_id.take(hit), minlength=n * (m + 1)).reshape(n, m + 1)
    weight = float(pixel_weight)
    area_t = joint.sum(axis=1) * weight
    cur_a = np.asarray(cur_areas, np.float64).reshape(1, m)
    inter = np.minimum(joint[:, :m] * weight, cur_a)  # a sample can overshoot
    union = area_t[:, None] + cur_a - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


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
    if cost.ndim != 2:
        raise DataError(f"linear_assignment: cost must be 2-D, got shape {cost.shape}")
    n, m = cost.shape
    if n == 0 or m == 0:
        return np.zeros((0, 2), np.int64), np.arange(n, dtype=np.int64), np.arange(m, dtype=np.int64)
    feasible = np.isfinite(cost) & (cost <= threshold)
    if not feasible.any():
        return np.zeros((0, 2), np.int64), np.arange(n, dtype=np.int64), np.arange(m, dtype=np.int64)
    # a row and a column that are each other's only feasible partner are matched in every optimal
    # assignment: pair them directly and solve only what remains (usually little: tracks of
    # separated objects gate to one detection each), which is the solver's cost
    row_deg = np.count_nonzero(feasible, axis=1)
    col_deg = np.count_nonzero(feasible, axis=0)
    r1 = np.flatnonzero(row_deg == 1)
    c1 = feasible.take(r1, 0).argmax(axis=1)
    lone = col_deg.take(c1) == 1
    lone_r, lone_c = r1[lone], c1[lone]
    row_open = row_deg > 0
    row_open[lone_r] = False
    col_open = col_deg > 0
    col_open[lone_c] = False
    rest_r, rest_c = np.flatnonzero(row_open), np.flatnonzero(col_open)
    mr, mc = lone_r, lone_c
    if rest_r.size and rest_c.size:
        sub = cost.take(rest_r, 0).take(rest_c, 1)
        sub_ok = feasible.take(rest_r, 0).take(rest_c, 1)
        # a forbidden pair must cost more than any set of feasible pairs could save
        big = (np.abs(sub[sub_ok]).max() + 1.0) * (min(rest_r.size, rest_c.size) + 1)
        rows, cols = linear_sum_assignment(np.where(sub_ok, sub, big))  # a new array: the caller's is untouched
        keep = sub_ok[rows, cols]
        mr = np.concatenate([mr, rest_r[rows[keep]]])
        mc = np.concatenate([mc, rest_c[cols[keep]]])
    matches = np.empty((mr.size, 2), np.int64)
    if mr.size > lone_r.size:  # lone pairs come sorted by row, the solver's pairs after them
        order = np.argsort(mr, kind="stable")
        mr, mc = mr[order], mc[order]
    matches[:, 0] = mr
    matches[:, 1] = mc
    um_r = np.ones(n, bool)
    um_r[matches[:, 0]] = False
    um_c = np.ones(m, bool)
    um_c[matches[:, 1]] = False
    return matches, np.flatnonzero(um_r).astype(np.int64), np.flatnonzero(um_c).astype(np.int64)
