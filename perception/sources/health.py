"""What a source says about itself while it runs: its state and its counters.

Every source keeps a :class:`HealthTracker`; :meth:`Source.health() <perception.sources.base.Source.health>`
returns a :class:`SourceHealth` snapshot of it (a small frozen, picklable dataclass), which a runtime can
publish in its status and summary. The tracker is written by the thread that reads the input and read
from any other: each field is one attribute assignment, so a snapshot is never torn in a harmful way
(at worst a counter is one frame behind another).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from perception.redact import redact


class SourceState(str, enum.Enum):
    """Where a source is in its life.

    ``starting`` (opening, waiting for the first frame) → ``live`` (frames flow) ⇄ ``reconnecting``
    (a live input was lost: closed, stalled or refused; it is being reopened) → ``ended`` (the input
    is exhausted or the source was closed) or ``failed`` (it raised :class:`~perception.errors.SourceError`;
    ``last_error`` says why). Replayed inputs go ``starting`` → ``live`` → ``ended``/``failed``.
    """

    STARTING = "starting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceHealth:
    """A snapshot of one source's state and counters (see :class:`SourceState`).

    Attributes:
        state: the state now.
        frames: frames delivered to the consumer.
        grabbed: frames read from the input (live sources; equal to ``frames`` for replays).
        dropped: live frames replaced by a newer one before the consumer took them.
        skipped: frames, images or messages that could not be decoded and were skipped.
        reconnects: successful reopenings of a live input after it was lost.
        losses: times a live input was lost (closed, stalled or refused while running).
        last_frame_age_s: seconds since the newest frame was read (None before the first).
        down_s: seconds the input has been lost (0 unless ``reconnecting``).
        last_error: the latest loss, skip or failure, one line, credentials redacted ("" if none).
        truncated: the input ended early at damage (a truncated bag or clip); what was before the
            damage was delivered.
    """

    state: SourceState
    frames: int = 0
    grabbed: int = 0
    dropped: int = 0
    skipped: int = 0
    reconnects: int = 0
    losses: int = 0
    last_frame_age_s: float | None = None
    down_s: float = 0.0
    last_error: str = ""
    truncated: bool = False


class HealthTracker:
    """The mutable counters behind :class:`SourceHealth`, updated by the source as it reads."""

    def __init__(self) -> None:
        self.state = SourceState.STARTING
        self.frames = 0
        self.grabbed = 0
        self.dropped = 0
        self.skipped = 0
        self.reconnects = 0
        self.losses = 0
        self.truncated = False
        self.last_error = ""
        self.last_frame_mono_ns: int | None = None
        self.down_since_mono_ns: int | None = None

    def frame_read(self, t_mono_ns: int | None = None) -> None:
        """A frame was read from the input (live: grabbed; replay: decoded)."""
        self.grabbed += 1
        self.last_frame_mono_ns = time.monotonic_ns() if t_mono_ns is None else t_mono_ns
        if self.state in (SourceState.STARTING, SourceState.RECONNECTING):
            self.state = SourceState.LIVE
            self.down_since_mono_ns = None

    def skip(self, cause: str) -> None:
        """A frame that could not be decoded was skipped."""
        self.skipped += 1
        self.last_error = redact(cause)

    def lost(self, cause: str) -> None:
        """A live input was lost; it is being reopened."""
        self.last_error = redact(cause)
        if self.state is not SourceState.RECONNECTING:
            self.losses += 1
            self.down_since_mono_ns = time.monotonic_ns()
        self.state = SourceState.RECONNECTING

    def end(self) -> None:
        """The input is exhausted or the source closed (a failure stays a failure)."""
        if self.state is not SourceState.FAILED:
            self.state = SourceState.ENDED

    def fail(self, cause: str) -> None:
        self.state = SourceState.FAILED
        self.last_error = redact(cause)

    def snapshot(self) -> SourceHealth:
        now = time.monotonic_ns()
        last, down = self.last_frame_mono_ns, self.down_since_mono_ns
        return SourceHealth(
            state=self.state,
            frames=self.frames,
            grabbed=self.grabbed,
            dropped=self.dropped,
            skipped=self.skipped,
            reconnects=self.reconnects,
            losses=self.losses,
            last_frame_age_s=None if last is None else (now - last) / 1e9,
            down_s=0.0 if down is None or self.state is not SourceState.RECONNECTING else (now - down) / 1e9,
            last_error=self.last_error,
            truncated=self.truncated,
        )
