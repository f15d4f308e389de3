"""The hot-path shortcuts give the same answers as the plain formulas they replace.

Each test compares a vectorised shortcut (per-coordinate covariance blocks in the Kalman filter,
pre-matched lone pairs before the assignment solver, 1-D gathers in the mask IoU) with a reference
written out here in the textbook way.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from perception.tracking import kalman
from perception.tracking.kalman import KalmanParams
from perception.tracking.matching import box_iou, linear_assignment, shifted_mask_iou

P = KalmanParams()


def _reference_predict(mean, cov, dt, params):
    n = mean.shape[0]
    dt = np.broadcast_to(np.asarray(dt, np.float64), (n,))
    out_m, out_c = mean.copy(), np.empty_like(cov)
    for k in range(n):
        f = np.eye(8)
        f[range(4), range(4, 8)] = dt[k]
        s = np.sqrt(max(mean[k, 2], 1.0) * max(mean[k, 3], 1.0))
        q = np.zeros((8, 8))
        for i, std in enumerate([params.accel_std] * 2 + [params.size_accel_std] * 2):
            qd = (std * s) ** 2
            t = dt[k]
            q[i, i], q[i, i + 4], q[i + 4, i], q[i + 4, i + 4] = qd * t**3 / 3, qd * t**2 / 2, qd * t**2 / 2, qd * t
        out_m[k] = f @ mean[k]
        out_c[k] = f @ cov[k] @ f.T + q
    out_m[:, 2:4] = np.maximum(out_m[:, 2:4], 1.0)
    return out_m, out_c


def _reference_update(mean, cov, z, params):
    h = np.hstack([np.eye(4), np.zeros((4, 4))])
    out_m, out_c = np.empty_like(mean), np.empty_like(cov)
    for k in range(mean.shape[0]):
        r = (params.meas_std * np.sqrt(max(z[k, 2], 1.0) * max(z[k, 3], 1.0))) ** 2 * np.eye(4)
        s = h @ cov[k] @ h.T + r
        gain = cov[k] @ h.T @ np.linalg.inv(s)
        out_m[k] = mean[k] + gain @ (z[k] - h @ mean[k])
        out_c[k] = (np.eye(8) - gain @ h) @ cov[k]
    out_m[:, 2:4] = np.maximum(out_m[:, 2:4], 1.0)
    return out_m, out_c


def _random_state(rng, n):
    """States with per-coordinate covariance blocks: each coordinate correlated with its own rate."""
    mean = rng.normal(0, 30, (n, 8))
    mean[:, 2:4] = rng.uniform(5, 80, (n, 2))
    var_x, var_v = rng.uniform(1, 400, (n, 4)), rng.uniform(1, 4000, (n, 4))
    cov = np.stack([var_x, rng.uniform(-0.9, 0.9, (n, 4)) * np.sqrt(var_x * var_v), var_v], axis=2)
    return mean, cov


def test_covariance_blocks_expand_to_symmetric_matrices_that_couple_no_two_coordinates():
    _, cov = _random_state(np.random.default_rng(5), 3)
    full = kalman.covariance_matrices(cov)
    np.testing.assert_array_equal(full, np.transpose(full, (0, 2, 1)))
    i = np.arange(4)
    np.testing.assert_array_equal(full[:, i, i], cov[:, :, 0])
    np.testing.assert_array_equal(full[:, i, i + 4], cov[:, :, 1])
    np.testing.assert_array_equal(full[:, i + 4, i + 4], cov[:, :, 2])
    assert np.count_nonzero(full) == 3 * 4 * 4  # 4 blocks of 2x2 per track, nothing else
    assert np.all(np.linalg.eigvalsh(full) > 0)


def test_predict_matches_the_matrix_formula_for_shared_and_per_track_steps():
    rng = np.random.default_rng(0)
    mean, cov = _random_state(rng, 7)
    before = cov.copy()
    for dt in (0.0667, rng.uniform(0.0, 0.3, 7)):
        m, c = kalman.predict(mean, cov, dt, P)
        rm, rc = _reference_predict(mean, kalman.covariance_matrices(cov), dt, P)
        np.testing.assert_allclose(m, rm, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(kalman.covariance_matrices(c), rc, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(cov, before)


def test_update_matches_the_matrix_formula():
    rng = np.random.default_rng(1)
    z = rng.uniform(5, 90, (6, 4))
    random_mean, random_cov = _random_state(rng, 6)
    # and what initiate/predict produce
    mean, cov = kalman.initiate(z + rng.normal(0, 3, z.shape), P)
    mean, cov = kalman.predict(mean, cov, 0.1, P)
    for m0, c0 in ((mean, cov), (random_mean, random_cov)):
        before = c0.copy()
        m, c = kalman.update(m0, c0, z, P)
        rm, rc = _reference_update(m0, kalman.covariance_matrices(c0), z, P)
        np.testing.assert_allclose(m, rm, rtol=1e-9, atol=1e-9)
        symmetric = 0.5 * (rc + np.transpose(rc, (0, 2, 1)))
        np.testing.assert_allclose(kalman.covariance_matrices(c), symmetric, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(c0, before)


def test_box_iou_matches_pairwise_loop():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 100, (9, 4))
    a[:, 2:] = a[:, :2] + rng.uniform(-5, 40, (9, 2))  # includes empty (inverted) boxes
    b = rng.uniform(0, 100, (7, 4))
    b[:, 2:] = b[:, :2] + rng.uniform(0, 40, (7, 2))
    def area(x):
        return max(x[2] - x[0], 0) * max(x[3] - x[1], 0)

    ref = np.zeros((9, 7))
    for i in range(9):
        for j in range(7):
            iw = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            ih = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            u = area(a[i]) + area(b[j]) - iw * ih
            ref[i, j] = iw * ih / u if u > 0 else 0.0
    np.testing.assert_allclose(box_iou(a, b), ref, atol=1e-12)


def test_linear_assignment_with_lone_pairs_is_still_optimal():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n, m = rng.integers(1, 10, 2)
        cost = rng.uniform(0, 1, (n, m))
        cost[rng.uniform(size=(n, m)) < rng.uniform(0.3, 0.95)] = np.inf  # sparse: many lone pairs
        thr = rng.uniform(0.3, 1.0)
        before = cost.copy()
        matches, um_r, um_c = linear_assignment(cost, thr)
        np.testing.assert_array_equal(cost, before)
        # reference: the solver on the whole matrix, forbidden pairs at a prohibitive cost
        ok = np.isfinite(cost) & (cost <= thr)
        if ok.any():
            big = (cost[ok].max() + 1.0) * (min(n, m) + 1)
            r, c = linear_sum_assignment(np.where(ok, cost, big))
            keep = ok[r, c]
            ref_n, ref_cost = int(keep.sum()), cost[r[keep], c[keep]].sum()
        else:
            ref_n, ref_cost = 0, 0.0
        assert len(matches) == ref_n
        assert np.isclose(cost[matches[:, 0], matches[:, 1]].sum(), ref_cost)
        assert (np.diff(matches[:, 0]) > 0).all() and len(set(matches[:, 1].tolist())) == len(matches)
        assert ok[matches[:, 0], matches[:, 1]].all()
        assert sorted(matches[:, 0].tolist() + um_r.tolist()) == list(range(n))
        assert sorted(matches[:, 1].tolist() + um_c.tolist()) == list(range(m))


def test_shifted_mask_iou_counts_pixels_moved_out_of_the_frame_as_gone():
    cur = np.zeros((10, 10), np.uint16)
    cur[0:4, 0:4] = 3  # 16 px in the top-left corner
    ys, xs = np.mgrid[0:4, 0:4]
    for dtype in (np.int32, np.int64):
        pix = np.stack([ys.ravel(), xs.ravel()], 1).astype(dtype)
        rows = np.zeros(16, np.int64)
        # moved 2 px left: half the mask leaves the frame; the 8 px left inside all hit instance 3
        iou = shifted_mask_iou(pix, rows, np.array([[-2.0, 0.0]]), cur, np.array([3]), np.array([16]))
        assert iou[0, 0] == 8 / 16
        # moved far away (negative coordinates must not wrap round to the other side)
        far = shifted_mask_iou(pix, rows, np.array([[-50.0, -50.0]]), cur, np.array([3]), np.array([16]))
        assert far[0, 0] == 0.0


def test_mask_sample_grid_equals_strided_slice_for_any_shape_and_layout():
    from perception.tracking import Tracker

    rng = np.random.default_rng(4)
    for shape, stride in (((540, 960), 4), ((41, 62), 4), ((17, 8), 4), ((30, 40), 3)):
        tr = Tracker(mask_stride=stride)
        m = rng.integers(0, 65535, shape).astype(np.uint16)
        np.testing.assert_array_equal(tr._sample_grid(m), m[::stride, ::stride])
        wide = rng.integers(0, 65535, (shape[0], shape[1] * 2)).astype(np.uint16)[:, ::2]  # not contiguous
        np.testing.assert_array_equal(tr._sample_grid(wide), wide[::stride, ::stride])
