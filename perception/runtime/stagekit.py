"""What every stage process shares: its handles, its link to the supervisor, start-up and failure.

Every stage ignores SIGINT (the supervisor owns shutdown and sends :class:`Stop`), waits on its sockets
with a short timeout so that it notices a stop or a dead supervisor promptly, reports a failure as one
:class:`StageFailed` and exits with its stage's code. No stage blocks forever on another.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import zmq

from perception.runtime import channels
from perception.runtime.channels import Addresses
from perception.runtime.protocol import CORE_BEATS, N_COUNTERS, STAGE_EXIT_CODES, Counter, Stage, StageFailed, Stop

log = logging.getLogger(__name__)

POLL_MS = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class StageHandles:
    """What a stage process is started with, besides its settings (all picklable for spawn)."""

    addresses: Addresses
    counters: Any
    """Shared int64 counters, ``max_streams`` rows of :class:`Counter` (``multiprocessing.Array``, no lock:
    each counter has one writer)."""
    beats: Any = None
    """Shared int64 heartbeats of the core stages (:data:`CORE_BEATS`): monotonic ns of their last loop."""
    hist: Any = None
    """Shared int64 latency histograms (:mod:`perception.runtime.metrics`), written by post-processing."""
    log_level: int = logging.WARNING
    parent_pid: int = 0


def bump(counters: Any, row: int, counter: Counter, n: int = 1) -> None:
    counters[row * N_COUNTERS + counter] += n


def set_counter(counters: Any, row: int, counter: Counter, value: int) -> None:
    counters[row * N_COUNTERS + counter] = value


def read_counters(counters: Any, row: int) -> dict[str, int]:
    return {k.name.lower(): int(counters[row * N_COUNTERS + k]) for k in Counter}


def beat(handles: StageHandles, stage: str) -> None:
    """A core stage's sign of life (its loop went round)."""
    if handles.beats is not None:
        handles.beats[CORE_BEATS[stage]] = time.monotonic_ns()


class StageLink:
    """A stage's DEALER socket to the supervisor's ROUTER: control messages up, commands down."""

    def __init__(self, handles: StageHandles, stage: Stage, identity: str) -> None:
        self.stage = stage
        self.parent_pid = handles.parent_pid
        self.ctx = channels.context()
        self.sock = channels.socket(self.ctx, zmq.DEALER, handles.addresses.control, bind=False,
                                    identity=identity.encode())
        self.stop_reason: str | None = None
        """Set once a :class:`Stop` arrived (or the supervisor is gone: ``stopped``)."""
        self.pending: list[Any] = []
        """Commands read but not yet taken."""

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def send(self, msg: Any) -> None:
        channels.send(self.sock, msg)

    def _read(self) -> None:
        """Move every command waiting on the socket to :attr:`pending` (a :class:`Stop` also sets
        :attr:`stop_reason`, as does a dead supervisor)."""
        while (msg := channels.recv(self.sock, block=False)) is not None:
            if isinstance(msg, Stop):
                self.stop_reason = msg.reason
            self.pending.append(msg)
        if self.orphaned():
            self.stop_reason = self.stop_reason or "stopped"

    def commands(self) -> list[Any]:
        """Every command not yet taken, oldest first (they are taken by this call)."""
        self._read()
        got, self.pending = self.pending, []
        return got

    def check_stop(self) -> bool:
        """Whether a stop came (leaves other commands for :meth:`commands`)."""
        self._read()
        return self.stopping

    def wait(self, timeout_ms: int = POLL_MS, *others: zmq.Socket) -> set[zmq.Socket]:
        """Wait until a command or one of ``others`` is readable (or the time is up); returns which are."""
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        for s in others:
            poller.register(s, zmq.POLLIN)
        return {s for s, _ in poller.poll(timeout_ms)}

    def wait_for(self, kind: type, timeout_ms: int = POLL_MS) -> Any | None:
        """Wait for a command of ``kind`` and take it; None once a stop came first. Other commands stay
        for :meth:`commands`."""
        while True:
            self._read()
            for i, msg in enumerate(self.pending):
                if isinstance(msg, kind):
                    return self.pending.pop(i)
            if self.stopping:
                return None
            self.wait(timeout_ms)

    def orphaned(self) -> bool:
        return os.getppid() != self.parent_pid

    def close(self) -> None:
        channels.close(self.sock, self.ctx)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent (the supervisor) dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not fatal: StageLink.orphaned also notices
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


def setup(handles: StageHandles, stage: Stage, label: str) -> None:
    """First thing in a stage process: die with the supervisor, ignore SIGINT, configure logging."""
    _die_with_parent()
    if os.getppid() != handles.parent_pid:  # the supervisor died before prctl took effect
        sys.exit(STAGE_EXIT_CODES[stage])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM comes from the supervisor's shutdown of a stage that did not stop in time, or from PDEATHSIG
    # when the supervisor died: leave at once and quietly (an exception raised wherever the stage happens
    # to be would print a traceback; the kernel releases its memory, sockets and devices)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    from perception.redact import RedactingFilter

    logging.basicConfig(
        level=handles.log_level,
        format=f"%(asctime)s %(levelname).1s {label} %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:  # no password of a camera URL ever reaches a log
        handler.addFilter(RedactingFilter())


def fail(link: StageLink | None, stage: Stage, exc: BaseException, *, stream: int = -1) -> int:
    """Report ``exc`` to the supervisor as one line; returns the stage's exit code."""
    from perception.errors import PerceptionError

    if isinstance(exc, SystemExit):
        return int(exc.code or 0)
    if isinstance(exc, PerceptionError):
        msg = str(exc)
    else:
        msg = f"{type(exc).__name__}: {exc}"
        log.error("unexpected error in %s:\n%s", stage, traceback.format_exc())
    if link is not None:
        try:
            link.send(StageFailed(stage=stage, message=msg, stream=stream))
        except zmq.ZMQError:  # the supervisor is gone; the exit code still tells
            pass
    return STAGE_EXIT_CODES[stage]


def close_quietly(thing: Any, what: str) -> None:
    """``thing.close()``, logging (not raising) a failure: used on the way out of a stage."""
    if thing is None:
        return
    try:
        thing.close()
    except Exception:
        log.exception("closing %s failed", what)
