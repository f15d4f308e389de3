"""Helpers for the transport tests: a class table, frame metadata, realistic label maps, polling."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from perception.types import ClassInfo, FrameMeta, Track, TrackState

CLASSES = (
    ClassInfo(id=0, name="sky", color=(128, 128, 128), is_thing=False),
    ClassInfo(id=1, name="road", color=(128, 64, 128), is_thing=False),
    ClassInfo(id=2, name="car", color=(64, 0, 128), is_thing=True),
    ClassInfo(id=3, name="pedestrian", color=(64, 64, 0), is_thing=True),
)


def make_meta(i: int, width: int = 64, height: int = 48, camera_id: str = "cam0") -> FrameMeta:
    return FrameMeta(
        seq=i, camera_id=camera_id, frame_index=100 + i, t_mono_ns=time.monotonic_ns(),
        t_wall_ns=time.time_ns(), pts_ns=i * 33_333_333, width=width, height=height,
    )


def make_labels(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """A street-like label map (sky, road, a moving car, a pedestrian) that changes with ``i``."""
    lab = np.zeros((height, width), np.uint8)
    lab[height // 2:] = 1
    x = (i * 3) % max(1, width - width // 4)
    lab[height // 2 - height // 8: height // 2 + height // 8, x: x + width // 4] = 2
    lab[height // 3: height // 2, width - 6: width - 3] = 3
    lab[0, 0] = 255  # an id outside the class table (ignore)
    return lab


def make_instances(labels: np.ndarray) -> np.ndarray:
    inst = np.zeros(labels.shape, np.uint16)
    inst[labels == 2] = 1
    inst[labels == 3] = 2
    inst[-1, -1] = 65535  # the top of the uint16 range survives the trip
    return inst


def make_tracks() -> tuple[Track, ...]:
    return (
        Track(track_id=7, instance_index=1, class_id=2, score=0.9, box=(1.0, 2.0, 17.0, 30.0),
              velocity=(3.5, -1.0), age=5, hits=4, state=TrackState.CONFIRMED,
              extra={"area": 123, "centroid": (9.0, 16.0)}),
        Track(track_id=9, instance_index=0, class_id=3, score=0.4, box=(58.0, 16.0, 61.0, 24.0),
              velocity=(0.0, 0.0), age=2, hits=1, state=TrackState.LOST),
    )


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` until true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)
