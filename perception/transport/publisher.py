"""ZeroMQ publisher of label maps (the pipeline's output).

Design: an **XPUB** socket with ``XPUB_NODROP`` and non-blocking sends. While every subscriber's queue
has room a message goes to all of them; when any subscriber's queue is full (its high-water mark is
reached because it reads too slowly or stopped reading), the send fails at once with ``zmq.Again`` and
:meth:`Publisher.publish` returns ``False`` and counts a drop. The publisher therefore never blocks and
always knows how many messages it dropped; subscribers see the drop as a gap in ``seq``.

The trade-off of counting drops: one stalled subscriber makes *every* subscriber miss the messages
dropped while its queue is full. ``count_drops=False`` switches to libzmq's lossy behaviour instead
(the stalled subscriber alone loses messages, the publisher cannot count them; subscribers still see
gaps). Viewers that may stall should use ``latest_only`` subscribers, which drain their queue.

XPUB also reports subscriptions: the class table (``<topic>/classes``) is sent when a subscriber
joins, at start, and then every ``classes_interval_s`` so late joiners always get it.

When a stream ends, :meth:`Publisher.end_stream` sends one end-of-stream message (``<topic>/end``)
with the ``seq`` of the last label message: a subscriber can then tell that the *last* messages of a
replay were dropped, which a gap in ``seq`` cannot show.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import zmq

from perception.errors import TransportError
from perception.transport.wire import (
    CLASSES_SUFFIX,
    END_SUFFIX,
    Encoding,
    MessageEncoder,
    PreviewMode,
    classes_version,
)
from perception.types import ClassInfo, FrameResult

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
DEFAULT_TOPIC = "perception"


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters since the publisher was opened."""

    sent: int
    """Label messages accepted by the socket (delivered to every subscriber present, possibly none)."""
    dropped: int
    """Label messages refused because a subscriber's queue was full (``publish`` returned False)."""
    classes_sent: int
    """Class-table messages sent."""
    subscriptions: int
    """Subscribe events seen (one per subscriber per matching topic prefix)."""
    bytes_sent: int
    """Bytes of label messages accepted (header + parts, after compression)."""


class _Pending:
    """Marks a pooled buffer handed to a send whose tracker is not known yet."""

    done = False


_PENDING = _Pending()


def _topic_ok(topic: str) -> str:
    if not topic or "\0" in topic:
        raise TransportError(f"topic must be a non-empty string without NUL bytes, got {topic!r}")
    return topic


class Publisher:
    """Publishes one multipart message per processed frame. See ``docs/wire-format.md``.

    Raw label and instance maps are handed to ZeroMQ without a copy: **do not modify an array after
    passing it to** :meth:`publish` (pass a fresh array per frame, or use a compressed encoding).
    """

    def __init__(
        self,
        *,
        address: str = DEFAULT_ADDRESS,
        topic: str = DEFAULT_TOPIC,
        encoding: Encoding = "raw",
        level: int | None = None,
        hwm: int = 4,
        classes: Sequence[ClassInfo],
        preview: PreviewMode = "none",
        preview_quality: int = 80,
        preview_max_width: int = 640,
        classes_interval_s: float = 1.0,
        count_drops: bool = True,
        linger_ms: int = 500,
    ) -> None:
        """
        Args:
            address: ZeroMQ endpoint to bind (``tcp://HOST:PORT``; port ``0`` or ``*`` picks a free one,
                see :attr:`endpoint`; ``ipc://`` and ``inproc://`` work too).
            topic: first frame of every label message; the class table goes to ``topic + "/classes"``.
            encoding: ``raw`` (no CPU, most bytes), ``zstd`` (best ratio) or ``lz4`` (fastest codec).
            level: compression level; None for the codec's real-time default.
            hwm: messages queued per subscriber before drops start. Larger absorbs longer hiccups of a
                subscriber but delivers staler frames and holds more memory (hwm x message size).
            classes: the class table published on ``<topic>/classes``.
            preview: ``jpeg`` adds a downscaled JPEG of the frame (for viewers); ``none`` sends none.
            preview_quality: JPEG quality 1..100; lower is smaller and blurrier.
            preview_max_width: previews wider than this are downscaled (aspect kept); smaller costs
                less CPU and bandwidth.
            classes_interval_s: the class table is re-sent at least this often; shorter helps late
                joiners that missed the subscribe-triggered copy, at a few hundred bytes each.
            count_drops: True (default): a full subscriber queue makes ``publish`` return False and
                counts the drop, for all subscribers; False: libzmq drops per subscriber, uncounted.
            linger_ms: on :meth:`close`, how long queued messages may still be sent; bounded so that a
                stalled subscriber cannot hold the pipeline up at shutdown.
        """
        if int(hwm) < 1:
            raise TransportError(f"hwm must be >= 1, got {hwm}")
        if classes_interval_s <= 0:
            raise TransportError(f"classes_interval_s must be > 0, got {classes_interval_s}")
        self.address = address
        self.topic = _topic_ok(topic)
        self._topic_b = topic.encode()
        self._classes_topic_b = (topic + CLASSES_SUFFIX).encode()
        self._end_topic_b = (topic + END_SUFFIX).encode()
        self.classes: tuple[ClassInfo, ...] = tuple(classes)
        self.classes_version = classes_version(self.classes)
        self._encoder = MessageEncoder(
            encoding=encoding,
            level=level,
            preview=preview,
            preview_quality=preview_quality,
            preview_max_width=preview_max_width,
        )
        self._classes_interval_ns = int(classes_interval_s * 1e9)
        self._seq = 0
        self._sent = 0
        self._dropped = 0
        self._classes_sent = 0
        self._subscriptions = 0
        self._label_subscribers = 0
        self._bytes = 0
        # raw maps go out without a copy, so what is handed to libzmq must not change until libzmq has
        # sent it: callers' (reused) arrays are copied into pooled buffers, each reused only once its
        # MessageTracker says libzmq released it. The pool is bounded; past it, fresh buffers are used.
        self._pool: list[tuple[np.ndarray, zmq.MessageTracker | None]] = []
        self._pool_max = 2 * int(hwm) + 4
        self._classes_due = True  # send at start
        self._last_classes_ns = 0
        self._closed = False

        self._ctx = zmq.Context(io_threads=1)
        sock = self._ctx.socket(zmq.XPUB)
        try:
            sock.setsockopt(zmq.LINGER, int(linger_ms))
            sock.setsockopt(zmq.SNDHWM, int(hwm))
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every subscriber's join, not only the first
            sock.setsockopt(zmq.XPUB_NODROP, 1 if count_drops else 0)
            bind_to = address
            if address.startswith("tcp://") and address.endswith(":0"):
                bind_to = address[:-2] + ":*"
            sock.bind(bind_to)
            endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            self._ctx.term()
            raise TransportError(
                f"cannot bind the publisher to {address!r}: {exc.strerror} "
                "(is another pipeline using that port? pick another with --publish)"
            ) from exc
        self._sock = sock
        self.endpoint: str = endpoint
        """The bound endpoint, with the real port when port 0 / ``*`` was asked for."""
        self._send_classes()

    # --- properties -------------------------------------------------------------------------
    @property
    def stats(self) -> PublisherStats:
        return PublisherStats(self._sent, self._dropped, self._classes_sent, self._subscriptions, self._bytes)

    @property
    def session(self) -> int:
        """Random id carried in every message; changes when a publisher restarts."""
        return self._encoder.session

    @property
    def encoding(self) -> str:
        return self._encoder.encoding

    # --- sending ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"publisher on {self.address} is closed")

    def _poll_subscriptions(self) -> None:
        """Read pending (un)subscribe events; a subscribe matching our topics schedules the class table."""
        while True:
            try:
                ev = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            prefix = ev[1:]
            if ev[:1] == b"\x01":
                if self._topic_b.startswith(prefix) or self._classes_topic_b.startswith(prefix):
                    self._subscriptions += 1
                    self._classes_due = True
                if self._topic_b.startswith(prefix):
                    self._label_subscribers += 1
            elif ev[:1] == b"\x00" and self._topic_b.startswith(prefix):
                self._label_subscribers = max(0, self._label_subscribers - 1)

    def _send_classes(self) -> None:
        now = time.time_ns()
        frames = [self._classes_topic_b, self._encoder.encode_classes(self.classes, t_publish_wall_ns=now)]
        try:
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            self._classes_due = True  # a queue is full: retry on the next publish
            return
        self._classes_sent += 1
        self._classes_due = False
        self._last_classes_ns = time.monotonic_ns()

    def poll(self) -> None:
        """Handle subscriptions and the periodic class table without publishing (for idle loops)."""
        self._check_open()
        self._poll_subscriptions()
        if self._classes_due or time.monotonic_ns() - self._last_classes_ns >= self._classes_interval_ns:
            self._send_classes()

    def publish(self, result: FrameResult) -> bool:
        """Publish one frame's result (:class:`~perception.types.FrameResult`). Never blocks.

        ``result.labels`` must be ``meta.height x meta.width``; ``result.frame`` is used only for the
        JPEG preview (if enabled). With ``raw`` encoding the label and instance maps are copied into
        pooled buffers that libzmq sends without a further copy, so the caller may reuse its arrays.

        Returns:
            True when the message was queued, False when it was dropped (a subscriber queue is full).
        """
        self._check_open()
        self.poll()
        seq = self._seq
        self._seq += 1
        raw = self._encoder.encoding == "raw"
        labels, instances = result.labels, result.instance_map
        if raw:
            labels = self._pooled_copy(labels)
            if instances is not None:
                instances = self._pooled_copy(instances)
            result = dataclasses.replace(result, labels=labels, instance_map=instances)
        # t_pub_wall is stamped by the encoder once the parts are compressed, just before the send
        frames = self._encoder.encode_labels(result, seq=seq, classes_version=self.classes_version)
        try:
            tracker = self._sock.send_multipart([self._topic_b, *frames], flags=zmq.NOBLOCK, copy=False, track=raw)
        except zmq.Again:
            self._dropped += 1
            self._release_pending(labels, instances)
            return False
        except zmq.ZMQError as exc:
            raise TransportError(f"publishing on {self.endpoint} failed: {exc.strerror}") from exc
        if raw:
            self._attach_tracker(tracker, labels, instances)
        self._sent += 1
        self._bytes += sum(f.nbytes if isinstance(f, np.ndarray) else len(f) for f in frames)
        return True

    def end_stream(self, *, reason: str = "end", timeout_s: float = 1.0) -> bool:
        """Send the end-of-stream message: the last ``seq``, the sent and dropped counts, and why.

        Unlike :meth:`publish` this waits (up to ``timeout_s``) while a subscriber's queue is full, so
        that a subscriber still reading gets it after every message queued before it; the bound keeps
        a stalled subscriber from holding up the shutdown.

        Args:
            reason: ``"end"`` (the input ended) or ``"stopped"`` (interrupted or failed).
            timeout_s: how long to retry while a subscriber queue is full.

        Returns:
            True when the message was queued, False when the timeout passed first.
        """
        self._check_open()
        self._poll_subscriptions()
        frames = [
            self._end_topic_b,
            self._encoder.encode_end(
                last_seq=self._seq - 1,
                published=self._sent,
                dropped=self._dropped,
                reason=reason,
                t_publish_wall_ns=time.time_ns(),
            ),
        ]
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        while True:
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
                return True
            except zmq.Again:
                if time.monotonic() >= deadline:
                    log.warning(
                        "end-of-stream message not sent within %.1f s: a subscriber's queue stayed full", timeout_s
                    )
                    return False
                time.sleep(0.005)
            except zmq.ZMQError as exc:
                raise TransportError(f"publishing on {self.endpoint} failed: {exc.strerror}") from exc

    # --- raw buffer pool --------------------------------------------------------------------
    def _pooled_copy(self, arr: np.ndarray) -> np.ndarray:
        for i, (buf, tracker) in enumerate(self._pool):
            if buf.shape == arr.shape and buf.dtype == arr.dtype and (tracker is None or tracker.done):
                self._pool[i] = (buf, _PENDING)
                np.copyto(buf, arr)
                return buf
        buf = np.array(arr, copy=True, order="C")
        if len(self._pool) < self._pool_max:
            self._pool.append((buf, _PENDING))
        return buf

    def _attach_tracker(self, tracker, *bufs) -> None:
        ids = {id(b) for b in bufs if b is not None}
        self._pool = [(b, tracker if id(b) in ids else t) for b, t in self._pool]

    def _release_pending(self, *bufs) -> None:
        ids = {id(b) for b in bufs if b is not None}
        self._pool = [(b, None if id(b) in ids else t) for b, t in self._pool]

    def wait_for_subscribers(self, n: int, *, timeout_s: float, stop=None) -> int:
        """Block until ``n`` subscribers of the label topic have joined (or ``timeout_s``, or ``stop``).

        For replays that must not lose their first frames to ZeroMQ's slow-joiner window. Returns the
        number of subscribers seen; raises :class:`TransportError` on timeout.
        """
        deadline = time.monotonic() + timeout_s
        while self._label_subscribers < n:
            if stop is not None and stop.is_set():
                return self._label_subscribers
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"{self._label_subscribers} of {n} subscribers connected to {self.endpoint} within {timeout_s} s "
                    "(publish.wait_for_subscribers)"
                )
            if self._sock.poll(50, zmq.POLLIN):
                self._poll_subscriptions()
        self.poll()
        return self._label_subscribers

    # --- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the socket (queued messages get ``linger_ms`` to leave) and the context. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sock.close()
        self._ctx.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.endpoint
        return f"Publisher({state}, topic={self.topic!r}, encoding={self.encoding!r})"
