"""The one protocol every frame source implements, plus small helpers shared by the source modules.

A source yields ``(FrameMeta, frame)`` pairs, ``frame`` being ``uint8[H, W, 3]`` **BGR**. To keep the
capture loop free of per-frame allocations, a source may hand out the *same* array again: a frame is
valid until the consumer asks for the next one (copy it, e.g. into shared memory, before that).

``width``, ``height`` and ``fps`` are known as soon as the constructor returns (the constructor opens
the input and, where needed, reads the first frame), so a runtime can size its shared memory before it
starts iterating. Errors are :class:`~perception.errors.SourceError` with one line naming the input and
the cause.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Protocol, runtime_checkable

import numpy as np

from perception.errors import SourceError
from perception.sources.health import HealthTracker, SourceHealth, SourceState
from perception.types import FrameMeta

FFMPEG_LOG_LEVEL = "8"
"""FFmpeg log level OpenCV applies, unless ``OPENCV_FFMPEG_LOGLEVEL`` is already set (8 = fatal only).

A failed open makes FFmpeg print its own lines ("moov atom not found", "Connection refused") before the
source raises its one-line SourceError; keeping only fatal messages keeps bad-input output to that one
line. Trade-off: FFmpeg's detail is hidden; run with ``OPENCV_FFMPEG_LOGLEVEL=24`` to see its warnings.
OpenCV reads the variable once, when its FFmpeg backend is first used, so this is set at import.
"""
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", FFMPEG_LOG_LEVEL)


@runtime_checkable
class Source(Protocol):
    """A stream of frames from one camera, file, URL, folder, recorded drive or synthetic scene.

    Iterate it once; it stops at the end of the input (files, folders, ``max_frames``) or raises
    :class:`~perception.errors.SourceError` when the input fails (unreadable file, dead camera, lost
    stream). Live sources (``is_live``) never end on their own: the caller closes them.

    The yielded array is ``uint8[height, width, 3]`` BGR and may be overwritten by the source once the
    next frame is requested. Every frame carries a :class:`~perception.types.FrameMeta`: ``seq`` is
    0-based and +1 per delivered frame; ``t_mono_ns``/``t_wall_ns`` are taken at capture (when a live
    frame was grabbed, when a file frame was read); ``pts_ns`` is the position in the stream (the
    container timestamp or ``frame_index / fps`` for files, time since open for live sources).

    Health: :meth:`health` returns a :class:`~perception.sources.health.SourceHealth` snapshot (state
    ``starting``/``live``/``reconnecting``/``ended``/``failed``, frames delivered and read, dropped,
    skipped as undecodable, reconnects, age of the last frame, the last error) that a runtime can
    publish; ``state`` is its state alone. Both are safe to call from another thread while iterating.
    A live source that loses its input reopens it (state ``reconnecting``) per its reconnect policy;
    a replay skips and counts a corrupt frame, image or message instead of ending.

    Classes that subclass this protocol explicitly inherit the context-manager methods and the
    default :meth:`health` (which reads the source's ``_health`` :class:`HealthTracker`).
    """

    camera_id: str
    width: int
    height: int
    fps: float | None
    """Nominal frame rate if known (container rate, requested/reported camera rate), else None."""
    is_live: bool
    """True for cameras and network streams (stale frames are dropped), False for replayable inputs."""

    def __iter__(self) -> Iterator[tuple[FrameMeta, np.ndarray]]: ...

    def close(self) -> None: ...

    def health(self) -> SourceHealth:
        """A snapshot of the source's state and counters."""
        tracker: HealthTracker | None = getattr(self, "_health", None)
        if tracker is None:
            return SourceHealth(state=SourceState.LIVE)
        return tracker.snapshot()

    @property
    def state(self) -> SourceState:
        """The state alone (see :class:`~perception.sources.health.SourceState`)."""
        tracker: HealthTracker | None = getattr(self, "_health", None)
        return SourceState.LIVE if tracker is None else tracker.state

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def make_meta(
    *,
    seq: int,
    camera_id: str,
    frame_index: int,
    pts_ns: int,
    width: int,
    height: int,
    t_mono_ns: int | None = None,
    t_wall_ns: int | None = None,
    t_rec_ns: int = 0,
) -> FrameMeta:
    """Build a :class:`FrameMeta`, stamping ``t_mono_ns``/``t_wall_ns`` with the current time unless given."""
    return FrameMeta(
        seq=seq,
        camera_id=camera_id,
        frame_index=frame_index,
        t_mono_ns=time.monotonic_ns() if t_mono_ns is None else t_mono_ns,
        t_wall_ns=time.time_ns() if t_wall_ns is None else t_wall_ns,
        pts_ns=pts_ns,
        width=width,
        height=height,
        t_rec_ns=t_rec_ns,
    )


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders digit runs by value: ``img2.png`` < ``img10.png``; case-insensitive.

    ``re.split`` with a capturing group alternates text (even positions) and digit runs (odd
    positions), so the key's items always compare like with like. The original name breaks ties.
    """
    parts = re.split(r"(\d+)", name)
    return (tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), name)


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own WARN lines while a capture is opened.

    A failed open makes OpenCV print several backend warnings; the source raises its own one-line
    :class:`SourceError` instead. The previous log level is restored on exit.
    """
    import cv2

    logging_api = cv2.utils.logging
    previous = logging_api.getLogLevel()
    logging_api.setLogLevel(logging_api.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging_api.setLogLevel(previous)


def as_bgr(image: np.ndarray, *, width: int, height: int, out: np.ndarray) -> np.ndarray:
    """Bring a decoded image to ``uint8[height, width, 3]`` BGR, writing into ``out`` when it must change.

    Args:
        image: decoded image, ``uint8[h, w]`` (grey), ``uint8[h, w, 3]`` (BGR) or ``uint8[h, w, 4]`` (BGRA).
        width, height: wanted size in pixels.
        out: ``uint8[height, width, 3]`` buffer used for conversions and resizes (not reallocated).

    Returns:
        ``image`` itself when it is already right, else ``out`` filled with the converted image.
        ``image`` is never modified.
    """
    if image.dtype != np.uint8:
        raise SourceError(f"decoded image has dtype {image.dtype}; expected uint8 (8-bit) pixels")
    import cv2

    same_size = image.shape[0] == height and image.shape[1] == width
    if image.ndim == 2 or image.shape[2] in (1, 4):
        code = cv2.COLOR_BGRA2BGR if image.ndim == 3 and image.shape[2] == 4 else cv2.COLOR_GRAY2BGR
        if same_size:
            cv2.cvtColor(image, code, dst=out)
            return out
        image = cv2.cvtColor(image, code)
    if not same_size:
        cv2.resize(image, (width, height), dst=out, interpolation=cv2.INTER_AREA)
        return out
    return image
