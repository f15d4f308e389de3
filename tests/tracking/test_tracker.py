"""Tracker: lifecycle, id persistence through occlusion, id uniqueness, timestamps, relabelling."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import ConfigError, DataError
from perception.tracking import Tracker, relabel_instance_map
from perception.types import FrameMeta, Instance, TrackState

FPS = 15.0


def meta(i: int, t_s: float | None = None) -> FrameMeta:
    t = int(round((i / FPS if t_s is None else t_s) * 1e9))
    return FrameMeta(seq=i, camera_id="test", frame_index=i, t_mono_ns=t, t_wall_ns=t, pts_ns=t, width=640, height=480)


def inst(index: int, box, *, cls: int = 8, score: float = 0.9) -> Instance:
    x0, y0, x1, y1 = box
    return Instance(
        index=index,
        class_id=cls,
        score=score,
        box=(float(x0), float(y0), float(x1), float(y1)),
        area=int((x1 - x0) * (y1 - y0)),
        centroid=((x0 + x1) / 2, (y0 + y1) / 2),
    )


def moving_box(t_s: float, x0: float = 50.0, y0: float = 200.0, vx: float = 90.0, vy: float = 0.0, w=40, h=30):
    x, y = x0 + vx * t_s, y0 + vy * t_s
    return (x, y, x + w, y + h)


def test_tentative_then_confirmed_and_instance_index_kept():
    tr = Tracker(confirm_hits=3, confirm_first_frame=False)
    out = [tr.update([inst(2, moving_box(i / FPS))], meta(i)) for i in range(4)]
    assert out[0] == [] and out[1] == []  # tentative tracks are not reported
    assert len(out[2]) == 1 and out[2][0].state == TrackState.CONFIRMED
    t = out[3][0]
    assert t.instance_index == 2 and t.hits == 4 and t.age == 4 and t.track_id == out[2][0].track_id
    tr2 = Tracker(confirm_hits=3, report_tentative=True, confirm_first_frame=False)
    first = tr2.update([inst(1, moving_box(0))], meta(0))
    assert len(first) == 1 and first[0].state == TrackState.TENTATIVE


def test_first_frame_tracks_confirmed_at_once_later_ones_tentative():
    tr = Tracker(confirm_hits=3)
    (a,) = tr.update([inst(1, moving_box(0))], meta(0))
    assert a.state == TrackState.CONFIRMED
    out = tr.update([inst(1, moving_box(1 / FPS)), inst(2, moving_box(1 / FPS, x0=400))], meta(1))
    assert [t.instance_index for t in out] == [1]  # the newcomer waits for its confirmation


def test_id_survives_a_five_frame_occlusion():
    tr = Tracker()
    ids = []
    for i in range(30):
        t = i / FPS
        dets = [] if 10 <= i < 15 else [inst(1, moving_box(t)), inst(2, moving_box(t, x0=500, vx=-60, y0=100))]
        tracks = tr.update(dets, meta(i))
        if 10 <= i < 15:
            assert tracks == []  # coasting tracks are not reported by default
        ids.append({tk.instance_index: tk.track_id for tk in tracks})
    before, after = ids[9], ids[15]
    assert before == after and len(before) == 2


def test_coasting_tracks_reported_when_asked():
    tr = Tracker(report_lost=True)
    for i in range(5):
        tr.update([inst(1, moving_box(i / FPS))], meta(i))
    (t,) = tr.update([], meta(5))
    assert t.state == TrackState.LOST and t.instance_index == 0 and t.extra["lost_frames"] == 1
    assert t.box[0] == pytest.approx(moving_box(5 / FPS)[0], abs=3.0)  # predicted position


def test_ids_never_reused_and_trackers_do_not_share_counters():
    a, b = Tracker(confirm_hits=1, max_lost_frames=1), Tracker(confirm_hits=1, max_lost_frames=1)
    seen = []
    frame = 0
    for k in range(5):  # an object appears, vanishes long enough to be removed, another appears
        for _ in range(3):
            seen += [t.track_id for t in a.update([inst(1, moving_box(0, x0=10 + 100 * k))], meta(frame))]
            frame += 1
        for _ in range(3):
            a.update([], meta(frame))
            frame += 1
    assert len(set(seen)) == 5 and sorted(set(seen)) == [1, 2, 3, 4, 5]
    assert a.num_tracks == 0
    first_b = b.update([inst(1, moving_box(0))], meta(0))
    assert first_b[0].track_id == 1  # b's counter is its own
    a.reset()
    after_reset = a.update([inst(1, moving_box(0))], meta(frame))
    assert after_reset[0].track_id == 6  # reset forgets tracks, not the counter


def test_velocity_uses_timestamps_not_frame_counts():
    vx, vy = 120.0, -30.0
    full, dropped = Tracker(), Tracker()
    for i in range(45):
        t = i / FPS
        box = moving_box(t, vx=vx, vy=vy)
        tf = full.update([inst(1, box)], meta(i))
        if i % 3 == 0:  # two of three frames dropped: longer time steps, same motion
            td = dropped.update([inst(1, box)], meta(i))
    v_full, v_drop = np.array(tf[0].velocity), np.array(td[0].velocity)
    np.testing.assert_allclose(v_full, [vx, vy], atol=2.0)
    np.testing.assert_allclose(v_drop, [vx, vy], atol=2.0)
    np.testing.assert_allclose(v_full, v_drop, atol=2.0)


def test_same_class_matching_only():
    tr = Tracker(confirm_hits=1)
    (a,) = tr.update([inst(1, moving_box(0), cls=8)], meta(0))
    (b,) = tr.update([inst(1, moving_box(1 / FPS), cls=9)], meta(1))
    assert a.track_id != b.track_id and b.class_id == 9


def test_low_score_detections_extend_tracks_but_never_start_them():
    tr = Tracker(high_score=0.5, low_score=0.1)
    t = None
    for i in range(5):
        (t,) = tr.update([inst(1, moving_box(i / FPS))], meta(i)) or [None]
    assert t is not None
    (t2,) = tr.update([inst(3, moving_box(5 / FPS), score=0.3)], meta(5))
    assert t2.track_id == t.track_id and t2.instance_index == 3
    fresh = Tracker(high_score=0.5, low_score=0.1, confirm_hits=1)
    assert fresh.update([inst(1, moving_box(0), score=0.3)], meta(0)) == [] and fresh.num_tracks == 0


def test_lost_tracks_are_removed_after_max_lost_frames():
    tr = Tracker(confirm_hits=1, max_lost_frames=3)
    (t,) = tr.update([inst(1, moving_box(0, vx=0))], meta(0))
    for i in range(1, 5):
        tr.update([], meta(i))
    assert tr.num_tracks == 0
    (t2,) = tr.update([inst(1, moving_box(0, vx=0))], meta(5))
    assert t2.track_id != t.track_id


def test_timestamps_going_backwards_is_an_error():
    tr = Tracker()
    tr.update([], meta(5))
    with pytest.raises(DataError):
        tr.update([], meta(4))


def test_bad_settings_raise_config_error():
    with pytest.raises(ConfigError):
        Tracker(low_score=0.6, high_score=0.5)
    with pytest.raises(ConfigError):
        Tracker(clock="frames")


def test_masks_are_used_and_instance_map_relabelled():
    h, w = 120, 200
    tr = Tracker(confirm_hits=1)
    for i in range(6):
        m = np.zeros((h, w), np.uint16)
        x = 20 + 5 * i
        m[30:60, x : x + 30] = 1
        m[70:100, 150 - 5 * i : 180 - 5 * i] = 2
        dets = [inst(1, (x, 30, x + 30, 60)), inst(2, (150 - 5 * i, 70, 180 - 5 * i, 100))]
        before = m.copy()
        tracks = tr.update(dets, meta(i), m)
        np.testing.assert_array_equal(m, before)
    out = relabel_instance_map(m, tracks)
    by_index = {t.instance_index: t.track_id for t in tracks}
    assert out.dtype == np.uint16
    assert set(np.unique(out)) == {0, by_index[1], by_index[2]}
    np.testing.assert_array_equal(out == by_index[1], m == 1)
    # instances without a reported track disappear from the published map
    assert not relabel_instance_map(m, [t for t in tracks if t.instance_index == 1])[m == 2].any()
