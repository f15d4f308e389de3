"""Health of a running pipeline: the watchdog, the restart budget, and the status everyone can see.

* **Watchdog**: every stage shows signs of life — a capture's heartbeat (written while it delivers
  frames, or waits on purpose: pacing, a free slot, a source that is reconnecting), the core stages'
  loop heartbeats. A stage silent for ``runtime.watchdog_s`` is hung.
* **Restarts**: ``runtime.restart: on-failure`` starts a hung or crashed stage again, at most
  ``runtime.max_restarts`` times within ``runtime.restart_window_s`` (:class:`RestartBudget`).
* **Status**: :func:`status_body` is the ``<topic>/status`` message (docs/wire-format.md).
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from perception.redact import redact
from perception.runtime import stagekit
from perception.runtime.protocol import CORE_BEATS, SOURCE_STATES, Counter

if TYPE_CHECKING:
    from perception.runtime.streams import Stream


class RestartBudget:
    """At most ``limit`` restarts within any ``window_s`` seconds."""

    def __init__(self, *, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_ns = int(window_s * 1e9)
        self._times: deque[int] = deque()
        self.total = 0

    def allow(self) -> bool:
        """Take one restart if the budget has one (and count it)."""
        now = time.monotonic_ns()
        while self._times and now - self._times[0] > self.window_ns:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        self.total += 1
        return True


def silent_s(beat_ns: int, now_ns: int) -> float:
    """Seconds since a heartbeat (0 before the first one: not started yet is not hung)."""
    return (now_ns - beat_ns) / 1e9 if beat_ns else 0.0


def hung_core(beats, watchdog_s: float, now_ns: int) -> tuple[str, float] | None:
    """The first core stage silent for longer than ``watchdog_s``, with how long; None when all live."""
    for stage, i in CORE_BEATS.items():
        quiet = silent_s(int(beats[i]), now_ns)
        if quiet > watchdog_s:
            return stage, quiet
    return None


def capture_silence(counters, stream: Stream, now_ns: int) -> float:
    return silent_s(stagekit.read_counters(counters, stream.row)["beat_ns"], now_ns)


def stream_status(stream: Stream, counters, now_ns: int, last_frame_ns: int | None) -> dict[str, Any]:
    """One stream's entry of the status message."""
    c = stagekit.read_counters(counters, stream.row)
    source_state = SOURCE_STATES[c["source_state"]] if 0 <= c["source_state"] < len(SOURCE_STATES) else "live"
    state = stream.state
    if state == "live" and source_state in ("reconnecting", "starting"):
        state = source_state
    return {
        "id": stream.camera_id,
        "uri": redact(stream.source.uri),
        "state": state,
        "mode": stream.info.mode if stream.info else None,
        "frames_in": c["captured"],
        "frames_out": c["published"],
        "dropped": {k: c[k] for k in ("dropped_capture", "dropped_post", "dropped_stale", "source_dropped")},
        "behind": c["dropped_publish"],
        "skipped": c["skipped"],
        "reconnects": c["reconnects"],
        "restarts": stream.restarts,
        "truncated": bool(c["truncated"]),
        "age_s": round((now_ns - last_frame_ns) / 1e9, 3) if last_frame_ns else None,
        "error": redact(stream.error),
    }


def status_body(*, state: str, uptime_s: float, restarts: int, streams: list[dict], stages: dict) -> dict:
    """The ``<topic>/status`` message body (the publisher adds ``v``, ``vmin``, ``kind``, ``sid``, ``t_pub_wall``)."""
    return {"state": state, "uptime_s": round(uptime_s, 3), "restarts": restarts, "streams": streams,
            "stages": stages}


__all__ = ["Counter", "RestartBudget", "capture_silence", "hung_core", "silent_s", "status_body", "stream_status"]
