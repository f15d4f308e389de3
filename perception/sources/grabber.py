"""Latest-frame grabbing for live inputs (cameras, network streams, GStreamer pipelines).

A background thread reads the capture as fast as it delivers and keeps only the newest frame; the
consumer always gets the latest one, and every frame it never saw is counted in ``dropped``. Three
preallocated buffers rotate between the thread and the consumer (triple buffering), so grabbing
allocates nothing per frame and never blocks on a slow consumer.

A live input that is lost (the capture stops delivering, or no frame arrives for ``stall_s``) is
reopened with exponential backoff and jitter (:class:`ReconnectPolicy`), by default for as long as the
source is open: a camera or server that comes back streams again within one backoff step (at most
``max_delay_s``, 5 s by default) plus the time it takes to open. The source's state goes ``live`` →
``reconnecting`` → ``live`` meanwhile (:mod:`perception.sources.health`).

The thread owns the ``cv2.VideoCapture``: it is released by the thread when it stops, so a thread
stuck inside a blocking ``grab()`` never races a ``release()`` from another thread.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from perception.errors import ConfigError, SourceError
from perception.sources.base import Source, as_bgr, make_meta
from perception.sources.health import HealthTracker, SourceState
from perception.types import FrameMeta

log = logging.getLogger(__name__)

OpenFn = Callable[[], "cv2.VideoCapture"]
"""Opens the capture (again); returns an opened ``cv2.VideoCapture`` or raises SourceError."""

STILL_DOWN_LOG_S = 60.0
"""While an input stays lost, a warning says so this often (each failed attempt is logged at debug)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectPolicy:
    """How a lost live input is reopened: exponential backoff with jitter, capped.

    Attempt ``n`` (1-based) waits ``min(max_delay_s, initial_delay_s * 2**(n-1))``, shortened by a
    random fraction of up to ``jitter``, then reopens the input.

    Attributes:
        initial_delay_s: wait before the first attempt. Shorter recovers from a blip sooner; longer
            is gentler on a server that is rebooting.
        max_delay_s: cap of the growing wait, so also the longest a returning input waits before it is
            tried again. Shorter brings a camera back sooner, at the cost of more attempts while it is
            down (each a connect to a host that is not there).
        max_attempts: attempts per loss before the source fails with a SourceError; None = for as long
            as the source is open (the default: live inputs survive outages of any length); 0 = never
            reconnect (fail at the first loss: for those who want to fail fast).
        jitter: fraction (0-1) by which each wait is randomly shortened, so many sources that lost
            the same server do not all come back at the same instant.
    """

    initial_delay_s: float = 0.5
    max_delay_s: float = 5.0
    max_attempts: int | None = None
    jitter: float = 0.2

    def __post_init__(self) -> None:
        for key in ("initial_delay_s", "max_delay_s"):
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"reconnect {key} must be a positive number of seconds, got {value!r}")
        if self.initial_delay_s > self.max_delay_s:
            raise ConfigError(f"reconnect initial_delay_s ({self.initial_delay_s:g}) must not exceed "
                              f"max_delay_s ({self.max_delay_s:g})")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ConfigError(f"reconnect max_attempts must be >= 0 or None (forever), got {self.max_attempts!r}")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"reconnect jitter must be between 0 and 1, got {self.jitter!r}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before attempt ``attempt`` (1-based), jitter applied."""
        base = min(self.max_delay_s, self.initial_delay_s * 2.0 ** min(attempt - 1, 62))
        return base * (1.0 - self.jitter * (rng or random).random())

    def describe(self) -> str:
        limit = "forever" if self.max_attempts is None else f"up to {self.max_attempts} attempts"
        return f"every {self.initial_delay_s:g}-{self.max_delay_s:g} s, {limit}"


NEVER_RECONNECT = ReconnectPolicy(max_attempts=0)
"""Fail at the first loss."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveTimeouts:
    """How long a live input may stay silent, and how to get it back.

    Attributes:
        first_frame_s: the first frame must arrive within this time after opening. Longer tolerates
            slow camera start-up or stream buffering; shorter reports a silent device sooner.
        stall_s: once running, no new frame for this long counts as a loss (the input is reopened
            per ``reconnect``). Shorter detects a dead camera sooner but may reopen a stream that
            only hiccups.
        reconnect: how a lost input is reopened (:class:`ReconnectPolicy`).
    """

    first_frame_s: float = 5.0
    stall_s: float = 5.0
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)

    def __post_init__(self) -> None:
        for key in ("first_frame_s", "stall_s"):
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{key} must be a positive number of seconds, got {value!r}")


class LatestFrameGrabber:
    """Background reader of a live capture that keeps only the newest frame, and reopens it when lost.

    Args:
        name: how errors and logs name the input (``camera 0``, ``stream rtsp://user:***@...``);
            it must not hold a secret.
        open_fn: opens the capture; called once here and again on each reconnect attempt.
        camera_id: id put in every frame's :class:`FrameMeta`.
        timeouts: first-frame, stall and reconnect settings.
        max_frames: stop after delivering this many frames (None = until closed).
        health: the tracker to report state and counters to (a new one when None).

    The constructor opens the input and waits for the first frame (``timeouts.first_frame_s``), so
    ``width``/``height`` are known when it returns; an input that cannot be opened then fails at
    once (a wrong URL is reported, not retried). Later frames of another size are resized to it.

    ``frames()`` yields ``(FrameMeta, uint8[H, W, 3])``; the array belongs to the grabber again once the
    consumer asks for the next frame. ``meta.frame_index`` counts every frame grabbed from the input
    (across reconnects), ``meta.seq`` every frame delivered, so ``frame_index - seq`` is the number
    dropped so far.
    """

    def __init__(
        self,
        *,
        name: str,
        open_fn: OpenFn,
        camera_id: str,
        timeouts: LiveTimeouts,
        max_frames: int | None = None,
        health: HealthTracker | None = None,
    ) -> None:
        self.name = name
        self.camera_id = camera_id
        self.timeouts = timeouts
        self.max_frames = max_frames
        self.health = health or HealthTracker()
        self._open_fn = open_fn
        self._rng = random.Random()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._loss_requested = threading.Event()  # the consumer saw a stall; the thread reopens
        self._error: SourceError | None = None
        self._ready: np.ndarray | None = None  # newest complete frame, owned by the "mailbox"
        self._ready_stamp: tuple[int, int, int] = (0, 0, 0)  # (grab index, t_mono_ns, t_wall_ns)
        self._fresh = False  # _ready holds a frame the consumer has not taken yet
        self._back: np.ndarray | None = None  # the grab thread's buffer
        self._grabbed = 0
        self._alive_mono = time.monotonic()  # last frame, or last (re)connect: the stall clock
        self._attempts = 0  # reconnect attempts since the last delivered frame
        self.width = 0
        self.height = 0
        self._warned_size = False

        cap = open_fn()  # raises SourceError if it cannot be opened
        self._open_mono_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, args=(cap,), name=f"grab-{camera_id}", daemon=True)
        self._thread.start()
        with self._cond:
            got_first = self._cond.wait_for(
                lambda: self._fresh or self._error is not None, timeout=timeouts.first_frame_s
            )
            error = self._error
        if error is not None:
            self.close()
            raise error
        if not got_first:
            self.close()
            error = SourceError(
                f"{name} delivered no frame within {timeouts.first_frame_s:g} s of opening "
                f"(device busy or not streaming?)"
            )
            self.health.fail(str(error))
            raise error

    @property
    def dropped(self) -> int:
        return self.health.dropped

    @property
    def reconnects(self) -> int:
        return self.health.reconnects

    # ------------------------------------------------------------------ grab thread
    def _run(self, cap: cv2.VideoCapture | None) -> None:
        try:
            while cap is not None and not self._stop.is_set():
                cause = self._grab_until_lost(cap)
                cap.release()
                cap = None
                if cause is None:
                    break
                cap = self._reconnect(cause)
        except SourceError as exc:
            self._fail(exc)
        except Exception as exc:  # a thread cannot raise to its consumer: hand the error over instead
            error = SourceError(f"{self.name}: grabbing failed: {type(exc).__name__}: {exc}".rstrip())
            error.__cause__ = exc
            self._fail(error)
        finally:
            if cap is not None:
                cap.release()
            with self._cond:
                self._cond.notify_all()

    def _grab_until_lost(self, cap: cv2.VideoCapture) -> str | None:
        """Grab frames into the mailbox until the input is lost (returns why) or the grabber stops (None)."""
        stall_s = self.timeouts.stall_s
        self._alive_mono = time.monotonic()
        got_any = False
        while not self._stop.is_set():
            if self._loss_requested.is_set():
                self._loss_requested.clear()
                return f"delivered no frame for {stall_s:g} s"
            if not cap.grab():
                if self._stop.is_set():
                    return None
                return "stopped delivering frames" if got_any else "opened but delivered no frame"
            t_mono, t_wall = time.monotonic_ns(), time.time_ns()
            ok, image = cap.retrieve(self._back) if self._back is not None else cap.retrieve()
            if not ok or image is None:  # a grabbed frame that failed to decode: skip it and count it
                self.health.skip(f"{self.name}: a grabbed frame could not be decoded")
                if time.monotonic() - self._alive_mono > stall_s:
                    return f"delivered no decodable frame for {stall_s:g} s"
                continue
            got_any = True
            self._publish(image, t_mono, t_wall)
        return None

    def _publish(self, image: np.ndarray, t_mono: int, t_wall: int) -> None:
        """Put a grabbed frame in the mailbox (converted into the thread's own buffer)."""
        if self._back is None:  # the very first frame fixes the delivered size
            if not self.width:
                self.height, self.width = int(image.shape[0]), int(image.shape[1])
            self._back = np.empty((self.height, self.width, 3), np.uint8)
        back = self._back
        if image is not back:
            if (image.shape[1], image.shape[0]) != (self.width, self.height) and not self._warned_size:
                self._warned_size = True
                log.warning("%s changed frame size to %dx%d; resizing to the first frame's %dx%d",
                            self.name, image.shape[1], image.shape[0], self.width, self.height)
            image = as_bgr(image, width=self.width, height=self.height, out=back)
            if image is not back:
                np.copyto(back, image)
        with self._cond:
            index = self._grabbed
            self._grabbed += 1
            if self._fresh:
                self.health.dropped += 1
            back, self._ready = self._ready, back
            self._ready_stamp = (index, t_mono, t_wall)
            self._fresh = True
            self._alive_mono = time.monotonic()
            self._attempts = 0
            self.health.frame_read(t_mono)
            self._cond.notify_all()
        # first frame: the mailbox was empty, give the thread a buffer of its own
        self._back = back if back is not None else np.empty((self.height, self.width, 3), np.uint8)

    def _fail(self, error: SourceError) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
                self.health.fail(str(error))
            self._cond.notify_all()

    def _reconnect(self, cause: str) -> cv2.VideoCapture | None:
        """Reopen the input after it was lost; None when stopping or when the policy gave up."""
        policy = self.timeouts.reconnect
        if self._stop.is_set():
            return None
        message = f"{self.name} {cause}"
        if policy.max_attempts == 0:
            self._fail(SourceError(f"{message} (unplugged, busy or dead?)"))
            return None
        with self._cond:
            self.health.lost(message)
            self._cond.notify_all()
        log.warning("%s; reconnecting (%s)", message, policy.describe())
        lost_at = last_said = time.monotonic()
        last_error = cause
        while True:
            self._attempts += 1
            if policy.max_attempts is not None and self._attempts > policy.max_attempts:
                self._fail(SourceError(f"{message} and {policy.max_attempts} reconnect attempts failed "
                                       f"(last: {last_error})"))
                return None
            if self._stop.wait(policy.delay(self._attempts, self._rng)):
                return None
            try:
                cap = self._open_fn()
            except (SourceError, cv2.error, OSError) as exc:
                last_error = str(exc)
                log.debug("%s: reconnect attempt %d failed: %s", self.name, self._attempts, last_error)
                if time.monotonic() - last_said >= STILL_DOWN_LOG_S:
                    last_said = time.monotonic()
                    log.warning("%s still lost after %.0f s (%d attempts; last: %s)", self.name,
                                last_said - lost_at, self._attempts, last_error)
                continue
            self.health.reconnects += 1
            log.warning("%s: reopened after %.1f s (attempt %d)", self.name, time.monotonic() - lost_at,
                        self._attempts)
            return cap

    # ------------------------------------------------------------------ consumer
    def frames(self) -> Iterator[tuple[FrameMeta, np.ndarray]]:
        """Yield the newest frame each time one is available (blocks until then, across reconnects).

        Raises:
            SourceError: the input was lost and the reconnect policy gave up (or forbids reconnecting),
                or it failed otherwise.
        """
        front: np.ndarray | None = None
        seq = 0
        try:
            while self.max_frames is None or seq < self.max_frames:
                with self._cond:
                    if not self._wait_fresh():
                        return
                    # Swap the consumer's old buffer in as the mailbox and take the newest frame.
                    taken, self._ready = self._ready, front
                    index, t_mono, t_wall = self._ready_stamp
                    self._fresh = False
                if taken is None:  # cannot happen: _fresh is only set together with a filled mailbox
                    raise SourceError(f"{self.name}: internal error: a fresh frame without pixels")
                front = taken
                self.health.frames += 1
                yield (
                    make_meta(seq=seq, camera_id=self.camera_id, frame_index=index,
                              pts_ns=t_mono - self._open_mono_ns, width=self.width, height=self.height,
                              t_mono_ns=t_mono, t_wall_ns=t_wall),
                    front,
                )
                seq += 1
        finally:
            self.health.end()

    def _wait_fresh(self) -> bool:
        """Wait (holding ``_cond``) for a fresh frame: True when there is one, False when stopping."""
        blocked_since: float | None = None
        while not self._fresh:
            if self._error is not None:
                raise self._error
            if self._stop.is_set():
                return False
            if not self._thread.is_alive():
                raise SourceError(f"{self.name}: the grab thread ended unexpectedly")
            if blocked_since is not None or self.health.state is not SourceState.RECONNECTING:
                blocked_since = self._check_stall(blocked_since)
            self._cond.wait(0.25)
        if self._error is not None:
            raise self._error
        return True

    def _check_stall(self, blocked_since: float | None) -> float | None:
        """No frame for ``stall_s``: a loss. The grab thread (maybe blocked in a read) is asked to reopen.

        Returns when the loss was declared (None while there is none). Raises when the policy forbids
        reconnecting, or when the thread stays blocked in the capture for another ``stall_s`` and the
        policy has a finite number of attempts.
        """
        stall_s = self.timeouts.stall_s
        now = time.monotonic()
        if now - self._alive_mono < stall_s:
            return None
        if blocked_since is not None and not self._loss_requested.is_set():
            return None  # the grab thread took the loss over: it is reconnecting
        policy = self.timeouts.reconnect
        message = f"{self.name} delivered no frame for {stall_s:g} s (dead or disconnected)"
        if policy.max_attempts == 0:
            error = SourceError(message)
            self.health.fail(message)
            raise error
        if blocked_since is None:
            self._loss_requested.set()
            self.health.lost(message)
            log.warning("%s; reopening it once the capture's read returns", message)
            return now
        if policy.max_attempts is not None and now - blocked_since >= stall_s:
            error = SourceError(f"{message}, and its capture is still blocked in a read {stall_s:g} s later")
            self.health.fail(str(error))
            raise error
        return blocked_since

    def close(self, *, join_timeout_s: float = 2.0) -> None:
        """Stop the grab thread and release the capture. Idempotent.

        If the thread is blocked inside the capture (a hung network read) it is left to finish on its
        own (it is a daemon thread, and it releases the capture when its read returns).
        """
        self._stop.set()
        self.health.end()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(join_timeout_s)
            if self._thread.is_alive():
                log.warning("%s: grab thread still blocked in the capture after %.1f s", self.name, join_timeout_s)


class GrabbedSource(Source):
    """A live source whose frames come from a :class:`LatestFrameGrabber` (``self._grabber``)."""

    _grabber: LatestFrameGrabber
    _health: HealthTracker

    @property
    def dropped(self) -> int:
        """Frames grabbed but replaced by a newer one before they were delivered."""
        return self._health.dropped

    @property
    def reconnects(self) -> int:
        """Successful reopenings after the input was lost."""
        return self._health.reconnects

    def __iter__(self) -> Iterator[tuple[FrameMeta, np.ndarray]]:
        return self._grabber.frames()

    def close(self) -> None:
        """Stop the grab thread and release the device or stream. Idempotent."""
        grabber = getattr(self, "_grabber", None)
        if grabber is not None:
            grabber.close()
