"""What crosses process boundaries in the pipeline, and the slot protocol.

Frames live in :class:`~perception.runtime.shm.SharedSlots`; queues carry only small
:class:`WorkItem` records (slot index, :class:`FrameMeta`, timings). A slot is owned by exactly one
stage at a time and travels capture → inference → post-processing → back to the free queue.

Drop policies:

* ``every`` (replay): capture waits for a free slot, so every frame is processed.
* ``latest`` (live): when no slot is free, capture takes back the oldest frame still waiting for
  inference (counted as dropped) and reuses its slot; post-processing skips to the newest inferred
  frame. Nothing ever queues without bound: at most ``slots`` frames are in flight.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from perception.types import FrameMeta


class Policy(str, enum.Enum):
    EVERY = "every"
    LATEST = "latest"


@dataclass(slots=True)
class WorkItem:
    slot: int
    meta: FrameMeta
    t_slot_ns: int
    """Monotonic time the frame was in shared memory (capture done)."""
    timings_ms: dict[str, float] = field(default_factory=dict)


EOS = "EOS"
"""End-of-stream marker passed down the queues."""


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
