"""Kalman filter on boxes: known answers, purity, time steps in seconds."""

from __future__ import annotations

import numpy as np
import pytest

from perception.tracking import kalman
from perception.tracking.kalman import KalmanParams

P = KalmanParams()


def test_box_measurement_round_trip():
    boxes = np.array([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 4.0, 2.0]])
    z = kalman.boxes_to_measurements(boxes)
    np.testing.assert_allclose(z, [[30, 60, 40, 80], [2, 1, 4, 2]])
    np.testing.assert_allclose(kalman.measurements_to_boxes(z), boxes)


def test_predict_moves_by_velocity_times_dt_and_grows_uncertainty():
    mean, cov = kalman.initiate(np.array([[100.0, 50.0, 20.0, 40.0]]), P)
    mean = mean.copy()
    mean[0, 4:6] = [30.0, -10.0]  # px/s
    before = (mean.copy(), cov.copy())
    m2, c2 = kalman.predict(mean, cov, 0.5, P)
    np.testing.assert_allclose(m2[0, :4], [115.0, 45.0, 20.0, 40.0])
    np.testing.assert_allclose(m2[0, 4:], mean[0, 4:])
    assert c2.shape == cov.shape == (1, 4, 3)  # per coordinate: var(x), cov(x, v), var(v)
    assert np.all(c2[0, :, 0] > cov[0, :, 0])
    np.testing.assert_array_equal(before[0], mean)  # inputs untouched
    np.testing.assert_array_equal(before[1], cov)
    # known answer of the process noise on cx for a zero prior: q * dt^3 / 3 with q = (accel_std * s)^2
    zero = np.zeros((1, 4, 3))
    _, cq = kalman.predict(mean, zero, 0.5, P)
    s = np.sqrt(20.0 * 40.0)
    assert cq[0, 0, 0] == pytest.approx((P.accel_std * s) ** 2 * 0.5**3 / 3)
    assert cq[0, 0, 1] == pytest.approx((P.accel_std * s) ** 2 * 0.5**2 / 2)
    full = kalman.covariance_matrices(cq)[0]
    assert full[0, 4] == full[4, 0] == cq[0, 0, 1] and full[4, 4] == cq[0, 0, 2]
    assert full[0, 1] == full[0, 5] == 0.0  # coordinates are never coupled
    # one step of 2*dt equals the state reached by two steps of dt (means)
    a, _ = kalman.predict(*kalman.predict(mean, cov, 0.25, P), 0.25, P)
    np.testing.assert_allclose(a, m2)


def test_update_known_answer_scalar_case():
    # equal prior and measurement variance on cx: the posterior is the midpoint, variance halved
    mean = np.zeros((1, 8))
    mean[0, :4] = [10.0, 10.0, 10.0, 10.0]
    r = (P.meas_std * 10.0) ** 2
    cov = np.zeros((1, 4, 3))
    cov[0, :, 0] = cov[0, :, 2] = r  # var(x) = var(v) = r, uncorrelated
    z = np.array([[12.0, 10.0, 10.0, 10.0]])
    m, c = kalman.update(mean, cov, z, P)
    assert m[0, 0] == pytest.approx(11.0)
    assert c[0, 0, 0] == pytest.approx(r / 2)
    assert m[0, 4] == 0.0  # no correlation in the prior: velocity untouched


def test_vectorised_over_tracks_equals_one_by_one():
    rng = np.random.default_rng(0)
    z0 = np.abs(rng.normal(50, 20, size=(5, 4))) + 5
    mean, cov = kalman.initiate(z0, P)
    dt = rng.uniform(0.01, 0.2, size=5)
    pm, pc = kalman.predict(mean, cov, dt, P)
    z1 = z0 + rng.normal(0, 2, size=(5, 4))
    um, uc = kalman.update(pm, pc, z1, P)
    for i in range(5):
        a, b = kalman.predict(mean[i : i + 1], cov[i : i + 1], dt[i], P)
        c, d = kalman.update(a, b, z1[i : i + 1], P)
        np.testing.assert_allclose(c, um[i : i + 1])
        np.testing.assert_allclose(d, uc[i : i + 1])


def test_velocity_converges_in_pixels_per_second_whatever_the_frame_spacing():
    for fps, keep_every in ((15.0, 1), (15.0, 3), (30.0, 2)):
        t = np.arange(0, 3.0, 1.0 / fps)[::keep_every]  # dropped frames = longer steps
        mean, cov = kalman.initiate(np.array([[100.0, 200.0, 40.0, 40.0]]), P)
        for k in range(1, t.size):
            mean, cov = kalman.predict(mean, cov, t[k] - t[k - 1], P)
            mean, cov = kalman.update(mean, cov, np.array([[100.0 + 60.0 * t[k], 200.0 - 20.0 * t[k], 40, 40]]), P)
        np.testing.assert_allclose(mean[0, 4:6], [60.0, -20.0], atol=0.5)


def test_amodal_measurements_complete_boxes_cut_by_the_border():
    boxes = np.array([[0.0, 10.0, 30.0, 50.0], [600.0, 10.0, 640.0, 50.0], [100.0, 10.0, 140.0, 50.0]])
    pred_wh = np.array([[50.0, 40.0], [20.0, 40.0], [80.0, 40.0]])
    z = kalman.amodal_measurements(boxes, pred_wh, (640, 480))
    np.testing.assert_allclose(z[0], [30 - 25, 30, 50, 40])  # left cut: anchored at x1 with predicted width
    np.testing.assert_allclose(z[1], [620, 30, 40, 40])  # right cut, visible wider than predicted: kept
    np.testing.assert_allclose(z[2], kalman.boxes_to_measurements(boxes[2:])[0])  # inside: unchanged


def test_amodal_measurements_keep_the_predicted_size_of_partly_hidden_boxes():
    pred = np.array([[100.0, 10.0, 160.0, 50.0], [100.0, 10.0, 160.0, 50.0], [100.0, 10.0, 160.0, 50.0]])
    boxes = np.array(
        [
            [101.0, 10.0, 121.0, 50.0],  # right part hidden: the left side agrees with the prediction
            [139.0, 10.0, 161.0, 50.0],  # left part hidden: the right side agrees
            [102.0, 10.0, 150.0, 50.0],  # 80 % of the predicted width: a real measurement, kept
        ]
    )
    before = boxes.copy()
    wh = pred[:, 2:] - pred[:, :2]
    z = kalman.amodal_measurements(boxes, wh, (640, 480), predicted_boxes=pred, partial_ratio=0.6)
    np.testing.assert_array_equal(boxes, before)
    np.testing.assert_allclose(z[0], [101 + 30, 30, 60, 40])
    np.testing.assert_allclose(z[1], [161 - 30, 30, 60, 40])
    np.testing.assert_allclose(z[2], kalman.boxes_to_measurements(boxes[2:])[0])
    off = kalman.amodal_measurements(boxes, wh, (640, 480), predicted_boxes=pred)
    np.testing.assert_allclose(off, kalman.boxes_to_measurements(boxes))  # partial_ratio 0: border cuts only


def test_amodal_measurements_report_the_axes_whose_size_was_completed():
    boxes = np.array([[0.0, 10.0, 30.0, 50.0], [101.0, 10.0, 121.0, 50.0], [100.0, 10.0, 160.0, 50.0]])
    pred = np.array([[-20.0, 10.0, 30.0, 50.0], [100.0, 10.0, 160.0, 50.0], [100.0, 10.0, 160.0, 50.0]])
    held = np.zeros((3, 2), bool)
    kalman.amodal_measurements(
        boxes, pred[:, 2:] - pred[:, :2], (640, 480), predicted_boxes=pred, partial_ratio=0.6, held=held
    )
    # border cut (x of box 0), partly hidden (x of box 1), a full view (box 2): only x axes are held
    assert held.tolist() == [[True, False], [True, False], [False, False]]
