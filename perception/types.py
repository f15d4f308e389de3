"""Small frozen value types shared across stages.

Conventions used everywhere in the package:

* images are ``uint8[H, W, 3]`` in **BGR** order (OpenCV's), row-major, ``(y, x)`` indexing;
* label maps are ``uint8[H, W]`` of class ids; instance maps are ``uint16[H, W]`` (0 = no instance);
* boxes are ``(x0, y0, x1, y1)`` in pixels of the full-resolution frame, ``x1``/``y1`` exclusive;
* times are integer nanoseconds: ``t_mono_ns`` from ``time.monotonic_ns()`` on this host,
  ``t_wall_ns`` from ``time.time_ns()``, both taken at the same moment (see :class:`FrameMeta`);
  ``t_rec_ns`` is a recorded drive's own stamp.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameMeta:
    """What is known about one captured frame. Crosses process boundaries (it is small)."""

    seq: int
    """Per-camera sequence number, 0-based, +1 for every frame the source delivered (gaps = drops)."""
    camera_id: str
    """Which camera (or recorded topic) the frame came from."""
    frame_index: int
    """Index of the frame within its source: the file's frame number (restarting when a file loops),
    or for live sources the count of frames grabbed, so ``frame_index - seq`` = frames dropped at capture."""
    t_mono_ns: int
    """When the frame entered the pipeline, on this host's monotonic clock (``time.monotonic_ns()``):
    when a live frame was grabbed; when a paced replay frame was due (its place in the schedule, even
    if capture released it later); when an unpaced replay frame got its slot. Latency counts from here."""
    t_wall_ns: int
    """The same moment as ``t_mono_ns`` on the wall clock (``time.time_ns()``)."""
    pts_ns: int
    """Presentation time since the start of the stream, for pacing replays at the recorded rate."""
    width: int
    height: int
    t_rec_ns: int = 0
    """A recorded drive's own stamp of the frame (header stamp, else log time), ns since the epoch;
    0 for inputs that carry none (cameras, files, folders, synthetic scenes)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassInfo:
    """One entry of a model's class table."""

    id: int
    name: str
    color: tuple[int, int, int]
    """Display colour, **RGB** order (as in data set documentation)."""
    is_thing: bool
    """True for countable objects that get instance ids (car, pedestrian), False for stuff (road)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorSpec:
    """A tensor a backend consumes or produces. ``None`` in ``shape`` is a dynamic dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    """numpy dtype name, e.g. ``"float32"``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    """One detected object instance in one frame (panoptic grouping output)."""

    index: int
    """Its id in this frame's instance map (1..K); 0 is never an instance."""
    class_id: int
    score: float
    box: tuple[float, float, float, float]
    """``(x0, y0, x1, y1)`` in full-resolution pixels, ``x1``/``y1`` exclusive."""
    area: int
    """Pixels in the full-resolution mask."""
    centroid: tuple[float, float]
    """``(x, y)`` mean pixel position of the mask, full resolution."""


class TrackState(enum.IntEnum):
    TENTATIVE = 0
    CONFIRMED = 1
    LOST = 2
    REMOVED = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Track:
    """A tracked object as reported after one tracker update."""

    track_id: int
    """Unique within the tracker that made it; never reused."""
    instance_index: int
    """``Instance.index`` of the detection matched this frame, or 0 when not matched (coasting)."""
    class_id: int
    score: float
    box: tuple[float, float, float, float]
    velocity: tuple[float, float]
    """``(vx, vy)`` in full-resolution pixels per second, from capture timestamps."""
    age: int
    """Frames since the track was born (including this one)."""
    hits: int
    """Frames in which the track was matched to a detection."""
    state: TrackState
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class FrameResult:
    """Everything the pipeline produced for one frame: what post-processing hands to every sink.

    The arrays are **borrowed**: ``frame`` is a view of a shared-memory slot and ``labels`` /
    ``instance_map`` may be reused buffers, all valid only while a sink's ``write(result)`` runs. A sink
    that keeps anything past that call copies it.
    """

    meta: FrameMeta
    labels: np.ndarray
    """``uint8[H, W]`` class ids at the frame's full resolution (``meta.height`` × ``meta.width``)."""
    instance_map: np.ndarray | None = None
    """``uint16[H, W]``: each pixel the ``Instance.index`` (1..K) of the instance it belongs to, 0 for
    none; None when the model has no instance outputs or grouping is off."""
    instances: tuple[Instance, ...] = ()
    """This frame's instances, ``instances[k].index == k + 1``."""
    tracks: tuple[Track, ...] = ()
    """The tracker's report for this frame; ``Track.instance_index`` points into ``instance_map``
    (0 for a track not matched this frame)."""
    latencies_ms: Mapping[str, float] = field(default_factory=dict)
    """Per-stage times in milliseconds (``capture``, ``inference``, ``upsample``, ``post``, ...)."""
    frame: np.ndarray | None = None
    """The captured frame, BGR ``uint8[H, W, 3]``, for previews and overlays."""
    analytics: Analytics | None = None
    """Zone occupancy and line crossings of this camera (None when no lines or zones are configured)."""

    @property
    def camera_id(self) -> str:
        return self.meta.camera_id


@dataclass(frozen=True, slots=True, kw_only=True)
class LineCount:
    """Cumulative crossings of one counting line since the camera's first frame."""

    name: str
    directions: tuple[str, str]
    """Names of the two directions (left-to-right of the line's A→B as seen on the image, then back)."""
    counts: tuple[Mapping[int, int], Mapping[int, int]]
    """Per direction (same order), class id → tracks that crossed that way."""
    points: tuple[tuple[float, float], ...] = ()
    """The line's points ``(x, y)`` in this camera's full-resolution pixels, A first (for drawing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneCount:
    """Occupancy of one counting zone in this frame."""

    name: str
    counts: Mapping[int, int]
    """Class id → tracks whose anchor point is inside the zone now."""
    points: tuple[tuple[float, float], ...] = ()
    """The polygon's corners ``(x, y)`` in full-resolution pixels (for drawing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Analytics:
    """One camera's counts after one frame (``analytics:`` configuration; :mod:`perception.analytics`)."""

    zones: tuple[ZoneCount, ...] = ()
    lines: tuple[LineCount, ...] = ()
