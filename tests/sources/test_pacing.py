"""Pacer: deadlines from the source's own pts at speed 1.0 and 4.0, no drift, no sleep when late."""

from __future__ import annotations

import itertools
import time

import pytest

from perception.errors import ConfigError
from perception.sources import Pacer, VideoFileSource
from tests.sources.media import write_video


@pytest.fixture()
def video_pts(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames=12, fps=25.0)
    with VideoFileSource(path) as src:
        return [meta.pts_ns for meta, _ in src]


@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_deadlines_follow_recorded_rate_times_speed(video_pts, speed):
    assert video_pts[:3] == [0, 40_000_000, 80_000_000]  # 25 fps as recorded
    pacer = Pacer(speed=speed)
    anchor = 1_000_000_000_000
    pacer.start(video_pts[0], now_ns=anchor)
    deadlines = [pacer.deadline_ns(p) for p in video_pts]
    assert deadlines == [anchor + round(p / speed) for p in video_pts]
    gaps = {b - a for a, b in itertools.pairwise(deadlines)}
    assert gaps == {round(40_000_000 / speed)}


def test_anchor_is_the_first_frame_not_zero():
    pacer = Pacer(speed=2.0)
    pacer.start(5_000_000_000, now_ns=100)
    assert pacer.deadline_ns(5_000_000_000) == 100
    assert pacer.deadline_ns(6_000_000_000) == 100 + 500_000_000
    assert pacer.deadline_ns(4_000_000_000) == 100 - 500_000_000  # before the anchor: already due


def test_unpaced_never_sleeps():
    for speed in (None, 0, 0.0):
        pacer = Pacer(speed=speed)
        assert pacer.speed is None
        assert pacer.wait(0) == 0 and pacer.wait(10**12) == 0
        assert pacer.deadline_ns(10**12) is None


def test_first_wait_anchors_without_sleeping():
    pacer = Pacer(speed=1.0)
    assert not pacer.started
    assert pacer.wait(7_000_000_000) == 0
    assert pacer.started


def test_late_frame_is_not_slept_for():
    pacer = Pacer(speed=1.0)
    pacer.start(0, now_ns=time.monotonic_ns() - 10_000_000_000)  # anchored 10 s ago
    assert pacer.wait(1_000_000_000) == 0  # due 9 s ago


def test_future_frame_sleeps_until_its_deadline_without_drift():
    pacer = Pacer(speed=1.0)
    pacer.start(0)
    before = [pacer.deadline_ns(p) for p in (200_000_000, 400_000_000)]
    slept = pacer.wait(200_000_000)
    assert 0 < slept <= 200_000_000
    assert time.monotonic_ns() >= before[0]
    # Sleeping (and oversleeping) on one frame never moves the next frame's deadline.
    assert pacer.deadline_ns(400_000_000) == before[1]


def test_reset_reanchors():
    pacer = Pacer(speed=1.0)
    pacer.start(0, now_ns=0)
    pacer.reset()
    assert not pacer.started
    with pytest.raises(RuntimeError, match="before start"):
        pacer.deadline_ns(0)
    pacer.start(3_000_000_000, now_ns=50)
    assert pacer.deadline_ns(3_500_000_000) == 50 + 500_000_000


@pytest.mark.parametrize("speed", [-1.0, float("nan"), float("inf")])
def test_bad_speed(speed):
    with pytest.raises(ConfigError, match="speed"):
        Pacer(speed=speed)
