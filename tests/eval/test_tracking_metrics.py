"""Tracking metrics: known answers, and agreement with py-motmetrics on generated sequences."""

from __future__ import annotations

import numpy as np
import pytest

from perception.eval.tracking import FrameMatch, HotaCounts, TrackingCounts, evaluate_sequence, iou_distance
from perception.eval.tracking_sim import SimSettings, evaluate_seed

nan = np.nan


def F(gt, hyp, dist):
    return FrameMatch(np.array(gt, np.int64), np.array(hyp, np.int64), np.array(dist, float).reshape(len(gt), len(hyp)))


def test_known_answer_switch_miss_false_positive():
    frames = [
        F([1, 2], [10, 20], [[0.1, nan], [nan, 0.2]]),
        F([1, 2], [10, 20], [[0.1, nan], [nan, 0.2]]),
        F([1, 2], [30, 20, 40], [[0.3, nan, nan], [nan, 0.2, nan]]),  # 1: 10 -> 30 switch; 40 FP
        F([1, 2], [30], [[0.1], [nan]]),  # 2 missed
    ]
    c = evaluate_sequence(frames)
    assert (c.num_gt, c.num_hyp, c.matches, c.misses, c.false_positives, c.id_switches) == (8, 8, 7, 1, 1, 1)
    assert c.mota == pytest.approx(1 - (1 + 1 + 1) / 8)
    # IDF1: best pairs 1<->10 or 1<->30 (2 frames each), 2<->20 (3 frames) -> IDTP 5
    assert c.idtp == 5 and c.idf1 == pytest.approx(2 * 5 / 16)
    assert c.motp == pytest.approx((0.1 + 0.2 + 0.1 + 0.2 + 0.3 + 0.2 + 0.1) / 7)


def test_previous_correspondence_is_kept_when_still_valid():
    # frame 2: hyp 20 is closer to object 1, but 1 <-> 10 is still valid: no switch (CLEAR MOT rule)
    frames = [F([1], [10], [[0.4]]), F([1], [10, 20], [[0.4, 0.0]])]
    c = evaluate_sequence(frames)
    assert c.id_switches == 0 and c.false_positives == 1


def test_counts_add_up_and_iou_distance():
    a = TrackingCounts(num_gt=10, num_hyp=9, idtp=8, id_switches=1)
    b = TrackingCounts(num_gt=5, num_hyp=5, idtp=5)
    s = a + b
    assert (s.num_gt, s.num_hyp, s.idtp, s.id_switches) == (15, 14, 13, 1)
    assert s.hota_counts == HotaCounts()  # HOTA sums pool too (tests/eval/test_hota.py)
    np.testing.assert_allclose(iou_distance(np.array([[0.7, 0.4]])), [[0.3, nan]])


def _motmetrics_summary(frames):
    mm = pytest.importorskip("motmetrics")
    acc = mm.MOTAccumulator(auto_id=True)
    for f in frames:
        acc.update(list(f.gt_ids), list(f.hyp_ids), f.dist)
    mh = mm.metrics.create()
    return mh.compute(acc, metrics=["mota", "idf1", "num_switches", "num_false_positives", "num_misses"], name="x")


@pytest.mark.parametrize("match", ["iou", "source"])
def test_agrees_with_motmetrics_on_generated_sequences(match):
    frames: list[FrameMatch] = []  # the exact per-frame inputs of a real scene -> detector -> tracker run
    ours = evaluate_seed(3, SimSettings(frames=120, width=640, height=360, match=match), frames_out=frames)
    assert len(frames) == 120
    assert ours.num_gt > 200 and ours.num_hyp > 100
    ref = _motmetrics_summary(frames)
    assert ours.mota == pytest.approx(float(ref["mota"].iloc[0]), abs=1e-9)
    assert ours.idf1 == pytest.approx(float(ref["idf1"].iloc[0]), abs=1e-9)
    assert ours.id_switches == int(ref["num_switches"].iloc[0])
    assert ours.false_positives == int(ref["num_false_positives"].iloc[0])
    assert ours.misses == int(ref["num_misses"].iloc[0])


def test_agrees_with_motmetrics_on_random_sequences_with_switches():
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(60):
        gt = rng.choice(np.arange(1, 9), size=rng.integers(0, 6), replace=False)
        hyp = rng.choice(np.arange(1, 12), size=rng.integers(0, 7), replace=False)
        d = rng.random((gt.size, hyp.size))
        d[d > 0.6] = nan
        frames.append(F(gt, hyp, d))
    ours = evaluate_sequence(frames)
    assert ours.id_switches > 0 and ours.false_positives > 0 and ours.misses > 0
    ref = _motmetrics_summary(frames)
    assert ours.mota == pytest.approx(float(ref["mota"].iloc[0]), abs=1e-9)
    assert ours.idf1 == pytest.approx(float(ref["idf1"].iloc[0]), abs=1e-9)
    assert ours.id_switches == int(ref["num_switches"].iloc[0])
