"""What inference and post-processing share: streams that come and go by command, and the stage loop.

Both stages serve every stream of the run. A :class:`StreamAdded` command maps the stream's slots and
connects to its capture's free channel; :class:`StreamRemoved` releases both; :class:`Go` starts the
work. :class:`LaneStage` holds that, and the loop: heartbeat, commands, what arrived, one step of the
stage's own work (or a short wait when there is none).
"""

from __future__ import annotations

import time

import zmq

from perception.runtime import channels, stagekit
from perception.runtime.protocol import Attached, Counter, Go, StreamAdded, StreamRemoved
from perception.runtime.stagekit import StageHandles, StageLink


class LaneStage:
    """Base of :class:`~perception.runtime.infer.InferenceStage` and :class:`~perception.runtime.post.PostStage`."""

    stage = ""
    """``inference`` or ``postprocess``."""

    def __init__(self, *, handles: StageHandles, link: StageLink, inbox: str, max_age_ms: float | None) -> None:
        self.h = handles
        self.link = link
        self.max_age_ns = int(max_age_ms * 1e6) if max_age_ms else None
        """Live streams: frames older than this are dropped (None: never)."""
        self.lanes: dict = {}
        self.going = False
        self.ctx = channels.context()
        self.inbox = channels.socket(self.ctx, zmq.PULL, inbox, bind=True)

    # --------------------------------------------------------------------- what subclasses give
    def add(self, cmd: StreamAdded, slots, free: zmq.Socket) -> None:
        """Keep the stream's state (``slots`` mapped, ``free`` connected to its capture)."""
        raise NotImplementedError

    def forget(self, stream: int, lane) -> None:
        """Drop what the stage keeps for a removed stream besides its slots and free channel."""

    def other(self, cmd) -> None:
        """A command this base does not handle."""

    def receive(self) -> None:
        """Take everything that arrived on :attr:`inbox`."""
        raise NotImplementedError

    def step(self) -> bool:
        """Do one piece of work; False when there was none (the loop then waits)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------- shared
    def command(self, cmd) -> None:
        if isinstance(cmd, Go):
            self.going = True
        elif isinstance(cmd, StreamAdded):
            from perception.runtime.shm import SharedSlots

            free = channels.socket(self.ctx, zmq.PUSH, self.h.addresses.free(cmd.stream), bind=False)
            self.add(cmd, SharedSlots.attach(cmd.descriptor), free)
            self.link.send(Attached(stage=self.stage, stream=cmd.stream))
        elif isinstance(cmd, StreamRemoved):
            self.remove(cmd.stream)
        else:
            self.other(cmd)

    def remove(self, stream: int) -> None:
        lane = self.lanes.pop(stream, None)
        if lane is None:
            return
        self.forget(stream, lane)
        lane.slots.close()
        channels.close(lane.free)

    def stale(self, lane, item) -> bool:
        """A live frame past ``max_age``: its slot goes back to its capture, counted, and it is skipped."""
        if not lane.live or self.max_age_ns is None or time.monotonic_ns() - item.meta.t_mono_ns <= self.max_age_ns:
            return False
        channels.send(lane.free, item.slot)
        stagekit.bump(self.h.counters, lane.row, Counter.DROPPED_STALE)
        return True

    def run(self) -> None:
        """Until a stop (:attr:`StageLink.stop_reason` says why)."""
        while True:
            stagekit.beat(self.h, self.stage)
            for cmd in self.link.commands():
                self.command(cmd)
            if self.link.stopping:
                return
            self.receive()
            if not (self.going and self.step()):
                self.link.wait(stagekit.POLL_MS, self.inbox)

    def close(self) -> None:
        for stream in list(self.lanes):
            self.remove(stream)
        self.close_sockets()
        channels.close(self.inbox, self.ctx)

    def close_sockets(self) -> None:
        """Close the subclass's own sockets (before the context goes)."""
