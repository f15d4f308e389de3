"""ZeroMQ publisher of label maps (the pipeline's output).

Design: an **XPUB** socket with non-blocking sends and one queue per reader (``hwm`` messages on this
side, plus the reader's own ``RCVHWM`` and the kernel's socket buffers). **Readers are isolated**: a
reader that stops or reads too slowly fills its own queue and loses messages while it is full; every
other reader, and the pipeline, go on as if it were not there. The publisher never waits.

What the publisher can count: libzmq does not say which reader lost which message, so each message is
first offered with ``XPUB_NODROP`` (refused at once if some reader's queue is full) and, when refused,
sent again without it (to every reader with room). A refusal is counted in :attr:`PublisherStats.dropped`
and logged at most once per ``log_interval_s``: it marks a message that at least one reader lost, the
first of a run of losses for that reader (libzmq then sets the reader aside, so the next ones are not
seen here, until it has read half its queue). The exact losses are counted by each reader, as gaps in
``seq`` (:attr:`Subscriber.gaps`).

XPUB also reports subscriptions: the class table (``<topic>/classes``) is sent when a subscriber
joins, at start, and then every ``classes_interval_s`` so late joiners always get it.

When a stream ends, :meth:`Publisher.end_stream` sends one end-of-stream message (``<topic>/end``)
with the ``seq`` of the last label message: a subscriber can then tell that the *last* messages of a
replay were dropped, which a gap in ``seq`` cannot show.

With ``curve`` (:class:`~perception.transport.curve.CurveServerKeys`) the socket is a CURVE server:
traffic is encrypted and a ZAP handler admits only the listed client keys. Without it, binding an
address that other hosts can reach logs a warning.
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
from perception.transport.address import check_address, is_local
from perception.transport.curve import CurveServerKeys, ZapHandler, apply_server
from perception.transport.wire import (
    CLASSES_SUFFIX,
    END_SUFFIX,
    STATUS_SUFFIX,
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
    """Label messages handed to the socket (each reader with room in its queue gets it)."""
    dropped: int
    """Label messages that some reader's full queue refused (``publish`` returned False); the other
    readers received them. Each marks the start of a run of losses of one reader: a lower bound on
    what readers lost, whose exact losses are their own gaps in ``seq``."""
    classes_sent: int
    """Class-table messages sent."""
    subscriptions: int
    """Subscribe events seen (one per subscriber per matching topic prefix)."""
    bytes_sent: int
    """Bytes of label messages handed to the socket (header + parts, after compression)."""
    readers: int = 0
    """Subscribers of the label topic now connected."""
    refused_clients: int = 0
    """CURVE handshakes refused because the client's key is not allowed (0 without CURVE)."""


class _Pending:
    """Marks a pooled buffer handed to a send whose tracker is not known yet."""

    done = False


_PENDING = _Pending()


def _topic_ok(topic: str) -> str:
    if not topic or "\0" in topic:
        raise TransportError(f"topic must be a non-empty string without NUL bytes, got {topic!r}")
    return topic


def _bind(ctx: zmq.Context, address: str, *, hwm: int, linger_ms: int, curve: CurveServerKeys | None) -> zmq.Socket:
    """An XPUB socket bound to ``address``: per-reader queues of ``hwm``, refusing sends while one is full
    (see the module docstring), a CURVE server when ``curve`` is given."""
    sock = ctx.socket(zmq.XPUB)
    try:
        sock.setsockopt(zmq.LINGER, int(linger_ms))
        sock.setsockopt(zmq.SNDHWM, int(hwm))
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every subscriber's join, not only the first
        sock.setsockopt(zmq.XPUB_NODROP, 1)  # the probe; Publisher._send retries without it
        if curve is not None:
            apply_server(sock, curve)
        bind_to = address
        if address.startswith("tcp://") and address.endswith(":0"):
            bind_to = address[:-2] + ":*"
        sock.bind(bind_to)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise TransportError(
            f"cannot bind the publisher to {address!r}: {exc.strerror} "
            "(is another pipeline using that port? pick another with --publish)"
        ) from exc
    return sock


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
        curve: CurveServerKeys | None = None,
        log_interval_s: float = 10.0,
        linger_ms: int = 500,
    ) -> None:
        """
        Args:
            address: ZeroMQ endpoint to bind (``tcp://HOST:PORT`` with PORT 1-65535, or ``0`` / ``*`` to
                pick a free one, see :attr:`endpoint`; ``ipc://PATH`` where PATH is free or a stale
                socket; ``inproc://``).
            topic: first frame of every label message; the class table goes to ``topic + "/classes"``.
            encoding: ``raw`` (no CPU, most bytes), ``zstd`` (best ratio) or ``lz4`` (fastest codec).
            level: compression level; None for the codec's real-time default.
            hwm: messages queued per reader before that reader starts losing messages. Larger absorbs
                longer hiccups of a reader but delivers staler frames and holds more memory (hwm x
                message size, shared by the readers).
            classes: the class table published on ``<topic>/classes``.
            preview: ``jpeg`` adds a downscaled JPEG of the frame (for viewers); ``none`` sends none.
            preview_quality: JPEG quality 1..100; lower is smaller and blurrier.
            preview_max_width: previews wider than this are downscaled (aspect kept); smaller costs
                less CPU and bandwidth.
            classes_interval_s: the class table is re-sent at least this often; shorter helps late
                joiners that missed the subscribe-triggered copy, at a few hundred bytes each.
            curve: encrypt, and admit only these client keys (:meth:`CurveServerKeys.load`); None: plain
                TCP, which anyone who can reach the port may read.
            log_interval_s: a reader falling behind, or a refused CURVE client, is logged at most this often.
            linger_ms: on :meth:`close`, how long queued messages may still be sent; bounded so that a
                stalled subscriber cannot hold the pipeline up at shutdown.
        """
        if int(hwm) < 1:
            raise TransportError(f"hwm must be >= 1, got {hwm}")
        if classes_interval_s <= 0:
            raise TransportError(f"classes_interval_s must be > 0, got {classes_interval_s}")
        self.address = check_address(address, bind=True)
        self.topic = _topic_ok(topic)
        self._topic_b = topic.encode()
        self._classes_topic_b = (topic + CLASSES_SUFFIX).encode()
        self._end_topic_b = (topic + END_SUFFIX).encode()
        self._status_topic_b = (topic + STATUS_SUFFIX).encode()
        self.classes: tuple[ClassInfo, ...] = tuple(classes)
        self.classes_version = classes_version(self.classes)
        self._encoder = MessageEncoder(
            encoding=encoding, level=level, preview=preview, preview_quality=preview_quality,
            preview_max_width=preview_max_width,
        )
        self._classes_interval_ns = int(classes_interval_s * 1e9)
        self._seq = self._sent = self._dropped = self._bytes = 0
        self._classes_sent = self._subscriptions = self._label_subscribers = 0
        self._log_interval_ns = int(log_interval_s * 1e9)
        self._logged_drops, self._last_drop_log_ns = 0, -self._log_interval_ns
        self._reader_was_full = False  # some reader may be set aside by libzmq (see end_stream)
        # raw maps go out without a copy, so what is handed to libzmq must not change until libzmq has
        # sent it: callers' (reused) arrays are copied into pooled buffers, each reused only once its
        # MessageTracker says libzmq released it. The pool is bounded; past it, fresh buffers are used.
        self._pool: list[tuple[np.ndarray, zmq.MessageTracker | None]] = []
        self._pool_max = 2 * int(hwm) + 4
        self._classes_due = True  # send at start
        self._last_classes_ns = 0
        self._closed = False

        self.curve = curve is not None
        self._open(curve, hwm=hwm, linger_ms=linger_ms, log_interval_s=log_interval_s)
        self._send_classes()

    def _open(self, curve: CurveServerKeys | None, *, hwm: int, linger_ms: int, log_interval_s: float) -> None:
        self._ctx = zmq.Context(io_threads=1)
        self._zap: ZapHandler | None = None
        try:
            if curve is not None:
                self._zap = ZapHandler(self._ctx, curve.clients, log_interval_s=log_interval_s)
            self._sock = _bind(self._ctx, self.address, hwm=hwm, linger_ms=linger_ms, curve=curve)
        except BaseException:
            self._close_context()
            raise
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        """The bound endpoint, with the real port when port 0 / ``*`` was asked for."""
        if curve is None and not is_local(self.endpoint):
            log.warning("publishing on %s without CURVE: any host that can reach it can read the stream "
                        "(previews included) and nothing tells subscribers it is this pipeline; bind "
                        "127.0.0.1 or set publish.curve (perception keys generate)", self.endpoint)

    # --- properties -------------------------------------------------------------------------
    @property
    def stats(self) -> PublisherStats:
        refused = self._zap.refused if self._zap is not None else 0
        return PublisherStats(self._sent, self._dropped, self._classes_sent, self._subscriptions, self._bytes,
                              self._label_subscribers, refused)

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

    def _send(self, frames: list, *, copy: bool = True, track: bool = False) -> tuple[bool, zmq.MessageTracker | None]:
        """Send to every reader with room; never blocks. Returns (every reader had room, tracker).

        The first try keeps ``XPUB_NODROP``: it fails at once when a reader's queue is full, and then
        the message goes out again without it, to the readers with room (the full one loses it).
        """
        try:
            return True, self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=copy, track=track)
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:
            raise TransportError(f"publishing on {self.endpoint} failed: {exc.strerror}") from exc
        self._reader_was_full = True
        self._sock.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            return False, self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=copy, track=track)
        except zmq.ZMQError as exc:
            raise TransportError(f"publishing on {self.endpoint} failed: {exc.strerror}") from exc
        finally:
            self._sock.setsockopt(zmq.XPUB_NODROP, 1)

    def _send_classes(self) -> None:
        now = time.time_ns()
        self._send([self._classes_topic_b, self._encoder.encode_classes(self.classes, t_publish_wall_ns=now)])
        self._classes_sent += 1
        self._classes_due = False
        self._last_classes_ns = time.monotonic_ns()

    def _count_drop(self) -> None:
        """A reader's queue was full: count it, and log at most once per ``log_interval_s``."""
        self._dropped += 1
        now = time.monotonic_ns()
        if now - self._last_drop_log_ns >= self._log_interval_ns:
            log.warning(
                "a reader of %s is not keeping up (its queue of publish.hwm messages is full): it loses "
                "messages until it catches up, the other %d reader(s) are unaffected; %d such message(s) "
                "since the last report, %d in all", self.endpoint, max(0, self._label_subscribers - 1),
                self._dropped - self._logged_drops, self._dropped,
            )
            self._logged_drops, self._last_drop_log_ns = self._dropped, now

    def publish_status(self, body: dict) -> bool:
        """Send a status message (``<topic>/status``, docs/wire-format.md); never blocks. False when every
        reader's queue was full (a status is worth nothing late: the next one follows within a second)."""
        self._check_open()
        frames = [self._status_topic_b, self._encoder.encode_status(body, t_publish_wall_ns=time.time_ns())]
        try:
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            raise TransportError(f"publishing on {self.endpoint} failed: {exc.strerror}") from exc

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
            True when every reader's queue took the message; False when a reader's queue was full
            (that reader lost it, the others got it; counted in ``stats.dropped``).
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
            everyone, tracker = self._send([self._topic_b, *frames], copy=False, track=raw)
        except TransportError:
            self._release_pending(labels, instances)
            raise
        if raw:
            self._attach_tracker(tracker, labels, instances)
        self._sent += 1
        self._bytes += sum(f.nbytes if isinstance(f, np.ndarray) else len(f) for f in frames)
        if not everyone:
            self._count_drop()
        return everyone

    def end_stream(self, *, reason: str = "end", timeout_s: float = 1.0) -> bool:
        """Send the end-of-stream message: the last ``seq``, the sent and dropped counts, and why.

        Unlike :meth:`publish` this waits (up to ``timeout_s``) while a reader's queue is full, so that
        a reader still reading gets it after every message queued before it. When a reader's queue has
        been full during the stream, libzmq may still hold that reader aside (until it has read half its
        queue) where the publisher cannot see it: the message is then sent again every 50 ms until
        ``timeout_s`` (readers take the first copy). The bound keeps a stalled reader from holding up
        the shutdown.

        Args:
            reason: ``"end"`` (the input ended) or ``"stopped"`` (interrupted or failed).
            timeout_s: how long to retry while a reader's queue is full.

        Returns:
            True when every reader known to the socket had room for it, False when the timeout passed first.
        """
        self._check_open()
        self._poll_subscriptions()
        frames = [
            self._end_topic_b,
            self._encoder.encode_end(
                last_seq=self._seq - 1, published=self._sent, dropped=self._dropped, reason=reason,
                t_publish_wall_ns=time.time_ns(),
            ),
        ]
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        sent = False
        while True:
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
                sent = True
                if not self._reader_was_full:
                    return True
            except zmq.Again:
                pass
            except zmq.ZMQError as exc:
                raise TransportError(f"publishing on {self.endpoint} failed: {exc.strerror}") from exc
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05 if self._reader_was_full else 0.005)
        if sent:
            return True
        log.warning("end-of-stream message: a reader's queue stayed full for %.1f s; sent to the others", timeout_s)
        self._send(frames)
        return False

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
        self._close_context()

    def _close_context(self) -> None:
        if self._zap is not None:
            self._zap.close()
        self._ctx.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.endpoint
        return f"Publisher({state}, topic={self.topic!r}, encoding={self.encoding!r})"
