"""The capture stage: opens the source, decides the mode, and writes frames into shared-memory slots."""

from __future__ import annotations

import dataclasses
import queue
import sys
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue

import numpy as np

from perception.config import ReplayConfig, SourceConfig
from perception.runtime import stagekit
from perception.runtime.protocol import (
    EOS,
    FRAME_KEY,
    Counter,
    Mode,
    Policy,
    SourceInfo,
    SourceOpened,
    WorkItem,
)
from perception.runtime.stagekit import StageHandles
from perception.types import FrameMeta

log = stagekit.log


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureSettings:
    """The configuration the capture stage reads."""

    source: SourceConfig
    replay: ReplayConfig
    mode: Mode | None
    """``config.mode``; None lets the source decide (live for cameras and streams, replay otherwise)."""


def open_configured_source(cfg: SourceConfig):
    """The :class:`~perception.sources.base.Source` a ``source`` section describes."""
    from perception.sources.factory import open_source

    options = {**cfg.options, **({"topics": tuple(cfg.topics)} if cfg.topics else {})}
    return open_source(
        cfg.uri, camera_id=cfg.camera_id, loop=cfg.loop, fps=cfg.fps, start_s=cfg.start_s,
        max_frames=cfg.max_frames, width=cfg.width, height=cfg.height, options=options,
    )


def source_info(source, mode: Mode | None) -> SourceInfo:
    """What the supervisor needs to know about an opened source; the mode is decided here, once."""
    return SourceInfo(
        width=source.width, height=source.height, fps=source.fps, is_live=source.is_live,
        length=getattr(source, "num_frames", None),
        mode=mode or ("live" if source.is_live else "replay"),
    )


def capture_main(handles: StageHandles, settings: CaptureSettings, descriptor_box: Queue) -> None:
    stagekit.setup(handles, "capture")
    code = 0
    slots = source = None
    try:
        from perception.runtime.shm import SharedSlots

        source = open_configured_source(settings.source)
        info = source_info(source, settings.mode)
        handles.control.put(SourceOpened(info=info))
        desc = stagekit.get(descriptor_box, handles.stop)
        if desc is None:
            return
        slots = SharedSlots.attach(desc)
        handles.ready.set()
        if not stagekit.wait(handles.go, handles.stop):
            return
        Capture(handles=handles, slots=slots, policy=info.policy, speed=settings.replay.speed).run(source)
    except BaseException as exc:
        code = stagekit.fail(handles, "capture", exc)
    finally:
        stagekit.close_quietly(source, "the source")
        stagekit.close_quietly(slots, "shared memory")
        stagekit.finish_queues(handles, handles.outbox)
    sys.exit(code)


class Capture:
    """The capture loop: pace (replay), stamp, take a slot, copy the frame in, hand it on."""

    def __init__(self, *, handles: StageHandles, slots, policy: Policy, speed: float) -> None:
        from perception.sources.pacing import Pacer

        self.h = handles
        self.slots = slots
        self.policy = policy
        self.pacer = Pacer(speed=speed) if (policy == Policy.EVERY and speed) else None
        self.slot_shape = slots.array(FRAME_KEY, 0).shape

    def run(self, source) -> None:
        h = self.h
        for meta, frame in source:
            if h.stop.is_set():
                return
            due_ns = self._due(meta)
            slot = self._acquire_slot()
            if slot is None:
                return
            width, height = self._copy_in(frame, slot)
            now = time.monotonic_ns()
            sent = self._stamp(meta, width, height, due_ns if due_ns is not None else now)
            h.outbox.put(WorkItem(slot=slot, meta=sent, t_slot_ns=now,
                                  timings_ms={"capture": (now - sent.t_mono_ns) / 1e6}))
            h.counters[Counter.CAPTURED] += 1
            h.counters[Counter.SOURCE_DROPPED] = int(getattr(source, "dropped", 0))
        if not h.stop.is_set():
            h.outbox.put(EOS)

    def _due(self, meta: FrameMeta) -> int | None:
        """Paced replay: wait until the frame is due and return when that was (monotonic ns)."""
        if self.pacer is None:
            return None
        self.pacer.wait(meta.pts_ns)
        return self.pacer.deadline_ns(meta.pts_ns)

    def _stamp(self, meta: FrameMeta, width: int, height: int, entered_ns: int) -> FrameMeta:
        """The frame's meta as it goes down the pipeline.

        Live frames keep the grab stamps of the source. Replayed frames are stamped with the moment they
        entered the pipeline (``entered_ns``: when a paced frame was due, when an unpaced one got its
        slot), on both clocks, so that latency counts from there, not from when the file was read.
        """
        changes: dict = {}
        if (width, height) != (meta.width, meta.height):
            changes.update(width=width, height=height)
        if self.policy == Policy.EVERY:
            wall = time.time_ns() - (time.monotonic_ns() - entered_ns)
            changes.update(t_mono_ns=entered_ns, t_wall_ns=wall)
        return dataclasses.replace(meta, **changes) if changes else meta

    def _copy_in(self, frame: np.ndarray, slot: int) -> tuple[int, int]:
        """Copy the frame into the slot; returns the ``(width, height)`` it has there."""
        h, w = frame.shape[:2]
        sh, sw = self.slot_shape[:2]
        dst = self.slots.array(FRAME_KEY, slot)
        if h <= sh and w <= sw:
            # frames smaller than the slot (another camera of a multi-camera drive) use its top-left
            np.copyto(dst[:h, :w], frame)
            return w, h
        import cv2

        cv2.resize(frame, (sw, sh), dst=dst, interpolation=cv2.INTER_AREA)
        return sw, sh

    def _acquire_slot(self) -> int | None:
        h = self.h
        try:
            return h.free.get_nowait()
        except queue.Empty:
            pass
        if self.policy == Policy.LATEST:  # take back the oldest frame still waiting for inference
            try:
                item = h.outbox.get_nowait()
            except queue.Empty:
                item = None
            if isinstance(item, WorkItem):
                h.counters[Counter.DROPPED_CAPTURE] += 1
                return item.slot
        return stagekit.get(h.free, h.stop)
