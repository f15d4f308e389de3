"""ZeroMQ subscriber client: yields typed :class:`LabelMessage` objects with numpy arrays over the
received buffers (no copy for ``raw`` parts).

``latest_only=True`` is for consumers that want the freshest frame rather than every frame (viewers,
controllers): ``ZMQ_CONFLATE`` does not work with multipart messages, so :meth:`Subscriber.recv` drains
everything queued and decodes only the newest label message (older ones are counted in ``skipped``).

Sessions: every message carries its publisher's random session id (``sid``). The subscriber follows one
session: the first label message or class table it accepts sets it, a label message from another
session is a publisher restart (counted in ``restarts``) and moves it there. A class table from
another session is held back: a restarted publisher sends its table before its first label message,
so the table is adopted when that message moves the subscriber to its session; if instead the
followed session's next label message comes (two publishers on one address), the held table is
counted in ``foreign`` and logged (at most every 10 s), as is every end-of-stream message from
another session. A session id is no authentication (anyone who can reach the port can copy it);
that is what CURVE is for.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import zmq

from perception.errors import TransportError
from perception.transport.address import check_address
from perception.transport.curve import CurveClientKeys, apply_client
from perception.transport.publisher import DEFAULT_ADDRESS, DEFAULT_TOPIC, _topic_ok
from perception.transport.wire import (
    CLASSES_SUFFIX,
    END_SUFFIX,
    STATUS_SUFFIX,
    ClassTable,
    DecodeLimits,
    LabelMessage,
    MessageDecoder,
    StreamEnd,
)
from perception.types import ClassInfo

log = logging.getLogger(__name__)

_HANDSHAKE_EVENTS = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the publisher refused this client's CURVE key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "the security handshake failed (one side uses CURVE and the other "
                                         "does not, or the server key is wrong)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "the security handshake failed (wrong server key?)",
}


def _connect(ctx: zmq.Context, address: str, topic_b: bytes, rcvhwm: int, curve: CurveClientKeys | None
             ) -> tuple[zmq.Socket, zmq.Socket]:
    """A SUB socket connected to ``address`` (a CURVE client when ``curve`` is given) and a monitor
    socket that reports its failed handshakes."""
    sock = ctx.socket(zmq.SUB)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, int(rcvhwm))
        sock.setsockopt(zmq.SUBSCRIBE, topic_b)  # prefix: also matches <topic>/classes
        if curve is not None:
            apply_client(sock, curve)
        events = zmq.EVENT_HANDSHAKE_SUCCEEDED
        for ev in _HANDSHAKE_EVENTS:
            events |= ev
        monitor = sock.get_monitor_socket(events)
        sock.connect(address)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise TransportError(f"cannot connect a subscriber to {address!r}: {exc.strerror}") from exc
    return sock, monitor


class Subscriber:
    """Receives label messages (and the class table) published on ``topic`` at ``address``."""

    def __init__(
        self,
        *,
        address: str = DEFAULT_ADDRESS,
        topic: str = DEFAULT_TOPIC,
        latest_only: bool = False,
        rcvhwm: int = 16,
        server_key: str | os.PathLike | bytes | None = None,
        client_keys: str | os.PathLike | tuple[bytes, bytes] | None = None,
        log_interval_s: float = 10.0,
        limits: DecodeLimits | None = None,
    ) -> None:
        """
        Args:
            address: the publisher's endpoint to connect to.
            topic: the publisher's topic (exact match; the class table comes on ``topic + "/classes"``).
            latest_only: return only the newest queued message on each ``recv`` (skipping older ones).
            rcvhwm: messages queued on this side before the publisher starts dropping for us; larger
                rides out longer pauses of the reader but holds more memory and delivers staler frames.
            server_key: with CURVE, the publisher's public key file (``NAME.key``) or its z85 key as bytes.
            client_keys: with CURVE, this client's secret key file (``NAME.key_secret``, whose public key
                the publisher lists in ``publish.curve.client_keys``) or a ``(public, secret)`` z85 pair.
            log_interval_s: messages lost by this reader (gaps in ``seq``) are logged at most this often.
            limits: the most a message may announce (map and preview pixels, header bytes), checked
                before decoding; None for :class:`~perception.transport.wire.DecodeLimits`' defaults.
        """
        if int(rcvhwm) < 1:
            raise TransportError(f"rcvhwm must be >= 1, got {rcvhwm}")
        if (server_key is None) != (client_keys is None):
            raise TransportError("CURVE needs both server_key (the publisher's public key) and client_keys "
                                 "(this client's secret key file)")
        curve = None if server_key is None else CurveClientKeys.load(server_key, client_keys)
        self.address = check_address(address, bind=False)
        self.topic = _topic_ok(topic)
        self.latest_only = bool(latest_only)
        self._topic_b = topic.encode()
        self._classes_topic_b = (topic + CLASSES_SUFFIX).encode()
        self._end_topic_b = (topic + END_SUFFIX).encode()
        self._status_topic_b = (topic + STATUS_SUFFIX).encode()
        self._decoder = MessageDecoder(limits=limits)
        self._init_state()
        self._log_interval_s = float(log_interval_s)
        self._logged_gaps, self._last_gap_log = 0, -float("inf")
        self._closed = False
        self._ctx = zmq.Context(io_threads=1)
        try:
            self._sock, self._monitor = _connect(self._ctx, address, self._topic_b, rcvhwm, curve)
        except BaseException:
            self._ctx.term()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def _init_state(self) -> None:
        """What the subscriber has learnt so far (nothing yet)."""
        self.status: dict | None = None
        """The newest status message (``<topic>/status``: docs/wire-format.md), None before the first."""
        self.statuses = 0
        """Status messages received."""
        self._table: ClassTable | None = None
        self._pending_table: ClassTable | None = None  # the newest table of another session
        self._session: int | None = None
        self._last: tuple[int, int] | None = None  # (session, seq)
        self._foreign_logged_ns = 0
        self.first_seq: int | None = None
        """``seq`` of the first label message received from the current publisher session (None before
        any): the messages sent before it (a subscriber that joined a running stream, or ZeroMQ's
        slow-joiner start) are not counted in :attr:`gaps`."""
        self.gaps = 0
        """Missing sequence numbers seen so far (messages the publisher or the network dropped)."""
        self.skipped = 0
        """Messages received but skipped by latest-only mode (not counted as gaps)."""
        self.received = 0
        """Label messages received (skipped ones included)."""
        self.restarts = 0
        """Times the publisher's session id changed or its sequence went backwards."""
        self.foreign = 0
        """Class tables and end-of-stream messages ignored because they came from a session other than
        the one followed (see the module docstring)."""
        self.end: StreamEnd | None = None
        """The publisher's end-of-stream message, once received (then :meth:`recv` returns None at
        once and iteration stops)."""
        self.handshake_failure: str | None = None
        """Why the last security handshake with the publisher failed (None when none did): with CURVE,
        a refused key or a wrong server key; a client without CURVE meeting a CURVE publisher."""
        self.handshakes = 0
        """Completed handshakes (connections that can carry messages)."""

    def _wait(self, wait_ms: int) -> bool:
        """Wait up to ``wait_ms`` (-1: forever) for a message; handle monitor events and log gaps meanwhile.
        Returns True when a message can be read, False when the time is up."""
        deadline = None if wait_ms < 0 else time.monotonic() + wait_ms / 1000
        while True:
            self._log_gaps()
            left = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            ready = dict(self._poller.poll(left))
            if self._monitor in ready:
                self._read_monitor()
            if self._sock in ready:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _read_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                ev = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshakes += 1
                continue
            why = _HANDSHAKE_EVENTS.get(ev["event"], "the handshake failed")
            if self.handshake_failure is None:  # libzmq retries every reconnect interval: say it once
                log.warning("%s: %s", self.address, why)
            self.handshake_failure = why

    def _log_gaps(self) -> None:
        now = time.monotonic()
        if self.gaps > self._logged_gaps and now - self._last_gap_log >= self._log_interval_s:
            log.warning("%s: this reader lost %d message(s) since the last report (%d in all, gaps in seq): it "
                        "reads slower than the publisher sends; latest_only=True keeps up by skipping",
                        self.address, self.gaps - self._logged_gaps, self.gaps)
            self._logged_gaps, self._last_gap_log = self.gaps, now

    # --- properties -------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[ClassInfo, ...] | None:
        """The latest class table received, or None before the first one arrived."""
        return None if self._table is None else self._table.classes

    @property
    def classes_version(self) -> str | None:
        return None if self._table is None else self._table.version

    # --- receiving --------------------------------------------------------------------------
    @property
    def session(self) -> int | None:
        """The publisher session followed (None before the first label message or class table)."""
        return self._session

    def _account(self, header: dict[str, Any]) -> None:
        sid = header.get("sid", 0)
        seq = header.get("seq")
        if not isinstance(seq, int) or not isinstance(sid, int) or isinstance(seq, bool) or isinstance(sid, bool):
            raise TransportError("malformed message: header lacks an integer 'seq' or 'sid'")
        self.received += 1
        if self._last is None:
            self.first_seq = seq
        else:
            last_sid, last_seq = self._last
            if sid != last_sid:  # a new publisher session: seq starts again
                self.restarts += 1
                self.first_seq = seq
            elif seq <= last_seq:
                self.restarts += 1
            elif seq > last_seq + 1:
                self.gaps += seq - last_seq - 1
        self._last = (sid, seq)
        self._follow(sid)

    def _follow(self, sid: int) -> None:
        """Follow session ``sid`` (a label message of it arrived); adopt its class table if one came first."""
        if sid == self._session:
            if self._pending_table is not None:  # our publisher goes on: the held table is someone else's
                self._foreign("a class table", self._pending_table.session)
                self._pending_table = None
            return
        self._session = sid
        if self._pending_table is not None and self._pending_table.session == sid:
            self._table = self._pending_table
        self._pending_table = None

    def _foreign(self, what: str, sid: int) -> None:
        self.foreign += 1
        now = time.monotonic_ns()
        if self.foreign == 1 or now - self._foreign_logged_ns >= 10_000_000_000:
            self._foreign_logged_ns = now
            log.warning("ignored %s from publisher session %d while following session %s on %s (%d ignored so "
                        "far): another process publishes on this address", what, sid, self._session, self.address,
                        self.foreign)

    def _take_table(self, table: ClassTable) -> None:
        if self._session is None:
            self._session = table.session
        if table.session == self._session:
            self._table = table
        else:
            if self._pending_table is not None and self._pending_table.session != table.session:
                self._foreign("a class table", self._pending_table.session)  # replaced before it was adopted
            self._pending_table = table  # adopted if a label message moves us to its session

    def _take_end(self, end: StreamEnd) -> None:
        if end.session == self._session:
            self.end = end
        else:
            self._foreign("an end-of-stream message", end.session)

    def _recv_frames(self, flags: int) -> list[Any] | None:
        try:
            return self._sock.recv_multipart(flags=flags, copy=False)
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            raise TransportError(f"receiving from {self.address} failed: {exc.strerror}") from exc

    def _handle(self, frames: list[Any]) -> tuple[dict[str, Any], list[Any]] | None:
        """Classes are absorbed; a label message returns (header, frames-after-topic); others None."""
        topic = frames[0].bytes
        if topic == self._classes_topic_b:
            self._take_table(self._decoder.decode_classes(frames[1:]))
            return None
        if topic == self._end_topic_b:
            self._take_end(self._decoder.decode_end(frames[1:]))
            return None
        if topic == self._status_topic_b:
            self.status = self._decoder.decode_status(frames[1:])
            self.statuses += 1
            return None
        if topic != self._topic_b:
            return None  # another topic sharing our prefix
        if len(frames) < 2:
            raise TransportError("malformed message: a label message has no header frame")
        header = self._decoder.unpack_header(frames[1])
        self._account(header)
        return header, frames[1:]

    def recv_status(self, timeout_s: float) -> dict | None:
        """Wait for the next status message (label messages that arrive meanwhile are read and dropped);
        None when none came within ``timeout_s``."""
        seen = self.statuses
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        while self.statuses == seen and time.monotonic() < deadline:
            if self._wait(max(0, int((deadline - time.monotonic()) * 1000))):
                frames = self._recv_frames(zmq.NOBLOCK)
                if frames is not None:
                    self._handle(frames)
        return self.status if self.statuses > seen else None

    def recv(self, timeout_s: float | None = None) -> LabelMessage | None:
        """The next label message (the newest queued one in latest-only mode).

        Args:
            timeout_s: seconds to wait; None waits forever, 0 does not wait.

        Returns:
            The message, or None when the timeout passed without one or the stream has ended
            (:attr:`end` is then set).

        Raises:
            TransportError: the message is malformed (the subscriber stays usable), or the socket failed.
        """
        if self._closed:
            raise TransportError(f"subscriber on {self.address} is closed")
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, float(timeout_s))
        while True:
            if self.end is not None:
                return None
            if deadline is None:
                wait_ms = -1
            else:
                wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._wait(wait_ms):
                if deadline is None or time.monotonic() >= deadline:
                    return None
                continue
            frames = self._recv_frames(zmq.NOBLOCK)
            if frames is None:
                continue
            got = self._handle(frames)
            if got is None:
                continue
            if self.latest_only:
                got = self._drain(got)
            header, body = got
            return self._decoder.decode_labels(body, t_receive_wall_ns=time.time_ns(), header=header)

    def _drain(self, newest: tuple[dict[str, Any], list[Any]]) -> tuple[dict[str, Any], list[Any]]:
        """Read everything already queued; keep the newest label message."""
        while True:
            frames = self._recv_frames(zmq.NOBLOCK)
            if frames is None:
                return newest
            got = self._handle(frames)
            if got is not None:
                self.skipped += 1
                newest = got

    def __iter__(self) -> Iterator[LabelMessage]:
        """Yield messages until the stream ends (end-of-stream message), :meth:`close` or Ctrl-C."""
        while not self._closed and self.end is None:
            msg = self.recv(None)
            if msg is not None:
                yield msg

    @property
    def missing_at_end(self) -> int | None:
        """Label messages lost after the last one received, known once :attr:`end` arrived (else
        None): the gap that ``seq`` alone cannot show. For a subscriber connected before the stream
        began, :attr:`first_seq` (seq starts at 0 in each session) + ``gaps`` + ``missing_at_end`` is
        every message of the stream it did not get."""
        if self.end is None:
            return None
        if self._last is None or self._last[0] != self.end.session:
            return self.end.last_seq + 1
        return max(0, self.end.last_seq - self._last[1])

    # --- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the socket (linger 0) and its context. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Subscriber({self.address}, topic={self.topic!r}, latest_only={self.latest_only})"
