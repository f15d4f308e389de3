"""The supervisor's table of streams: each one's capture process, shared memory and state."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from perception.config import SourceConfig
from perception.runtime.protocol import SourceInfo

log = logging.getLogger(__name__)

StreamState = Literal["starting", "ready", "live", "ended", "failed", "removed", "restarting", "stopped"]
"""``starting``: its capture is opening the source; ``ready``: slots mapped by all three stages, waiting
for the pipeline to go; ``live``: frames flowing; then one of ``ended`` (the input ran out), ``failed``
(the source failed; ``error`` says why), ``removed`` (by ``perception streams remove``)."""

ACTIVE: tuple[str, ...] = ("starting", "ready", "live")


@dataclass
class Stream:
    """One stream of the run."""

    number: int
    """Its number in this run (never reused, so late messages of a removed stream are recognised)."""
    row: int
    """Its row of the shared counters (reused once the stream is gone)."""
    source: SourceConfig
    process: object = None
    info: SourceInfo | None = None
    slots: object = None
    """Its :class:`~perception.runtime.shm.SharedSlots` (owned here)."""
    state: StreamState = "starting"
    error: str = ""
    attached: set[str] = field(default_factory=set)
    """Stages that have mapped its slots (capture, inference, postprocess)."""
    restarts: int = 0
    """Times its capture was started again (it hung or died)."""

    @property
    def camera_id(self) -> str:
        return self.source.camera_id or f"stream{self.number}"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def release(self) -> None:
        """Close its shared memory (the stages have detached or are gone)."""
        if self.slots is not None:
            self.slots.close()
            self.slots = None


class StreamTable:
    """Streams by number, with their counter rows handed out and taken back."""

    def __init__(self, *, max_streams: int) -> None:
        self.max_streams = max_streams
        self.by_number: dict[int, Stream] = {}
        self._next = 0

    def __iter__(self):
        return iter(list(self.by_number.values()))

    def get(self, number: int) -> Stream | None:
        return self.by_number.get(number)

    def by_id(self, camera_id: str) -> Stream | None:
        return next((s for s in self.by_number.values() if s.camera_id == camera_id and s.active), None)

    def active(self) -> list[Stream]:
        return [s for s in self.by_number.values() if s.active]

    def add(self, source: SourceConfig) -> Stream:
        """A new stream for ``source`` (its id and mode resolved); raises ValueError when it cannot be had."""
        if self.by_id(source.camera_id) is not None:
            raise ValueError(f"a stream with id {source.camera_id!r} is already running")
        used = {s.row for s in self.active()}
        free = [r for r in range(self.max_streams) if r not in used]
        if not free:
            raise ValueError(f"already {self.max_streams} streams (runtime.max_streams)")
        stream = Stream(number=self._next, row=free[0], source=source)
        self._next += 1
        self.by_number[stream.number] = stream
        return stream

    def next_id(self) -> str:
        """The first ``camN`` no active stream uses."""
        taken = {s.camera_id for s in self.active()}
        return next(f"cam{i}" for i in range(len(taken) + 1) if f"cam{i}" not in taken)


def describe(stream: Stream, counters) -> dict:
    """A stream as ``perception streams list`` shows it."""
    from perception.runtime.stagekit import read_counters

    info = stream.info
    return {
        "id": stream.camera_id, "uri": stream.source.uri, "state": stream.state, "error": stream.error,
        "mode": info.mode if info else None, "width": info.width if info else None,
        "height": info.height if info else None, "fps": info.fps if info else None,
        "frames": read_counters(counters, stream.row)["published"],
    }
