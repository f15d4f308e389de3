"""The inference stage, one process for every stream: batches frames of different streams through the model.

Frames arrive from every capture on one channel and wait in one queue per stream. A batch takes at most
one frame per stream, round-robin from the stream after the one served first last time, up to
``batch.max_size``; once it holds a frame it waits up to ``batch.timeout_ms`` for the other streams'
(a stream on its own never waits). A live stream keeps only its newest waiting frame: older ones go back
to its capture, counted as dropped. The outputs go into each frame's slot, and the item on to
post-processing.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import zmq

from perception.config import BatchConfig, ModelConfig
from perception.runtime import channels, stagekit
from perception.runtime.lanes import LaneStage
from perception.runtime.protocol import (
    FRAME_KEY,
    OUTPUT_KEYS,
    Counter,
    EndOfStream,
    Ready,
    StreamAdded,
    WorkItem,
)
from perception.runtime.stagekit import StageHandles, StageLink


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceSettings:
    """The configuration the inference stage reads."""

    model: ModelConfig
    model_path: str
    """``model.path`` resolved (see :meth:`ModelConfig.resolved_path`)."""
    batch: BatchConfig
    max_age_ms: float | None = None
    """Live streams: frames older than this are dropped before inference (None: never)."""


def open_segmenter(settings: InferenceSettings):
    """The backend and the :class:`~perception.inference.Segmenter` over it, as configured."""
    from perception.backends.factory import open_backend
    from perception.inference import Segmenter

    m = settings.model
    backend = open_backend(
        settings.model_path, kind=m.backend, threads=m.threads, precision=m.precision,
        input_size=tuple(m.input_size) if m.input_size else None,
    )
    return backend, Segmenter(backend=backend)


def warm_up(seg, max_batch: int) -> None:
    """One run per batch size the stage can form, so that no real frame pays for the runtime's first
    allocation at that size (frames are resized to the network input, so sizes repeat)."""
    w, h = seg.input_size
    frame = np.zeros((h, w, 3), np.uint8)
    for n in range(1, max_batch + 1):
        seg.batch([frame] * n)


def inference_main(handles: StageHandles, settings: InferenceSettings) -> None:
    stagekit.setup(handles, "inference", "inference")
    code = 0
    link = backend = stage = None
    try:
        link = StageLink(handles, "inference", "inference")
        backend, seg = open_segmenter(settings)
        warm_up(seg, settings.batch.max_size)
        stage = InferenceStage(handles=handles, link=link, seg=seg, batch=settings.batch,
                               max_age_ms=settings.max_age_ms)
        link.send(Ready(stage="inference"))
        stage.run()
    except BaseException as exc:
        code = stagekit.fail(link, "inference", exc)
    finally:
        stagekit.close_quietly(stage, "the inference stage")
        stagekit.close_quietly(backend, "the backend")
        stagekit.close_quietly(link, "the control link")
    sys.exit(code)


@dataclass
class _Lane:
    """One stream as inference sees it."""

    row: int
    live: bool
    slots: object
    free: zmq.Socket
    waiting: deque = field(default_factory=deque)


class InferenceStage(LaneStage):
    stage = "inference"

    def __init__(self, *, handles: StageHandles, link: StageLink, seg, batch: BatchConfig,
                 max_age_ms: float | None = None) -> None:
        super().__init__(handles=handles, link=link, inbox=handles.addresses.inference, max_age_ms=max_age_ms)
        self.seg = seg
        self.max_size = batch.max_size
        self.timeout_ns = int(batch.timeout_ms * 1e6)
        self._next = 0  # round-robin position (a stream number)
        self.outbox = channels.socket(self.ctx, zmq.PUSH, handles.addresses.post, bind=False)

    def add(self, cmd: StreamAdded, slots, free: zmq.Socket) -> None:
        self.lanes[cmd.stream] = _Lane(row=cmd.row, live=cmd.info.mode == "live", slots=slots, free=free)

    def close_sockets(self) -> None:
        channels.close(self.outbox)

    def step(self) -> bool:
        batch = self._gather()
        if batch:
            self._infer(batch)
        return bool(batch)

    def receive(self) -> None:
        """Everything that arrived, into its stream's queue (a live stream keeps only the newest frame)."""
        while (item := channels.recv(self.inbox, block=False)) is not None:
            lane = self.lanes.get(item.stream) if isinstance(item, (WorkItem, EndOfStream)) else None
            if lane is None:
                continue  # a removed stream's last items
            if lane.live and isinstance(item, WorkItem):
                while lane.waiting and isinstance(lane.waiting[-1], WorkItem):
                    stale = lane.waiting.pop()
                    channels.send(lane.free, stale.slot)
                    stagekit.bump(self.h.counters, lane.row, Counter.DROPPED_CAPTURE)
            lane.waiting.append(item)

    def _ready(self) -> list[int]:
        """Streams with a frame (or their end) waiting, round-robin from :attr:`_next`."""
        order = sorted(self.lanes)
        start = next((i for i, s in enumerate(order) if s >= self._next), 0)
        return [s for s in order[start:] + order[:start] if self.lanes[s].waiting]

    def _gather(self) -> list[tuple[int, WorkItem]]:
        """Up to ``max_size`` frames, one per stream; waits up to the timeout for more streams."""
        batch: list[tuple[int, WorkItem]] = []
        deadline = None
        while True:
            for stream in self._ready():
                if len(batch) >= self.max_size or any(s == stream for s, _ in batch):
                    continue
                item = self.lanes[stream].waiting.popleft()
                if isinstance(item, EndOfStream):
                    channels.send(self.outbox, item)  # after every frame of the stream sent before it
                    continue
                if self.stale(self.lanes[stream], item):
                    continue
                batch.append((stream, item))
            others = len(self.lanes) - len(batch)
            if not batch or len(batch) >= self.max_size or others <= 0 or self.timeout_ns <= 0:
                break
            deadline = deadline or time.monotonic_ns() + self.timeout_ns
            left_ms = (deadline - time.monotonic_ns()) / 1e6
            if left_ms <= 0:
                break
            self.link.wait(max(1, int(left_ms)), self.inbox)
            self.receive()
        if batch:
            self._next = batch[-1][0] + 1
        return batch

    def _infer(self, batch: list[tuple[int, WorkItem]]) -> None:
        t0 = time.monotonic_ns()
        frames = [self.lanes[s].slots.array(FRAME_KEY, it.slot)[: it.meta.height, : it.meta.width] for s, it in batch]
        outputs = self.seg.batch(frames)
        for (stream, item), out in zip(batch, outputs):
            slots = self.lanes[stream].slots
            for k in OUTPUT_KEYS:
                v = getattr(out, k)
                if v is not None:
                    np.copyto(slots.array(k, item.slot), v)
        t1 = time.monotonic_ns()
        for stream, item in batch:
            item.timings_ms["queue_inference"] = (t0 - item.t_slot_ns) / 1e6
            item.timings_ms["inference"] = (t1 - t0) / 1e6
            if len(batch) > 1:
                item.timings_ms["batch"] = float(len(batch))
            item.t_slot_ns = t1
            channels.send(self.outbox, item)
            stagekit.bump(self.h.counters, self.lanes[stream].row, Counter.INFERRED)
