"""What every stage process shares: its handles, start-up, failure reporting and polling helpers.

Every stage loop ignores SIGINT (the supervisor owns shutdown and sets ``stop``), polls its input queue
with a short timeout so it notices ``stop`` promptly, reports a failure as one :class:`StageFailed` on
the control queue and exits with its stage's code. No stage blocks forever on another.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Event
from typing import Any

from perception.runtime.protocol import STAGE_EXIT_CODES, Stage, StageFailed

log = logging.getLogger(__name__)

POLL_S = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class StageHandles:
    """The inter-process handles every stage gets (all picklable for the spawn start method)."""

    stop: Event
    """Set by anyone when the pipeline is stopping."""
    ready: Event
    """Set by this stage once initialised (model loaded, sockets bound)."""
    go: Event
    """Set by the supervisor once every stage is ready: start streaming."""
    control: Queue
    """To the supervisor: :data:`~perception.runtime.protocol.ControlMessage` values."""
    counters: SynchronizedArray | Any
    """Shared int64 counters indexed by :class:`~perception.runtime.protocol.Counter`."""
    free: Queue
    """Free slot indices."""
    inbox: Queue | None
    outbox: Queue | None
    log_level: int = logging.WARNING
    parent_pid: int = 0


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent (the supervisor) dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not fatal: get/wait also notice an orphaned stage
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


_PARENT_PID = os.getppid()


def orphaned() -> bool:
    return os.getppid() != _PARENT_PID


def setup(handles: StageHandles, stage: Stage) -> None:
    """First thing in a stage process: die with the supervisor, ignore SIGINT, configure logging."""
    global _PARENT_PID  # noqa: PLW0603 (set once per stage process, read by orphaned)
    _PARENT_PID = handles.parent_pid
    _die_with_parent()
    if orphaned():  # the supervisor died before prctl took effect
        sys.exit(STAGE_EXIT_CODES[stage])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=handles.log_level,
        format=f"%(asctime)s %(levelname).1s {stage} %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def fail(handles: StageHandles, stage: Stage, exc: BaseException) -> int:
    """Report ``exc`` to the supervisor as one line, ask everyone to stop; returns the stage's exit code."""
    from perception.errors import PerceptionError

    if isinstance(exc, PerceptionError):
        msg = str(exc)
    else:
        msg = f"{type(exc).__name__}: {exc}"
        log.error("unexpected error in %s:\n%s", stage, traceback.format_exc())
    try:
        handles.control.put(StageFailed(stage=stage, message=msg), timeout=1.0)
    except Exception:  # the supervisor is gone; the exit code still tells
        pass
    handles.stop.set()
    return STAGE_EXIT_CODES[stage]


def get(q: Queue, stop: Event) -> Any | None:
    """Next item, or None once ``stop`` is set (or the supervisor is gone)."""
    while not stop.is_set():
        try:
            return q.get(timeout=POLL_S)
        except queue.Empty:
            if orphaned():
                stop.set()
    return None


def wait(event: Event, stop: Event) -> bool:
    """Wait for ``event``; False when ``stop`` came first (or the supervisor is gone)."""
    while not stop.is_set():
        if event.wait(POLL_S):
            return True
        if orphaned():
            stop.set()
    return False


def finish_queues(handles: StageHandles, *qs: Queue | None) -> None:
    """At the end of a stream, the data queues are flushed at exit (their last items, e.g. the final
    frame and the end-of-stream marker, must reach the next stage, which is still reading). When the
    pipeline is stopping, nobody may read them any more: do not wait at exit to flush them. The
    control queue (error message, summary) is always flushed: the supervisor always reads it."""
    if not handles.stop.is_set():
        return
    for q in qs:
        if q is not None:
            q.cancel_join_thread()


def close_quietly(thing: Any, what: str) -> None:
    """``thing.close()``, logging (not raising) a failure: used on the way out of a stage."""
    if thing is None:
        return
    try:
        thing.close()
    except Exception:
        log.exception("closing %s failed", what)
