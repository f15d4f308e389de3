"""Latest-frame grabbing for live inputs (cameras, network streams, GStreamer pipelines).

A background thread reads the capture as fast as it delivers and keeps only the newest frame; the
consumer always gets the latest one, and every frame it never saw is counted in ``dropped``. Three
preallocated buffers rotate between the thread and the consumer (triple buffering), so grabbing
allocates nothing per frame and never blocks on a slow consumer.

The thread owns the ``cv2.VideoCapture``: it is released by the thread when it stops, so a thread
stuck inside a blocking ``grab()`` never races a ``release()`` from another thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from perception.errors import SourceError
from perception.sources.base import Source, as_bgr, make_meta
from perception.types import FrameMeta

log = logging.getLogger(__name__)

OpenFn = Callable[[], "cv2.VideoCapture"]
"""Opens the capture (again); returns an opened ``cv2.VideoCapture`` or raises SourceError."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveTimeouts:
    """How long a live input may stay silent, and how hard to try to get it back.

    Attributes:
        first_frame_s: the first frame must arrive within this time after opening. Longer tolerates
            slow camera start-up or stream buffering; shorter reports a silent device sooner.
        stall_s: once running, no new frame for this long means the input died. Shorter detects a
            dead camera sooner but may give up on a stream that only hiccups.
        reconnect_attempts: after the input stops delivering, reopen it up to this many times before
            raising (0 = fail at once; right for cameras, whose failures are rarely transient).
        reconnect_delay_s: wait before the first reopen; doubles each attempt up to
            ``reconnect_max_delay_s``. Longer is gentler on a rebooting server, shorter recovers sooner.
        reconnect_max_delay_s: cap of the growing delay between reopen attempts.
    """

    first_frame_s: float = 5.0
    stall_s: float = 5.0
    reconnect_attempts: int = 0
    reconnect_delay_s: float = 0.5
    reconnect_max_delay_s: float = 5.0


class LatestFrameGrabber:
    """Background reader of a live capture that keeps only the newest frame.

    Args:
        name: how errors and logs name the input (``camera 0``, ``stream rtsp://...``).
        open_fn: opens the capture; called once here and again on each reconnect attempt.
        camera_id: id put in every frame's :class:`FrameMeta`.
        timeouts: first-frame, stall and reconnect settings.
        max_frames: stop after delivering this many frames (None = until closed).

    The constructor opens the input and waits for the first frame (``timeouts.first_frame_s``), so
    ``width``/``height`` are known when it returns. Later frames of another size are resized to it.

    ``frames()`` yields ``(FrameMeta, uint8[H, W, 3])``; the array belongs to the grabber again once the
    consumer asks for the next frame. ``meta.frame_index`` counts every frame grabbed from the input,
    ``meta.seq`` every frame delivered, so ``frame_index - seq`` is the number dropped so far.
    """

    def __init__(
        self,
        *,
        name: str,
        open_fn: OpenFn,
        camera_id: str,
        timeouts: LiveTimeouts,
        max_frames: int | None = None,
    ) -> None:
        self.name = name
        self.camera_id = camera_id
        self.timeouts = timeouts
        self.max_frames = max_frames
        self._open_fn = open_fn
        self.dropped = 0
        """Frames grabbed from the input but replaced by a newer one before the consumer took them."""
        self.reconnects = 0
        """Successful reopenings of the input after it stopped delivering."""
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._error: SourceError | None = None
        self._reconnecting = False
        self._ready: np.ndarray | None = None  # newest complete frame, owned by the "mailbox"
        self._ready_stamp: tuple[int, int, int] = (0, 0, 0)  # (grab index, t_mono_ns, t_wall_ns)
        self._fresh = False  # _ready holds a frame the consumer has not taken yet
        self._grabbed = 0
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
            raise SourceError(
                f"{name} delivered no frame within {timeouts.first_frame_s:g} s of opening "
                f"(device busy or not streaming?)"
            )

    # ------------------------------------------------------------------ grab thread
    def _run(self, cap: cv2.VideoCapture) -> None:
        back: np.ndarray | None = None
        try:
            while not self._stop.is_set():
                if not cap.grab():
                    cap.release()
                    reopened = self._reconnect()
                    if reopened is None:
                        return
                    cap = reopened
                    continue
                t_mono, t_wall = time.monotonic_ns(), time.time_ns()
                ok, image = cap.retrieve(back) if back is not None else cap.retrieve()
                if not ok or image is None:
                    continue  # a grabbed frame that failed to decode: skip it, the stall timer still runs
                if back is None:  # the very first frame fixes the delivered size
                    if not self.width:
                        self.height, self.width = int(image.shape[0]), int(image.shape[1])
                    back = np.empty((self.height, self.width, 3), np.uint8)
                if image is not back:
                    if (image.shape[1], image.shape[0]) != (self.width, self.height) and not self._warned_size:
                        self._warned_size = True
                        log.warning(
                            "%s changed frame size to %dx%d; resizing to the first frame's %dx%d",
                            self.name,
                            image.shape[1],
                            image.shape[0],
                            self.width,
                            self.height,
                        )
                    image = as_bgr(image, width=self.width, height=self.height, out=back)
                    if image is not back:
                        np.copyto(back, image)
                with self._cond:
                    index = self._grabbed
                    self._grabbed += 1
                    if self._fresh:
                        self.dropped += 1
                    back, self._ready = self._ready, back
                    self._ready_stamp = (index, t_mono, t_wall)
                    self._fresh = True
                    self._cond.notify_all()
                if back is None:  # first frame: the mailbox was empty, give the thread its own buffer
                    back = np.empty((self.height, self.width, 3), np.uint8)
        except SourceError as exc:
            self._fail(exc)
        except Exception as exc:  # a thread cannot raise to its consumer: hand the error over instead
            error = SourceError(f"{self.name}: grabbing failed: {type(exc).__name__}: {exc}".rstrip())
            error.__cause__ = exc
            self._fail(error)
        finally:
            cap.release()
            with self._cond:
                self._cond.notify_all()

    def _fail(self, error: SourceError) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()

    def _reconnect(self) -> cv2.VideoCapture | None:
        """Reopen the input after it stopped; None when stopping or when all attempts failed."""
        t = self.timeouts
        if self._stop.is_set():
            return None
        what = "stopped delivering frames" if self._grabbed else "opened but delivered no frame"
        if t.reconnect_attempts <= 0:
            self._fail(SourceError(f"{self.name} {what} (unplugged, busy or dead?)"))
            return None
        with self._cond:
            self._reconnecting = True
        delay = t.reconnect_delay_s
        try:
            for attempt in range(1, t.reconnect_attempts + 1):
                log.warning(
                    "%s %s; reconnect attempt %d/%d in %.1f s",
                    self.name,
                    what,
                    attempt,
                    t.reconnect_attempts,
                    delay,
                )
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, t.reconnect_max_delay_s)
                try:
                    cap = self._open_fn()
                except SourceError as exc:
                    log.warning("%s: reconnect attempt %d failed: %s", self.name, attempt, exc)
                    continue
                self.reconnects += 1
                log.warning("%s: reconnected on attempt %d", self.name, attempt)
                return cap
            self._fail(
                SourceError(
                    f"{self.name} {what} and {t.reconnect_attempts} reconnect attempts failed"
                )
            )
            return None
        finally:
            with self._cond:
                self._reconnecting = False
                self._cond.notify_all()

    # ------------------------------------------------------------------ consumer
    def frames(self) -> Iterator[tuple[FrameMeta, np.ndarray]]:
        """Yield the newest frame each time one is available (blocks until then).

        Raises:
            SourceError: the input died (stall timeout), failed, or could not be reconnected.
        """
        front: np.ndarray | None = None
        seq = 0
        while self.max_frames is None or seq < self.max_frames:
            with self._cond:
                deadline = time.monotonic() + self.timeouts.stall_s
                while not self._fresh:
                    if self._error is not None:
                        raise self._error
                    if self._stop.is_set():
                        return
                    if not self._thread.is_alive():
                        raise SourceError(f"{self.name}: the grab thread ended unexpectedly")
                    remaining = deadline - time.monotonic()
                    if self._reconnecting:
                        remaining = self.timeouts.stall_s  # the reconnect loop is bounded; wait on it
                        deadline = time.monotonic() + remaining
                    if remaining <= 0:
                        raise SourceError(
                            f"{self.name} delivered no frame for {self.timeouts.stall_s:g} s "
                            f"(dead or disconnected)"
                        )
                    self._cond.wait(min(remaining, 0.5))
                if self._error is not None:
                    raise self._error
                # Swap the consumer's old buffer in as the mailbox and take the newest frame.
                taken, self._ready = self._ready, front
                index, t_mono, t_wall = self._ready_stamp
                self._fresh = False
            if taken is None:  # cannot happen: _fresh is only set together with a filled mailbox
                raise SourceError(f"{self.name}: internal error: a fresh frame without pixels")
            front = taken
            yield (
                make_meta(
                    seq=seq,
                    camera_id=self.camera_id,
                    frame_index=index,
                    pts_ns=t_mono - self._open_mono_ns,
                    width=self.width,
                    height=self.height,
                    t_mono_ns=t_mono,
                    t_wall_ns=t_wall,
                ),
                front,
            )
            seq += 1

    def close(self, *, join_timeout_s: float = 2.0) -> None:
        """Stop the grab thread and release the capture. Idempotent.

        If the thread is blocked inside the capture (a hung network read) it is left to finish on its
        own (it is a daemon thread, and it releases the capture when its read returns).
        """
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(join_timeout_s)
            if self._thread.is_alive():
                log.warning("%s: grab thread still blocked in the capture after %.1f s", self.name, join_timeout_s)


class GrabbedSource(Source):
    """A live source whose frames come from a :class:`LatestFrameGrabber` (``self._grabber``)."""

    _grabber: LatestFrameGrabber

    @property
    def dropped(self) -> int:
        """Frames grabbed but replaced by a newer one before they were delivered."""
        return self._grabber.dropped

    @property
    def reconnects(self) -> int:
        """Successful reopenings after the input stopped delivering."""
        return self._grabber.reconnects

    def __iter__(self) -> Iterator[tuple[FrameMeta, np.ndarray]]:
        return self._grabber.frames()

    def close(self) -> None:
        """Stop the grab thread and release the device or stream. Idempotent."""
        self._grabber.close()
