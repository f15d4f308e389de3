"""The vectorised tracking maths against plain per-item references, on random inputs with edge cases.

Each reference is written out the obvious way (loops over instances, boxes, pixels) so that the
vectorised versions (colour histograms over inside samples, border/occlusion-completed measurements,
centre distances with degenerate boxes, motion-compensated mask IoU, per-coordinate Kalman blocks)
can be rewritten for speed without changing a result.
"""

from __future__ import annotations

import numpy as np
import pytest

from perception.tracking import Tracker, kalman
from perception.tracking.appearance import colour_embeddings
from perception.tracking.kalman import KalmanParams
from perception.tracking.matching import (
    linear_assignment,
    linear_assignment_pairs,
    normalized_center_distance_sq,
    shifted_mask_iou,
)
from perception.types import FrameMeta, Instance

P = KalmanParams()


def _reference_colour_embeddings(grid, image, ids, stride, bins, min_samples):
    h, w = grid.shape
    emb = np.zeros((len(ids), bins**3), np.float32)
    valid = np.zeros(len(ids), bool)
    for r, k in enumerate(ids):
        every, inside = [], []
        for y in range(h):
            for x in range(w):
                if grid[y, x] != k:
                    continue
                q = [int(c) * bins // 256 for c in image[y * stride, x * stride]]
                cell = (q[0] * bins + q[1]) * bins + q[2]
                every.append(cell)
                if 0 < y < h - 1 and 0 < x < w - 1 and all(
                    grid[y + dy, x + dx] == k for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
                ):
                    inside.append(cell)
        need = max(min_samples, 1)
        cells = inside if len(inside) >= need else every
        if len(cells) >= need:
            hist = np.bincount(cells, minlength=bins**3).astype(np.float32)
            emb[r] = np.sqrt(hist / np.float32(len(cells)))
            valid[r] = True
    return emb, valid


def test_colour_embeddings_equal_a_per_instance_reference():
    rng = np.random.default_rng(10)
    for trial in range(60):
        stride = int(rng.integers(1, 6))
        shape = (int(rng.integers(1, 50)), int(rng.integers(1, 50)))
        imap = np.zeros(shape, np.uint16)
        for k in range(1, int(rng.integers(1, 7))):
            y0, x0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
            imap[y0 : y0 + rng.integers(1, 25), x0 : x0 + rng.integers(1, 25)] = k
        if trial % 4 == 1:  # an instance as wide as the frame: its border samples are not inside
            imap[shape[0] // 3 :, :] = 6
        image = rng.integers(0, 256, (*shape, 3)).astype(np.uint8)
        if trial % 3 == 0:
            image = np.ascontiguousarray(image[:, :, ::-1])[:, :, ::-1]  # not C-contiguous
        grid = imap[::stride, ::stride]
        ids = rng.choice(np.arange(1, 9), int(rng.integers(1, 6)), replace=False)  # absent ids too
        bins, min_samples = int(rng.integers(2, 8)), int(rng.integers(0, 10))
        emb, valid = colour_embeddings(grid, image, ids, stride=stride, bins=bins, min_samples=min_samples)
        ref_emb, ref_valid = _reference_colour_embeddings(grid, image, ids, stride, bins, min_samples)
        np.testing.assert_array_equal(valid, ref_valid)
        np.testing.assert_allclose(emb, ref_emb, rtol=1e-6, atol=0)


def _reference_amodal(boxes, pwh, frame, margin, pred, partial_ratio):
    out = []
    for b, p, pb in zip(boxes, pwh, pred):
        z = []
        for axis in (0, 1):
            lo, hi, size = b[axis], b[axis + 2], frame[axis]
            vis = hi - lo
            cut_lo, cut_hi = lo <= margin, hi >= size - margin
            centre, extent = lo + 0.5 * vis, vis
            if cut_lo != cut_hi:
                extent = max(vis, p[axis])
                centre = hi - 0.5 * extent if cut_lo else lo + 0.5 * extent
            elif not cut_lo and partial_ratio > 0 and vis < partial_ratio * p[axis]:
                extent = p[axis]
                keep_lo = abs(lo - pb[axis]) <= abs(hi - pb[axis + 2])
                centre = lo + 0.5 * extent if keep_lo else hi - 0.5 * extent
            z.append((centre, extent))
        out.append([z[0][0], z[1][0], z[0][1], z[1][1]])
    return np.array(out).reshape(-1, 4)


def test_amodal_measurements_equal_a_per_box_reference():
    rng = np.random.default_rng(11)
    frame = (100, 80)
    for trial in range(300):
        n = int(rng.integers(0, 8))
        lo = rng.uniform(-5, 95, (n, 2))
        boxes = np.concatenate([lo, lo + rng.choice([0.0, 2.0, 20.0, 90.0], (n, 2)) * rng.uniform(0.3, 1.5, (n, 2))], 1)
        boxes = np.clip(boxes, 0, [100, 80, 100, 80]) if trial % 2 else boxes
        pwh = rng.uniform(1, 90, (n, 2))
        centre = rng.uniform(0, 100, (n, 2))
        pred = np.concatenate([centre - pwh / 2, centre + pwh / 2], 1)
        margin, ratio = float(rng.choice([0.0, 1.0, 4.0])), float(rng.choice([0.0, 0.6, 0.9]))
        z = kalman.amodal_measurements(boxes, pwh, frame, margin=margin, predicted_boxes=pred, partial_ratio=ratio)
        np.testing.assert_allclose(z, _reference_amodal(boxes, pwh, frame, margin, pred, ratio), rtol=0, atol=1e-12)


def test_normalized_center_distance_sq_equals_a_pairwise_reference_with_degenerate_boxes():
    rng = np.random.default_rng(12)
    for _ in range(100):
        a = rng.uniform(0, 50, (int(rng.integers(0, 6)), 4))
        b = rng.uniform(0, 50, (int(rng.integers(0, 6)), 4))
        a[:, 2:] = a[:, :2] + rng.choice([0.0, 3.0, 20.0], a[:, 2:].shape)  # some zero-size boxes
        b[:, 2:] = b[:, :2] + rng.choice([0.0, 5.0], b[:, 2:].shape)
        ref = np.zeros((len(a), len(b)))
        for i, p in enumerate(a):
            for j, q in enumerate(b):
                for lo, hi in ((0, 2), (1, 3)):
                    mean = ((p[hi] - p[lo]) + (q[hi] - q[lo])) / 2
                    d = (p[lo] + p[hi]) / 2 - (q[lo] + q[hi]) / 2
                    ref[i, j] += np.inf if mean == 0 else (d / mean) ** 2
        np.testing.assert_allclose(normalized_center_distance_sq(a, b), ref, rtol=1e-12)


def test_shifted_mask_iou_equals_a_per_mask_reference():
    rng = np.random.default_rng(13)
    for trial in range(100):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        cur = rng.integers(0, 5, (h, w)).astype(np.uint16)
        if trial % 4 == 0:
            cur = np.asfortranarray(cur)
        n, count = int(rng.integers(1, 5)), int(rng.integers(0, 40))
        pix = np.stack([rng.integers(0, h, count), rng.integers(0, w, count)], 1).astype(np.int32)
        rows = rng.integers(0, n, count)
        shifts = rng.normal(0, 8, (n, 2))
        ids = rng.choice(np.arange(1, 7), int(rng.integers(1, 5)), replace=False)
        areas = rng.integers(0, 40, ids.size)
        weight = float(rng.choice([1.0, 4.0]))
        ref = np.zeros((n, ids.size))
        for r in range(n):
            dx, dy = np.rint(shifts[r]).astype(int)
            moved = [(y + dy, x + dx) for (y, x), rr in zip(pix, rows) if rr == r]
            moved = [(y, x) for y, x in moved if 0 <= y < h and 0 <= x < w]
            for j, k in enumerate(ids):
                inter = min(weight * sum(cur[y, x] == k for y, x in moved), areas[j])
                union = weight * len(moved) + areas[j] - inter
                ref[r, j] = inter / union if union > 0 else 0.0
        got = shifted_mask_iou(pix, rows, shifts, cur, ids, areas, pixel_weight=weight)
        np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_assignment_pairs_are_the_matches_of_linear_assignment():
    rng = np.random.default_rng(15)
    for _ in range(300):
        n, m = rng.integers(0, 9, 2)
        cost = rng.uniform(0, 1, (n, m))
        cost[rng.uniform(size=(n, m)) < rng.uniform(0.2, 0.9)] = np.inf
        threshold = float(rng.choice([0.5, 0.9, np.inf]))
        before = cost.copy()
        rows, cols = linear_assignment_pairs(cost, threshold)
        matches, unmatched_rows, unmatched_cols = linear_assignment(cost, threshold)
        np.testing.assert_array_equal(cost, before)
        assert rows.dtype == cols.dtype == np.int64
        np.testing.assert_array_equal(np.stack([rows, cols], axis=1).reshape(-1, 2), matches)
        assert sorted(rows.tolist() + unmatched_rows.tolist()) == list(range(n))
        assert sorted(cols.tolist() + unmatched_cols.tolist()) == list(range(m))


@pytest.mark.parametrize("dt", [1 / 15, 0.25])
def test_one_step_for_all_tracks_equals_per_track_steps(dt):
    rng = np.random.default_rng(14)
    mean, cov = kalman.initiate(rng.uniform(10, 90, (5, 4)), P)
    mean = mean.copy()
    mean[:, 4:] = rng.normal(0, 50, (5, 4))
    mean, cov = kalman.update(*kalman.predict(mean, cov, 0.1, P), rng.uniform(10, 90, (5, 4)), P)
    shared = kalman.predict(mean, cov, dt, P)
    per_track = kalman.predict(mean, cov, np.full(5, dt), P)
    np.testing.assert_allclose(shared[0], per_track[0], rtol=1e-12)
    np.testing.assert_allclose(shared[1], per_track[1], rtol=1e-12)


def _frames(n_frames=40, seed=0):
    """Moving coloured boxes with misses, in a 320x240 frame: (instances, meta, instance map, image)."""
    rng = np.random.default_rng(seed)
    n_obj = 8
    xy = rng.uniform(0, 260, (n_obj, 2)) * [1, 0.7]
    v = rng.uniform(-60, 60, (n_obj, 2))
    colours = rng.integers(20, 236, (n_obj, 3)).astype(np.uint8)
    out = []
    for i in range(n_frames):
        t = i / 15
        pos = np.mod(xy + v * t, [280, 200])
        imap = np.zeros((240, 320), np.uint16)
        image = np.full((240, 320, 3), 110, np.uint8)
        insts = []
        for j in np.flatnonzero(rng.random(n_obj) > 0.15):
            x0, y0 = (int(c) for c in pos[j])
            k = len(insts) + 1
            imap[y0 : y0 + 30, x0 : x0 + 36] = k
            image[y0 : y0 + 30, x0 : x0 + 36] = colours[j]
            score = float(rng.uniform(0.3, 1.0))
            box = (float(x0), float(y0), float(x0 + 36), float(y0 + 30))
            centroid = (x0 + 18.0, y0 + 15.0)
            insts.append(Instance(index=k, class_id=8, score=score, box=box, area=36 * 30, centroid=centroid))
        tn = round(t * 1e9)
        meta = FrameMeta(
            seq=i, camera_id="t", frame_index=i, t_mono_ns=tn, t_wall_ns=tn, pts_ns=tn, width=320, height=240
        )
        out.append((insts, meta, imap, image))
    return out


def _strip_ids(tracks, offset):
    return [(t.track_id - offset, t.instance_index, t.box, t.velocity, t.age, t.hits, t.state, t.extra) for t in tracks]


def test_tracker_state_is_private_and_reset_starts_afresh():
    # the tracker updates its state arrays in place: results must not depend on what came before a
    # reset, nor on another tracker running at the same time
    frames = _frames()
    a = Tracker(report_lost=True, report_tentative=True)
    for f in frames:
        a.update(*f)
    a.reset()
    b = Tracker(report_lost=True, report_tentative=True)
    offset = a._next_id - 1
    for f in frames:
        ta, tb = a.update(*f), b.update(*f)
        assert _strip_ids(ta, offset) == _strip_ids(tb, 0)
