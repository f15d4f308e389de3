"""Counting lines and zones (perception.analytics): crossings of known paths, occupancy, bad configuration."""

from __future__ import annotations

import numpy as np
import pytest

from perception.analytics import Counter, counts_from_header, counts_to_header, points_in_polygon, segments_cross
from perception.config import parse_config
from perception.errors import ConfigError
from perception.types import ClassInfo, FrameMeta, FrameResult, Track, TrackState

PED, CAR = 9, 8


def _classes():
    names = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
             "Bicyclist"]
    return tuple(ClassInfo(id=i, name=n, color=(0, 0, 0), is_thing=i >= 8) for i, n in enumerate(names))


def _track(tid: int, cls: int, foot: tuple[float, float], matched: bool = True) -> Track:
    x, y = foot
    return Track(track_id=tid, instance_index=tid if matched else 0, class_id=cls, score=0.9,
                 box=(x - 10, y - 40, x + 10, y), velocity=(0.0, 0.0), age=1, hits=1, state=TrackState.CONFIRMED)


def _config(**analytics):
    return parse_config({"analytics": analytics}).analytics


def test_segments_cross_both_ways():
    line = np.array([[100.0, 0.0], [100.0, 200.0]])  # A above, B below: its right (on the image) is x < 100
    p0 = np.array([[150, 50], [50, 50], [150, 50], [150, 250], [110, 50], [100, 50]], float)
    p1 = np.array([[50, 50], [150, 50], [120, 60], [50, 250], [100, 50], [90, 50]], float)
    # left->right, right->left, no crossing, beyond B's end, stopping on the line (counts as its right side),
    # then going on from it to the right: one crossing in all
    assert segments_cross(p0, p1, line).tolist() == [1, -1, 0, 0, 1, 0]


def test_points_in_polygon():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    assert points_in_polygon(np.array([[5, 5], [15, 5], [-1, -1], [9.9, 0.1]]), square).tolist() == [True, False,
                                                                                                   False, True]


def test_crossings_counted_by_class_and_direction_for_known_paths():
    cfg = _config(lines=[{"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]], "directions": ["westward", "eastward"]}])
    counter = Counter(cfg, _classes())
    size = (200, 100)  # the line is x = 100
    # person 1 walks west (x 180 -> 20), person 2 east (20 -> 180), car 3 west, person 4 stays east of the line,
    # person 5 walks west but is hidden (coasting) while crossing: counted once, when seen again
    for i in range(9):
        x_w, x_e = 180 - 20 * i, 20 + 20 * i
        tracks = [_track(1, PED, (x_w, 60)), _track(2, PED, (x_e, 70)), _track(3, CAR, (x_w, 90)),
                  _track(4, PED, (150 + (i % 2) * 10, 50)), _track(5, PED, (x_w, 40), matched=i not in (3, 4, 5))]
        a = counter.update(size=size, tracks=tracks)
    (gate,) = a.lines
    assert gate.directions == ("westward", "eastward")
    assert gate.counts[0] == {PED: 2, CAR: 1} and gate.counts[1] == {PED: 1}
    assert gate.points == ((100.0, 0.0), (100.0, 100.0))
    # walking back east: person 1 now counts eastward too (cumulative)
    for x in (20, 60, 120):
        a = counter.update(size=size, tracks=[_track(1, PED, (x, 60))])
    assert a.lines[0].counts[1] == {PED: 2}


def test_line_classes_filter():
    cfg = _config(lines=[{"name": "g", "points": [[0.5, 0.0], [0.5, 1.0]], "classes": ["Pedestrian"]}])
    counter = Counter(cfg, _classes())
    for x in (150, 50):
        a = counter.update(size=(200, 100), tracks=[_track(1, PED, (x, 60)), _track(2, CAR, (x, 80))])
    assert a.lines[0].counts == ({PED: 1}, {})


def test_zone_occupancy_per_frame():
    cfg = _config(zones=[{"name": "door", "units": "pixels", "points": [[0, 0], [100, 0], [100, 100], [0, 100]]}],
                  anchor="foot")
    counter = Counter(cfg, _classes())
    tracks = [_track(1, PED, (50, 90)), _track(2, PED, (60, 99)), _track(3, CAR, (50, 50)),
              _track(4, PED, (150, 50)), _track(5, PED, (50, 120))]  # 4 and 5 stand outside
    a = counter.update(size=(200, 150), tracks=tracks)
    assert a.zones[0].name == "door" and a.zones[0].counts == {PED: 2, CAR: 1}
    lost = [Track(track_id=1, instance_index=0, class_id=PED, score=0.5, box=(40, 50, 60, 90), velocity=(0, 0),
                  age=3, hits=2, state=TrackState.LOST)]
    assert counter.update(size=(200, 150), tracks=lost).zones[0].counts == {}
    # tracking off: occupancy from the instances
    from perception.types import Instance

    inst = [Instance(index=1, class_id=PED, score=0.9, box=(40, 50, 60, 90), area=10, centroid=(50, 70))]
    assert counter.update(size=(200, 150), tracks=None, instances=inst).zones[0].counts == {PED: 1}


@pytest.mark.parametrize("analytics, key", [
    ({"lines": [{"name": "a", "points": [[0.1, 0.5]]}]}, "analytics.lines.0.points"),
    ({"lines": [{"name": "a", "points": [[0.1, 0.5], [1.5, 0.5]]}]}, "analytics.lines.0.points"),
    ({"lines": [{"name": "a", "units": "pixels", "points": [[10, 10], [-5, 10]]}]}, "analytics.lines.0.points"),
    ({"zones": [{"name": "z", "points": [[0, 0], [1, 1]]}]}, "analytics.zones.0.points"),
    ({"zones": [{"name": "z", "points": [[0, 0], [1, 0], [1, 2]]}]}, "analytics.zones.0.points"),
    ({"zones": [{"name": "z", "points": [[0, 0], [1, 0], [1, 1]], "shape": 1}]}, "analytics.zones.0.shape"),
])
def test_bad_lines_and_zones_are_refused_with_the_key_named(analytics, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config({"analytics": analytics})


def test_pixel_points_outside_a_camera_frame_and_unknown_classes_are_refused():
    cfg = _config(lines=[{"name": "a", "units": "pixels", "points": [[10, 10], [700, 10]]}])
    counter = Counter(cfg, _classes())
    with pytest.raises(ConfigError, match=r"analytics\.lines\.0\.points.*640x480 frame of camera cam0"):
        counter.update(size=(640, 480), tracks=[], camera="cam0")
    counter.update(size=(768, 576), tracks=[])  # fits this one
    with pytest.raises(ConfigError, match=r"analytics\.zones\.0\.classes.*'Dog'"):
        Counter(_config(zones=[{"name": "z", "points": [[0, 0], [1, 0], [1, 1]], "classes": ["Dog"]}]), _classes())


def test_counts_travel_in_the_message_header():
    from perception.transport.wire import MessageDecoder, MessageEncoder

    cfg = _config(lines=[{"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}],
                  zones=[{"name": "all", "points": [[0, 0], [1, 0], [1, 1], [0, 1]]}])
    counter = Counter(cfg, _classes())
    for x in (30, 10):
        a = counter.update(size=(40, 30), tracks=[_track(1, PED, (x, 20))])
    header = counts_to_header(a)
    assert header["lines"][0]["n"] == [[[PED, 1]], []] and header["zones"][0]["occ"] == [[PED, 1]]
    meta = FrameMeta(seq=0, camera_id="c", frame_index=0, t_mono_ns=1, t_wall_ns=1, pts_ns=0, width=40, height=30)
    result = FrameResult(meta=meta, labels=np.zeros((30, 40), np.uint8), analytics=a)
    frames = MessageEncoder(preview="none").encode_labels(result, seq=0, t_publish_wall_ns=2)
    msg = MessageDecoder().decode_labels(frames)
    assert msg.counts == a
    assert counts_from_header({}) is None
    plain = MessageEncoder(preview="none").encode_labels(FrameResult(meta=meta, labels=result.labels), seq=1,
                                                         t_publish_wall_ns=2)
    assert MessageDecoder().decode_labels(plain).counts is None
