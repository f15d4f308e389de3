"""What crosses process boundaries in the pipeline, defined once: slots, work items, control messages.

Frames live in :class:`~perception.runtime.shm.SharedSlots`; queues carry only small :class:`WorkItem`
records (slot index, :class:`FrameMeta`, timings). A slot is owned by exactly one stage at a time and
travels capture → inference → post-processing → back to the free queue.

Drop policies:

* ``every`` (replay): capture waits for a free slot, so every frame is processed.
* ``latest`` (live): when no slot is free, capture takes back the oldest frame still waiting for
  inference (counted as dropped) and reuses its slot; post-processing skips to the newest inferred
  frame. Nothing ever queues without bound: at most ``slots`` frames are in flight.

Stages talk to the supervisor, and the supervisor to them, in the typed messages below (control
messages up, commands down); nothing there is a bare tuple. They travel on the channels of
:mod:`perception.runtime.channels`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from perception.modelcard import ModelCard
from perception.runtime.shm import ArraySpec, SlotsDescriptor
from perception.types import FrameMeta

Mode = Literal["live", "replay"]


class Policy(str, enum.Enum):
    EVERY = "every"
    LATEST = "latest"

    @classmethod
    def for_mode(cls, mode: Mode) -> Policy:
        """``replay`` keeps every frame; ``live`` keeps the latest."""
        return cls.EVERY if mode == "replay" else cls.LATEST


# ------------------------------------------------------------------------------------------ slots
FRAME_KEY = "frame"
"""Slot array holding the captured frame, BGR ``uint8[H, W, 3]`` (a smaller frame uses its top-left)."""
OUTPUT_KEYS: tuple[str, ...] = ("semantic_logits", "center_heatmap", "center_offsets")
"""Slot arrays holding the network outputs (those the model has), named by :attr:`ModelOutputs` field."""


def slot_layout(
    card: ModelCard, *, input_size: tuple[int, int], width: int, height: int
) -> dict[str, tuple[tuple[int, ...], str]]:
    """The arrays of one slot: the full-resolution frame and every network output the card declares.

    Args:
        card: the model's card (its outputs, their strides and channels).
        input_size: ``(width, height)`` of the network input.
        width, height: the frame size the source reported.

    Returns:
        ``{key: (shape, dtype)}`` for :meth:`SharedSlots.create`: ``frame`` ``uint8[height, width, 3]``;
        each output ``float32[C, h, w]`` (``[h, w]`` when ``C == 1``) at the output's stride.
    """
    iw, ih = input_size
    layout: dict[str, tuple[tuple[int, ...], str]] = {FRAME_KEY: ((height, width, 3), "uint8")}
    for o in card.outputs:
        shape = (o.channels, ih // o.stride, iw // o.stride)
        layout[o.kind] = (shape if o.channels > 1 else shape[1:], "float32")
    return layout


@dataclass(slots=True)
class WorkItem:
    """One frame on its way through the stages: which stream and slot, its metadata, its timings."""

    stream: int
    """The stream's number in this run (never reused; see :class:`StreamAdded`)."""
    slot: int
    meta: FrameMeta
    t_slot_ns: int
    """Monotonic time the slot was handed on by the previous stage."""
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """capture → inference → post-processing, after a stream's last frame: the input ran out."""

    stream: int


class Counter(enum.IntEnum):
    """Indices of the shared int64 counters of one stream (each written by one process only)."""

    CAPTURED = 0
    DROPPED_CAPTURE = 1
    """Frames that waited for inference while a newer one of the same live stream arrived (skipped)."""
    INFERRED = 2
    PUBLISHED = 3
    DROPPED_POST = 4
    """Frames inferred but skipped by post-processing for a newer one of the same live stream."""
    DROPPED_PUBLISH = 5
    """Frames whose result an output dropped for a slow consumer (the publisher: some reader was full)."""
    SOURCE_DROPPED = 6
    """Frames the source itself skipped (a live grabber keeping only the newest)."""
    SKIPPED = 7
    """Frames, images or messages the source could not decode and skipped."""
    RECONNECTS = 8
    """Times a lost live input was opened again."""
    LOSSES = 9
    """Times a live input was lost (closed, stalled, refused)."""
    SOURCE_STATE = 10
    """The source's state, an index into :data:`SOURCE_STATES`."""
    BEAT_NS = 11
    """Monotonic ns of the capture's last sign of life (a frame, a wait for a slot, a reconnect attempt)."""
    DROPPED_STALE = 12
    """Live frames older than ``runtime.max_age_ms`` when inference or post-processing reached them."""
    TRUNCATED = 13
    """1 when the input ended early at damage (a truncated bag or clip)."""


SOURCE_STATES = ("starting", "live", "reconnecting", "ended", "failed")
CORE_BEATS = {"inference": 0, "postprocess": 1}
"""Index of each core stage's heartbeat (monotonic ns) in :attr:`StageHandles.beats`."""


N_COUNTERS = len(Counter)

# Exit codes: a stage that fails exits with its own code so the supervisor (and a shell) can tell.
STAGE_EXIT_CODES = {"capture": 11, "inference": 12, "postprocess": 13}
Stage = Literal["capture", "inference", "postprocess"]


# ------------------------------------------------------------------------------- control messages
@dataclass(frozen=True, slots=True, kw_only=True)
class SourceInfo:
    """What capture learnt when it opened the source; the mode is decided here, once."""

    width: int
    height: int
    fps: float | None
    """Nominal frame rate, if the input has one."""
    is_live: bool
    length: int | None
    """Frames in the input when known (files, folders, drives), else None."""
    mode: Mode
    """``config.mode`` when set, else ``live`` for live sources and ``replay`` for the rest."""

    @property
    def policy(self) -> Policy:
        return Policy.for_mode(self.mode)


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceOpened:
    """capture → supervisor: the source is open; size the stream's shared memory by ``info``."""

    stream: int
    info: SourceInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    """any stage → supervisor: initialised (model loaded, sinks open; capture: slots attached)."""

    stage: Stage
    stream: int = -1


@dataclass(frozen=True, slots=True, kw_only=True)
class Attached:
    """inference or post-processing → supervisor: the stream's slots are mapped, its state built."""

    stage: Stage
    stream: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StageFailed:
    """any stage → supervisor: the stage (capture: one stream's) failed; ``message`` names the cause."""

    stage: Stage
    message: str
    stream: int = -1


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded:
    """post-processing → supervisor: a stream's last frame went to the sinks."""

    stream: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReport:
    """What post-processing measured for one stream."""

    frames: int
    seconds: float
    latency_ms_p50: float | None
    latency_ms_p99: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StageReport:
    """postprocess → supervisor, once on its way out: what the run published (all streams, and each)."""

    frames: int
    seconds: float
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    stage_ms: dict[str, float]
    streams: dict[str, StreamReport] = field(default_factory=dict)
    """By camera id."""


ControlMessage = SourceOpened | Ready | Attached | StageFailed | StreamEnded | StageReport


# ------------------------------------------------------------------------------------- commands
@dataclass(frozen=True, slots=True, kw_only=True)
class Go:
    """supervisor → a stage: start streaming."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    """supervisor → a stage: stop; ``reason`` is what the sinks tell consumers (``end``/``stopped``)."""

    reason: str = "stopped"


@dataclass(frozen=True, slots=True, kw_only=True)
class Slots:
    """supervisor → a capture: attach the stream's shared memory."""

    descriptor: SlotsDescriptor


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamAdded:
    """supervisor → inference and post-processing: a stream to serve (its slots, its settings)."""

    stream: int
    row: int
    """Its row of the shared counters."""
    camera_id: str
    info: SourceInfo
    descriptor: SlotsDescriptor


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """supervisor → post-processing: the pipeline's health, for sinks that publish it."""

    body: dict


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamRemoved:
    """supervisor → inference and post-processing: forget the stream (its capture is gone)."""

    stream: int


@dataclass
class RunSummary:
    """What :meth:`Pipeline.run` returns (``perception run --json`` prints it)."""

    frames: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    mode: str = "replay"
    streams: dict[str, dict] = field(default_factory=dict)
    """Per stream (by camera id): ``state`` (ended, failed, removed, stopped), ``frames``, ``fps``,
    latencies, ``counters``, and ``error`` for a failed one."""

    def take(self, report: StageReport) -> None:
        """Copy the post-processing stage's report in."""
        self.frames = report.frames
        self.seconds = report.seconds
        self.latency_ms_p50 = report.latency_ms_p50
        self.latency_ms_p99 = report.latency_ms_p99
        self.stage_ms = dict(report.stage_ms)
        for cam, r in report.streams.items():
            entry = self.streams.setdefault(cam, {})
            entry.update(frames=r.frames, seconds=r.seconds, latency_ms_p50=r.latency_ms_p50,
                         latency_ms_p99=r.latency_ms_p99,
                         fps=(r.frames - 1) / r.seconds if r.seconds > 0 and r.frames > 1 else 0.0)


def register_messages() -> None:
    """Make every message type above sendable on the pipeline's channels."""
    from perception.runtime import channels

    channels.register(FrameMeta, WorkItem, EndOfStream, SourceInfo, SourceOpened, Ready, Attached, StageFailed,
                      StreamEnded, StreamReport, StageReport, Go, Stop, Slots, StreamAdded, StreamRemoved, Status,
                      SlotsDescriptor, ArraySpec)


register_messages()
