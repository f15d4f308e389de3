"""HOTA: a hand-computed case, and agreement with TrackEval's ``HOTA`` metric (per sequence and pooled)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perception.errors import DataError
from perception.eval.tracking import HOTA_ALPHAS, FrameMatch, HotaCounts, TrackingCounts, evaluate_sequence
from perception.eval.tracking_sim import SimSettings, evaluate_seed

nan = np.nan
FIELDS = ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr")


def F(gt, hyp, dist):
    return FrameMatch(np.array(gt, np.int64), np.array(hyp, np.int64), np.array(dist, float).reshape(len(gt), len(hyp)))


def test_hand_computed_fragmented_track():
    # object 1 is tracked by 10 in frames 0-1 and by 20 in frames 2-3; frame 3 overlaps only 50 %
    frames = [F([1], [10], [[0.0]]), F([1], [10], [[0.0]]), F([1], [20], [[0.0]]), F([1], [20], [[0.5]])]
    h = evaluate_sequence(frames).hota_counts
    low = HOTA_ALPHAS <= 0.5  # 10 thresholds at which the 0.5 overlap still counts
    assert low.sum() == 10
    np.testing.assert_array_equal(h.tp, np.where(low, 4, 3))
    np.testing.assert_array_equal(h.fn, np.where(low, 0, 1))
    np.testing.assert_array_equal(h.fp, np.where(low, 0, 1))
    per = h.per_alpha()
    # low: DetA 1; pairs (1,10) and (1,20) each 2 matches, Jaccard 2 / (4 + 2 - 2) = 0.5; LocA 3.5 / 4
    # high: DetA 3 / 5; (1,10): 2 / 4 = 0.5, (1,20): 1 / (4 + 2 - 1) = 0.2 -> AssA (2 * 0.5 + 0.2) / 3
    np.testing.assert_allclose(per["DetA"], np.where(low, 1.0, 0.6))
    np.testing.assert_allclose(per["AssA"], np.where(low, 0.5, 0.4))
    np.testing.assert_allclose(per["LocA"], np.where(low, 0.875, 1.0))
    np.testing.assert_allclose(per["AssRe"], np.where(low, 0.5, (2 * 0.5 + 0.25) / 3))
    np.testing.assert_allclose(per["AssPr"], np.where(low, 1.0, (2 * 1.0 + 0.5) / 3))
    assert h.hota == pytest.approx((10 * np.sqrt(0.5) + 9 * np.sqrt(0.24)) / 19, abs=1e-12)
    assert h.deta == pytest.approx((10 + 9 * 0.6) / 19, abs=1e-12)
    assert h.assa == pytest.approx((10 * 0.5 + 9 * 0.4) / 19, abs=1e-12)
    assert h.loca == pytest.approx((10 * 0.875 + 9) / 19, abs=1e-12)


def test_global_association_decides_ambiguous_frames():
    # last frame: the swapped pairs overlap better (1.0 + 1.0 > 0.9 + 0.9), but 10 has been object 1
    # and 20 object 2 all along: HOTA's matching (similarity x alignment score) keeps them
    frames = [F([1, 2], [10, 20], [[0.1, nan], [nan, 0.1]])] * 3 + [F([1, 2], [10, 20], [[0.1, 0.0], [0.0, 0.1]])]
    per = evaluate_sequence(frames).hota_counts.per_alpha()
    np.testing.assert_allclose(per["AssA"][HOTA_ALPHAS < 0.85], 1.0)
    np.testing.assert_allclose(per["DetA"][HOTA_ALPHAS < 0.85], 1.0)


def test_empty_and_not_computed():
    only_gt = evaluate_sequence([F([1, 2], [], []), F([], [], [])])
    assert only_gt.hota == 0.0 and only_gt.loca == 1.0 and only_gt.hota_counts.fn == (2,) * 19
    off = evaluate_sequence([F([1], [10], [[3.0]])], hota=False)  # any distance is fine without HOTA
    assert off.hota_counts is None and np.isnan(off.hota) and off.matches == 1
    assert (off + only_gt).hota_counts is None and np.isnan(off.as_dict()["hota"])
    with pytest.raises(DataError, match="hota=False"):
        evaluate_sequence([F([1], [10], [[3.0]])])
    with pytest.raises(DataError, match="HOTA_ALPHAS"):
        HotaCounts(tp=(1, 2))


def test_pooled_counts_and_json():
    a = evaluate_sequence([F([1], [10], [[0.2]]), F([1, 2], [10], [[0.2], [nan]])])
    b = evaluate_sequence([F([5], [7, 8], [[0.0, 0.4]])])
    s = a + b
    assert s.hota_counts == a.hota_counts + b.hota_counts
    assert s.hota_counts.tp[0] == a.hota_counts.tp[0] + b.hota_counts.tp[0] == 3
    assert (TrackingCounts() + a).hota_counts == a.hota_counts  # the empty counts are the identity
    d = json.loads(json.dumps(s.as_dict(), allow_nan=False))
    for key in ("hota", "deta", "assa", "loca", "hota_0", "loca_0", "idf1", "mota"):
        assert isinstance(d[key], float)
    assert d["hota"] == pytest.approx(s.hota)
    assert HotaCounts(**{k: tuple(v) for k, v in d["hota_counts"].items()}) == s.hota_counts  # round trip


# ---------------------------------------------------------------- agreement with TrackEval


def _trackeval_hota():
    metrics = pytest.importorskip("trackeval.metrics")
    return metrics.HOTA()


def _trackeval_data(frames):
    """TrackEval's per-sequence dict: 0-based contiguous ids, similarity 1 - dist (0 where nan)."""
    g_all = np.unique(np.concatenate([f.gt_ids for f in frames]))
    h_all = np.unique(np.concatenate([f.hyp_ids for f in frames]))
    return {
        "num_gt_ids": g_all.size,
        "num_tracker_ids": h_all.size,
        "num_gt_dets": sum(f.gt_ids.size for f in frames),
        "num_tracker_dets": sum(f.hyp_ids.size for f in frames),
        "gt_ids": [np.searchsorted(g_all, f.gt_ids) for f in frames],
        "tracker_ids": [np.searchsorted(h_all, f.hyp_ids) for f in frames],
        "similarity_scores": [np.where(np.isfinite(f.dist), 1.0 - f.dist, 0.0) for f in frames],
    }


def _random_sequence(seed, n_frames=40, forbidden=0.5):
    """Random ids (sparse, not contiguous) and similarities; some frames without gt or without tracks."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        gt = rng.choice(np.arange(1, 9) * 3, size=rng.integers(0, 6), replace=False)
        hyp = rng.choice(100 + np.arange(1, 13) * 7, size=rng.integers(0, 7), replace=False)
        dist = rng.random((gt.size, hyp.size))
        dist[rng.random(dist.shape) < forbidden] = nan
        dist[rng.random(dist.shape) < 0.05] = 0.0  # perfect overlaps (similarity exactly 1)
        frames.append(F(gt, hyp, dist))
    return frames


def _assert_same(ours: HotaCounts, ref: dict):
    per = ours.per_alpha()
    for k in FIELDS:
        np.testing.assert_allclose(per[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
    for k in ("tp", "fn", "fp"):
        np.testing.assert_array_equal(getattr(ours, k), ref[f"HOTA_{k.upper()}"], err_msg=k)
    assert ours.hota == pytest.approx(float(np.mean(ref["HOTA"])), abs=1e-9)
    assert ours.summary()["hota_0"] == pytest.approx(ref["HOTA(0)"], abs=1e-9)
    assert ours.summary()["loca_0"] == pytest.approx(ref["LocA(0)"], abs=1e-9)


@pytest.mark.parametrize("forbidden", [0.0, 0.5, 0.9])
def test_agrees_with_trackeval_on_random_sequences(forbidden):
    metric = _trackeval_hota()
    for seed in range(4):
        frames = _random_sequence(seed, forbidden=forbidden)
        assert any(f.gt_ids.size == 0 for f in frames) and any(f.hyp_ids.size == 0 for f in frames)
        _assert_same(evaluate_sequence(frames).hota_counts, metric.eval_sequence(_trackeval_data(frames)))


def test_agrees_with_trackeval_when_pooling_sequences():
    metric = _trackeval_hota()
    seqs = [_random_sequence(10), _random_sequence(11, forbidden=0.8), _random_sequence(12, n_frames=15)]
    refs = {str(i): metric.eval_sequence(_trackeval_data(f)) for i, f in enumerate(seqs)}
    total = TrackingCounts()
    for f in seqs:
        total = total + evaluate_sequence(f)
    _assert_same(total.hota_counts, metric.combine_sequences(refs))


@pytest.mark.parametrize("match", ["iou", "source"])
def test_agrees_with_trackeval_on_a_generated_sequence(match):
    metric = _trackeval_hota()
    frames: list[FrameMatch] = []
    ours = evaluate_seed(5, SimSettings(frames=60, width=480, height=270, match=match), frames_out=frames)
    assert 0.0 < ours.hota < 1.0
    _assert_same(ours.hota_counts, metric.eval_sequence(_trackeval_data(frames)))
