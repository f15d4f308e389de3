"""Release replayed frames at the recorded rate × speed.

The schedule is anchored at the first frame: frame ``k`` is due at
``start_mono_ns + (pts_k - pts_0) / speed``. Each deadline is computed from that anchor, never from the
previous frame, so sleeping a little too long on one frame does not shift every later frame (no drift),
and a frame that is already late is released at once (no sleep) so a slow consumer catches up.
"""

from __future__ import annotations

import time

from perception.errors import ConfigError


class Pacer:
    """Sleeps so that frames are released at the recorded rate × ``speed``.

    Args:
        speed: playback speed relative to the recorded rate (1.0 = real time, 4.0 = four times
            faster, 0.5 = half speed). ``None`` or ``0`` releases frames as fast as possible.

    Use one pacer per pass over a stream; :meth:`reset` re-anchors it (e.g. when a replay restarts
    with timestamps that go back to zero).
    """

    def __init__(self, *, speed: float | None) -> None:
        if speed is not None and (speed < 0 or speed != speed or speed == float("inf")):
            raise ConfigError(f"pacing speed must be a finite number >= 0 (0 or None = unpaced), got {speed!r}")
        self.speed: float | None = speed if speed else None
        self._start_mono_ns: int | None = None
        self._start_pts_ns: int = 0

    @property
    def started(self) -> bool:
        """Whether the schedule is anchored (the first frame was seen)."""
        return self._start_mono_ns is not None

    def start(self, pts_ns: int, *, now_ns: int | None = None) -> None:
        """Anchor the schedule: the frame with ``pts_ns`` is due at ``now_ns`` (default: now, monotonic ns)."""
        self._start_mono_ns = time.monotonic_ns() if now_ns is None else now_ns
        self._start_pts_ns = pts_ns

    def reset(self) -> None:
        """Forget the anchor; the next :meth:`wait` anchors the schedule again."""
        self._start_mono_ns = None
        self._start_pts_ns = 0

    def deadline_ns(self, pts_ns: int) -> int | None:
        """Monotonic time (ns) at which the frame with ``pts_ns`` is due; None when unpaced.

        Pure given the anchor: ``start_mono_ns + (pts_ns - start_pts_ns) / speed``. A pts before the
        anchor's gives a deadline in the past (released at once).

        Raises:
            RuntimeError: when called before the schedule was anchored (:meth:`start` or :meth:`wait`).
        """
        if self.speed is None:
            return None
        if self._start_mono_ns is None:
            raise RuntimeError("Pacer.deadline_ns() called before start() or the first wait()")
        return self._start_mono_ns + round((pts_ns - self._start_pts_ns) / self.speed)

    def wait(self, pts_ns: int) -> int:
        """Block until the frame with ``pts_ns`` is due; the first call anchors the schedule.

        Returns:
            How long it slept, in ns (0 when unpaced, for the first frame, or when the frame is late).
        """
        if self.speed is None:
            return 0
        if self._start_mono_ns is None:
            self.start(pts_ns)
            return 0
        deadline = self._start_mono_ns + round((pts_ns - self._start_pts_ns) / self.speed)
        remaining = deadline - time.monotonic_ns()
        if remaining <= 0:
            return 0
        time.sleep(remaining / 1e9)
        return remaining
