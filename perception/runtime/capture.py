"""The capture stage, one process per stream: opens the source, decides the mode, fills the stream's slots.

A stream owns ``runtime.slots`` slots of its own shared memory. Capture takes a free one (waiting when
all are in flight, so a replay keeps every frame), copies the frame in and sends a :class:`WorkItem` to
inference. The slot comes back on the stream's free channel once post-processing (or inference, for a
stale live frame) is done with it. A slow, stalled or dead source stalls only its own process.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import zmq

from perception.config import ReplayConfig, SourceConfig
from perception.runtime import channels, stagekit
from perception.runtime.protocol import (
    FRAME_KEY,
    SOURCE_STATES,
    Counter,
    EndOfStream,
    Go,
    Mode,
    Policy,
    Ready,
    Slots,
    SourceInfo,
    SourceOpened,
    WorkItem,
)
from perception.runtime.stagekit import StageHandles, StageLink
from perception.types import FrameMeta

log = stagekit.log


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureSettings:
    """The configuration one capture process reads."""

    stream: int
    """The stream's number in this run."""
    row: int
    """Its row of the shared counters."""
    source: SourceConfig
    """Its source section, id and mode resolved (:meth:`PipelineConfig.streams`)."""
    replay: ReplayConfig
    retry_open: bool = False
    """Keep trying to open the source (backoff up to 5 s) instead of failing at once: for a live stream
    started again after a restart, whose camera may be down at that moment."""


def open_configured_source(cfg: SourceConfig):
    """The :class:`~perception.sources.base.Source` a ``source`` section describes (reconnects, stalls and
    drive topics included: :func:`perception.sources.factory.open_configured`)."""
    from perception.sources.factory import open_configured

    return open_configured(cfg if cfg.camera_id else cfg.model_copy(update={"camera_id": "cam0"}))


def source_info(source, mode: Mode | None) -> SourceInfo:
    """What the supervisor needs to know about an opened source; the mode is decided here, once."""
    return SourceInfo(
        width=source.width, height=source.height, fps=source.fps, is_live=source.is_live,
        length=getattr(source, "num_frames", None),
        mode=mode or ("live" if source.is_live else "replay"),
    )


def capture_main(handles: StageHandles, settings: CaptureSettings) -> None:
    stagekit.setup(handles, "capture", f"capture[{settings.source.camera_id}]")
    code = 0
    link = slots = source = None
    try:
        from perception.runtime.shm import SharedSlots

        link = StageLink(handles, "capture", f"capture:{settings.stream}")
        source = _open(settings, link)
        if source is None:
            return
        info = source_info(source, settings.source.mode)
        link.send(SourceOpened(stream=settings.stream, info=info))
        cmd = link.wait_for(Slots)
        if cmd is None:
            return
        slots = SharedSlots.attach(cmd.descriptor)
        capture = Capture(handles=handles, link=link, settings=settings, slots=slots, policy=info.policy)
        try:
            link.send(Ready(stage="capture", stream=settings.stream))
            if link.wait_for(Go) is not None:
                capture.run(source)
        finally:
            capture.close()
    except BaseException as exc:
        code = stagekit.fail(link, "capture", exc, stream=settings.stream)
    finally:
        stagekit.close_quietly(source, "the source")
        stagekit.close_quietly(slots, "shared memory")
        stagekit.close_quietly(link, "the control link")
    sys.exit(code)


def _open(settings: CaptureSettings, link: StageLink):
    """The source; with ``retry_open``, retried with backoff until it opens or the pipeline stops."""
    from perception.errors import SourceError
    from perception.redact import redact

    delay = 0.5
    while True:
        try:
            return open_configured_source(settings.source)
        except SourceError as exc:
            if not settings.retry_open:
                raise
            log.warning("stream %s: cannot open the source yet (%s); trying again in %.1f s",
                        settings.source.camera_id, redact(str(exc)), delay)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if link.check_stop():
                return None
            time.sleep(0.05)
        delay = min(5.0, delay * 2)


class Capture:
    """The capture loop: pace (replay), stamp, take a slot, copy the frame in, hand it on."""

    def __init__(self, *, handles: StageHandles, link: StageLink, settings: CaptureSettings, slots,
                 policy: Policy) -> None:
        from perception.sources.pacing import Pacer

        self.link = link
        self.counters = handles.counters
        self.stream, self.row = settings.stream, settings.row
        self.slots = slots
        self.policy = policy
        speed = settings.replay.speed
        self.pacer = Pacer(speed=speed) if (policy == Policy.EVERY and speed) else None
        self.slot_shape = slots.array(FRAME_KEY, 0).shape
        self.free = deque(range(slots.slots))
        self.ctx = channels.context()
        self.free_sock = channels.socket(self.ctx, zmq.PULL, handles.addresses.free(settings.stream), bind=True)
        self.out = channels.socket(self.ctx, zmq.PUSH, handles.addresses.inference, bind=False)

    def close(self) -> None:
        self._watching = False
        channels.close(self.free_sock, self.out, self.ctx)

    def run(self, source) -> None:
        self._last_ns = time.monotonic_ns()
        self._waiting = False
        self._watching = True
        threading.Thread(target=self._watch, args=(source,), name="capture-health", daemon=True).start()
        for meta, frame in source:
            self._last_ns = time.monotonic_ns()
            self.link.commands()
            if self.link.stopping:
                return
            due_ns = self._due(meta)
            slot = self._acquire_slot()
            if slot is None:
                return
            width, height = self._copy_in(frame, slot)
            now = time.monotonic_ns()
            sent = self._stamp(meta, width, height, due_ns if due_ns is not None else now)
            channels.send(self.out, WorkItem(stream=self.stream, slot=slot, meta=sent, t_slot_ns=now,
                                             timings_ms={"capture": (now - sent.t_mono_ns) / 1e6}))
            stagekit.bump(self.counters, self.row, Counter.CAPTURED)
            stagekit.set_counter(self.counters, self.row, Counter.SOURCE_DROPPED, int(getattr(source, "dropped", 0)))
        if not self.link.stopping:
            channels.send(self.out, EndOfStream(stream=self.stream))

    def _due(self, meta: FrameMeta) -> int | None:
        """Paced replay: wait until the frame is due and return when that was (monotonic ns)."""
        if self.pacer is None:
            return None
        self._waiting = True
        try:
            self.pacer.wait(meta.pts_ns)
        finally:
            self._waiting = False
        return self.pacer.deadline_ns(meta.pts_ns)

    def _watch(self, source) -> None:
        """Every half second: the source's health into the shared counters, and a heartbeat while the loop
        is alive (a frame lately, or waiting on purpose: pacing, a free slot, a reconnecting source)."""
        row, c = self.row, self.counters
        while self._watching:
            health = source.health()
            state = getattr(health.state, "value", str(health.state))
            for counter, value in ((Counter.SKIPPED, health.skipped), (Counter.RECONNECTS, health.reconnects),
                                   (Counter.LOSSES, health.losses), (Counter.TRUNCATED, int(health.truncated)),
                                   (Counter.SOURCE_STATE, SOURCE_STATES.index(state) if state in SOURCE_STATES else 0)):
                stagekit.set_counter(c, row, counter, int(value))
            now = time.monotonic_ns()
            if self._waiting or now - self._last_ns < 1_000_000_000 or state in ("starting", "reconnecting"):
                stagekit.set_counter(c, row, Counter.BEAT_NS, now)
            time.sleep(0.5)

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

    def _take_returned(self) -> None:
        while (slot := channels.recv(self.free_sock, block=False)) is not None:
            if isinstance(slot, int) and 0 <= slot < self.slots.slots:
                self.free.append(slot)

    def _acquire_slot(self) -> int | None:
        """A free slot, waiting while every slot is in flight; None when the pipeline stops first."""
        self._take_returned()
        while not self.free:
            self._last_ns = time.monotonic_ns()
            ready = self.link.wait(stagekit.POLL_MS, self.free_sock)
            self.link.commands()
            if self.link.stopping:
                return None
            if self.free_sock in ready:
                self._take_returned()
        return self.free.popleft()
