"""The detector simulator: stated rates, exactness without noise, instance map ↔ Instance consistency."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import ConfigError
from perception.sim import DetectorSimulator, SceneConfig, SceneSequence


@pytest.fixture(scope="module")
def frames():
    """300 small frames with many objects, rendered once for the module."""
    seq = SceneSequence(config=SceneConfig(width=320, height=180, num_frames=300, num_objects=10, seed=5))
    return list(seq)


def eligible(frame, det: DetectorSimulator) -> set[int]:
    return {
        o.object_id
        for o in frame.objects
        if o.visible_fraction >= det.min_visible_fraction and o.area >= det.min_area_px
    }


@pytest.mark.parametrize(("miss_rate", "fp_rate"), [(0.1, 0.05), (0.3, 0.2)])
def test_measured_miss_and_fp_rates_match_the_configured_ones(frames, miss_rate, fp_rate):
    det = DetectorSimulator(miss_rate=miss_rate, fp_rate=fp_rate, seed=1)
    n_eligible = n_detected = n_fp = n_visible = 0
    for f in frames:
        d = det(f)
        want = eligible(f, det)
        got = [g for g in d.gt_ids if g]
        assert len(got) == len(set(got)), "one detection per GT object at most"
        assert set(got) <= want, "only eligible objects are detected"
        n_eligible += len(want)
        n_detected += len(got)
        n_fp += sum(1 for g in d.gt_ids if g == 0)
        n_visible += len(f.objects)
    assert n_eligible > 2000
    # Binomial / Poisson standard errors here are ≈ 0.005-0.01; tolerances are about 4 of them (a few
    # detections painted over entirely by nearer ones also count as misses here).
    assert 1 - n_detected / n_eligible == pytest.approx(miss_rate, abs=0.025)
    assert n_fp / n_visible == pytest.approx(fp_rate, abs=0.025)


def test_instances_match_the_instance_map(frames):
    det = DetectorSimulator(seed=2)
    for f in frames[::10]:
        d = det(f)
        imap = d.instance_map
        assert imap.dtype == np.uint16 and imap.shape == f.instances.shape
        assert int(imap.max()) == len(d.instances) == len(d.gt_ids)
        for k, inst in enumerate(d.instances, start=1):
            assert inst.index == k
            ys, xs = np.nonzero(imap == k)
            assert inst.area == len(ys) > 0
            assert inst.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert inst.centroid == pytest.approx((xs.mean(), ys.mean()))
            assert 0.0 < inst.score <= 1.0
            assert inst.class_id in (8, 9, 10)


def test_without_noise_detections_are_the_ground_truth(frames):
    det = DetectorSimulator(
        miss_rate=0.0, fp_rate=0.0, box_jitter=0.0, mask_jitter_px=0, min_visible_fraction=0.0, min_area_px=1
    )
    for f in frames[::15]:
        d = det(f)
        assert sorted(d.gt_ids) == sorted(o.object_id for o in f.objects)
        lut = np.zeros(len(d.gt_ids) + 1, np.int64)
        lut[1:] = d.gt_ids
        np.testing.assert_array_equal(lut[d.instance_map], f.instances)
        classes = {o.object_id: o.class_id for o in f.objects}
        assert all(i.class_id == classes[g] for i, g in zip(d.instances, d.gt_ids, strict=True))


def mask_ious(frames, det: DetectorSimulator) -> np.ndarray:
    ious = []
    for f in frames[::10]:
        d = det(f)
        for k, g in enumerate(d.gt_ids, start=1):
            a, b = d.instance_map == k, f.instances == g
            ious.append(np.count_nonzero(a & b) / np.count_nonzero(a | b))
    return np.array(ious)


def test_jitter_perturbs_masks_and_more_jitter_perturbs_more(frames):
    exact = mask_ious(frames, DetectorSimulator(miss_rate=0.0, fp_rate=0.0, box_jitter=0.0, mask_jitter_px=0))
    assert len(exact) > 100 and np.all(exact == 1.0)
    grow_shrink = mask_ious(
        frames, DetectorSimulator(miss_rate=0.0, fp_rate=0.0, box_jitter=0.0, mask_jitter_px=1)
    )
    default = mask_ious(frames, DetectorSimulator(miss_rate=0.0, fp_rate=0.0, seed=3))
    assert np.mean(grow_shrink < 1.0) > 0.5, "masks are actually perturbed"
    assert np.median(grow_shrink) > 0.7
    # Default jitter (translation with std 5 % of the box + up to 2 px grow/shrink) on these small
    # 320x180 objects: clearly perturbed, still overlapping the truth.
    assert 0.4 < np.median(default) < np.median(grow_shrink)


def test_scores_true_high_false_low(frames):
    det = DetectorSimulator(fp_rate=0.5, seed=4)
    tp, fp = [], []
    for f in frames[::3]:
        d = det(f)
        for inst, g in zip(d.instances, d.gt_ids, strict=True):
            (tp if g else fp).append(inst.score)
    assert np.mean(tp) == pytest.approx(0.85, abs=0.03)
    assert np.mean(fp) == pytest.approx(0.35, abs=0.05)


def test_deterministic_and_does_not_modify_the_frame(frames):
    f = frames[40]
    before = f.instances.copy()
    a = DetectorSimulator(seed=9)
    b = DetectorSimulator(seed=9)
    da, db = a(f), b(f)
    np.testing.assert_array_equal(f.instances, before)
    np.testing.assert_array_equal(da.instance_map, db.instance_map)
    assert da.instances == db.instances and da.gt_ids == db.gt_ids
    a.reset()
    assert a(f).instances == da.instances


def test_bad_parameters_are_config_errors():
    for bad in (
        dict(miss_rate=1.5),
        dict(fp_rate=-0.1),
        dict(mask_jitter_px=-1),
        dict(score_noise=float("nan")),
        dict(min_area_px=0),
    ):
        with pytest.raises(ConfigError) as err:
            DetectorSimulator(**bad)
        assert next(iter(bad)) in str(err.value)
