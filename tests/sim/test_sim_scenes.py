"""The scene generator: determinism, random access, ids, map consistency, occlusions, entries/exits."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import ConfigError
from perception.modelcard import CAMVID_CLASSES
from perception.sim import SceneConfig, SceneFrame, SceneSequence

THING_IDS = {c.id for c in CAMVID_CLASSES if c.is_thing}


def small(**kw) -> SceneSequence:
    """A small, fast sequence (320x180) unless overridden."""
    base = dict(width=320, height=180, num_frames=60, seed=3)
    base.update(kw)
    return SceneSequence(config=SceneConfig(**base))


def assert_same_frame(a: SceneFrame, b: SceneFrame) -> None:
    assert a.index == b.index and a.t_ns == b.t_ns
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.semantic, b.semantic)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert a.objects == b.objects


def test_frame_shapes_dtypes_and_time():
    seq = small(num_frames=10, fps=12.5)
    f = seq.frame(7)
    assert f.image.shape == (180, 320, 3) and f.image.dtype == np.uint8
    assert f.semantic.shape == (180, 320) and f.semantic.dtype == np.uint8
    assert f.instances.shape == (180, 320) and f.instances.dtype == np.uint16
    assert f.index == 7 and f.t_ns == round(7 / 12.5 * 1e9)
    assert int(f.semantic.max()) <= 10
    assert len(seq) == 10
    assert seq.frame(-1).index == 9
    with pytest.raises(IndexError):
        seq.frame(10)
    with pytest.raises(IndexError):
        seq.frame(-11)


def test_default_size_frame_looks_like_a_street():
    seq = SceneSequence(config=SceneConfig(num_frames=5))
    f = seq.frame(0)
    assert f.image.shape == (540, 960, 3)
    present = set(np.unique(f.semantic).tolist())
    # Sky, building, pole, road, pavement, tree, sign, fence and at least one thing class.
    assert {0, 1, 2, 3, 4, 5, 6, 7} <= present
    assert present & THING_IDS
    top, bottom = f.semantic[:20], f.semantic[-20:, 300:660]
    assert np.mean(top == 0) > 0.5, "sky at the top"
    assert np.mean(bottom == 3) > 0.3, "road at the bottom centre"
    # Texture and noise: a road patch is not one flat colour.
    road = f.image[f.semantic == 3]
    assert road.std(axis=0).min() > 3.0


def test_deterministic_per_seed():
    a, b = small(seed=11), small(seed=11)
    for i in (0, 17, 59):
        assert_same_frame(a.frame(i), b.frame(i))
    c = small(seed=12)
    assert not np.array_equal(a.frame(5).image, c.frame(5).image)


def test_a_longer_sequence_starts_with_the_shorter_one():
    short, long = small(num_frames=20), small(num_frames=200)
    for i in (0, 10, 19):
        assert_same_frame(short.frame(i), long.frame(i))


def test_random_access_equals_sequential():
    sequential = list(small(num_frames=40))
    other = small(num_frames=40)
    for i in reversed(range(40)):
        assert_same_frame(other.frame(i), sequential[i])
    assert other[13].index == 13


def test_maps_and_ground_truth_are_consistent():
    seq = small(num_frames=30, num_objects=10)
    seen_objects = 0
    for f in seq:
        inst = f.instances
        # Every instance pixel carries a thing class, every thing pixel an instance.
        is_thing = np.isin(f.semantic, list(THING_IDS))
        np.testing.assert_array_equal(inst > 0, is_thing)
        listed = {o.object_id for o in f.objects}
        assert set(np.unique(inst[inst > 0]).tolist()) == listed
        for o in f.objects:
            seen_objects += 1
            ys, xs = np.nonzero(inst == o.object_id)
            assert o.area == len(ys)
            assert o.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert o.centroid == pytest.approx((xs.mean(), ys.mean()))
            assert set(np.unique(f.semantic[ys, xs]).tolist()) == {o.class_id}
            assert o.class_id in THING_IDS
            assert 0 < o.area <= o.inframe_area <= o.full_area
            assert o.visible_fraction == pytest.approx(o.area / o.full_area)
            fx0, fy0, fx1, fy1 = o.full_box
            assert fx0 <= o.box[0] and fy0 <= o.box[1] and o.box[2] <= fx1 and o.box[3] <= fy1
            if o.area == o.full_area:
                assert o.box == o.full_box
    assert seen_objects > 100


def test_ids_unique_and_never_reused():
    seq = small(num_frames=400, num_objects=6, respawn_delay_s=(0.0, 0.5))
    assert [p.object_id for p in seq.plans] == list(range(1, seq.num_ids + 1))
    first_seen: dict[int, int] = {}
    last_seen: dict[int, int] = {}
    class_of: dict[int, int] = {}
    for f in seq:
        for o in f.objects:
            assert class_of.setdefault(o.object_id, o.class_id) == o.class_id, "an id changed class"
            if o.object_id not in first_seen:
                # A new id is larger than the id of every object that has already left.
                left = [i for i, last in last_seen.items() if last < f.index - 1]
                assert all(o.object_id > i for i in left), (o.object_id, left)
                first_seen[o.object_id] = f.index
            last_seen[o.object_id] = f.index
    plans = {p.object_id: p for p in seq.plans}
    for oid, first in first_seen.items():
        assert plans[oid].first_frame <= first <= last_seen[oid] < plans[oid].end_frame
    assert len(first_seen) > 15, "objects should come and go over 400 frames"


def test_objects_enter_and_leave_through_the_edges():
    seq = small(num_frames=300, num_objects=6)
    W = seq.config.width
    appeared: dict[int, object] = {}
    last: dict[int, object] = {}
    for f in seq:
        for o in f.objects:
            appeared.setdefault(o.object_id, (f.index, o))
            last[o.object_id] = (f.index, o)
    entered = [o for i, o in appeared.values() if i > 0]
    left = [o for i, o in last.values() if i < len(seq) - 1]
    assert entered and left
    # Those that entered after frame 0 came in across the left or right border.
    for o in entered:
        assert o.full_box[0] < 0 or o.full_box[2] > W, o
    # Most that left did so across a border (the rest hid behind something nearer in their last frames).
    at_border = [o for o in left if o.full_box[0] < 0 or o.full_box[2] > W]
    assert len(at_border) >= 0.8 * len(left)


def test_occlusions_occur_in_a_default_sequence():
    seq = SceneSequence(config=SceneConfig(num_frames=60))
    W, H = seq.config.width, seq.config.height
    occluded_by_thing = occluded_by_pole = 0
    for i in range(0, 60, 3):
        f = seq.frame(i)
        for o in f.objects:
            x0, y0, x1, y1 = o.full_box
            inside = x0 >= 0 and y0 >= 0 and x1 <= W and y1 <= H
            if inside and o.visible_fraction < 0.98:
                # What covers the hidden pixels: another object, or a static occluder (pole/sign)?
                region = (slice(int(y0), int(np.ceil(y1))), slice(int(x0), int(np.ceil(x1))))
                inst, sem = f.instances[region], f.semantic[region]
                occluded_by_thing += int(np.any((inst > 0) & (inst != o.object_id)))
                occluded_by_pole += int(np.any(np.isin(sem, (2, 6)) & (inst == 0)))
    assert occluded_by_thing > 0
    assert occluded_by_pole > 0


def test_objects_are_listed_far_to_near():
    seq = small(num_frames=30, num_objects=12)
    for f in seq:
        depths = [o.depth for o in f.objects]
        assert depths == sorted(depths)


def test_bad_config_is_a_config_error():
    for bad in (
        dict(width=0),
        dict(num_frames=0),
        dict(fps=0.0),
        dict(fps=float("nan")),
        dict(num_objects=-1),
        dict(car_speed=(0.5, 0.1)),
        dict(car_speed=(0.0, 0.1)),
        dict(ground_band=(0.5, 1.5)),
        dict(class_weights=(0, 0, 0)),
        dict(seed=-1),
        dict(noise_sigma=-1.0),
    ):
        with pytest.raises(ConfigError) as err:
            SceneConfig(**bad)
        assert next(iter(bad)) in str(err.value)


def test_no_objects_is_an_empty_street():
    seq = small(num_objects=0, num_frames=3)
    f = seq.frame(2)
    assert f.objects == () and not f.instances.any()
    assert seq.num_ids == 0


def test_render_into_reuses_buffers_and_equals_frame():
    seq = small(num_frames=8)
    image = np.full((180, 320, 3), 7, np.uint8)
    semantic = np.full((180, 320), 99, np.uint8)
    instances = np.full((180, 320), 999, np.uint16)
    for i in (5, 2):
        objects = seq.render_into(i, image=image, semantic=semantic, instances=instances)
        f = seq.frame(i)
        np.testing.assert_array_equal(image, f.image)
        np.testing.assert_array_equal(semantic, f.semantic)
        np.testing.assert_array_equal(instances, f.instances)
        assert objects == f.objects
    with pytest.raises(ValueError, match="instances"):
        seq.render_into(0, image=image, semantic=semantic, instances=instances.astype(np.int32))
