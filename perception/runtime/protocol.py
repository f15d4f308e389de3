"""What crosses process boundaries in the pipeline, defined once: slots, work items, control messages.

Frames live in :class:`~perception.runtime.shm.SharedSlots`; queues carry only small :class:`WorkItem`
records (slot index, :class:`FrameMeta`, timings). A slot is owned by exactly one stage at a time and
travels capture → inference → post-processing → back to the free queue.

Drop policies:

* ``every`` (replay): capture waits for a free slot, so every frame is processed.
* ``latest`` (live): when no slot is free, capture takes back the oldest frame still waiting for
  inference (counted as dropped) and reuses its slot; post-processing skips to the newest inferred
  frame. Nothing ever queues without bound: at most ``slots`` frames are in flight.

Stages talk to the supervisor over one control queue, in the typed messages below
(:class:`SourceOpened`, :class:`StageFailed`, :class:`StageReport`); nothing there is a bare tuple.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from perception.modelcard import ModelCard
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
    slot: int
    meta: FrameMeta
    t_slot_ns: int
    """Monotonic time the slot was handed on by the previous stage."""
    timings_ms: dict[str, float] = field(default_factory=dict)


EOS = "EOS"
"""End-of-stream marker passed down the data queues."""


class Counter(enum.IntEnum):
    """Indices of the shared int64 counters (each written by one process only)."""

    CAPTURED = 0
    DROPPED_CAPTURE = 1
    INFERRED = 2
    PUBLISHED = 3
    DROPPED_POST = 4
    DROPPED_PUBLISH = 5
    SOURCE_DROPPED = 6


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
    """capture → supervisor: the source is open; size the shared memory by ``info``."""

    info: SourceInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class StageFailed:
    """any stage → supervisor: the stage failed; ``message`` is one line naming the cause."""

    stage: Stage
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StageReport:
    """postprocess → supervisor, once on its way out: what the run published."""

    frames: int
    seconds: float
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    stage_ms: dict[str, float]


ControlMessage = SourceOpened | StageFailed | StageReport


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

    def take(self, report: StageReport) -> None:
        """Copy the post-processing stage's report in."""
        self.frames = report.frames
        self.seconds = report.seconds
        self.latency_ms_p50 = report.latency_ms_p50
        self.latency_ms_p99 = report.latency_ms_p99
        self.stage_ms = dict(report.stage_ms)
