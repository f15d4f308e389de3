"""The control endpoint: add, remove and list streams while the pipeline runs.

ZeroMQ REQ/REP on a loopback TCP address (``runtime.control``, e.g. ``tcp://127.0.0.1:5560``). A request
is one JSON object, the reply one JSON object:

* ``{"cmd": "list"}`` → ``{"ok": true, "streams": [{"id", "uri", "state", "mode", "width", "height",
  "fps", "frames", "error"}, ...]}``
* ``{"cmd": "add", "source": {"uri": "...", "camera_id": "front", ...}}`` (any key of a ``sources``
  entry) → ``{"ok": true, "stream": {...}}`` once the source is open, or ``{"ok": false, "error": "..."}``
  (a duplicate id, a bad key, a source that cannot be opened); the pipeline goes on either way.
* ``{"cmd": "remove", "id": "front"}`` → ``{"ok": true}``, or ``{"ok": false, "error": "..."}``.

The server side is a ROUTER socket, so that an ``add`` can be answered once its source has opened while
other requests are served meanwhile. :func:`request` is the client (``perception streams``).
"""

from __future__ import annotations

import json
from typing import Any

import zmq

from perception.errors import ConfigError, TransportError
from perception.transport.address import check_address, is_local


def check_control_address(address: str) -> str:
    """Refuse anything but a loopback TCP address or a local socket: streams may not be added from afar."""
    if not is_local(address):
        raise ConfigError(f"runtime.control: {address!r} is not a loopback address (use tcp://127.0.0.1:PORT)")
    try:
        return check_address(address, bind=True, check_files=True)
    except TransportError as exc:
        raise ConfigError(f"runtime.control: {exc}") from exc


class ControlServer:
    """The pipeline's end of the control endpoint (a ROUTER bound on ``address``)."""

    def __init__(self, ctx: zmq.Context, address: str) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        try:
            self.sock.bind(check_control_address(address))
        except zmq.ZMQError as exc:
            self.sock.close()
            raise ConfigError(f"runtime.control: cannot bind {address!r}: {exc.strerror}") from exc
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def requests(self) -> list[tuple[list[bytes], dict]]:
        """Every request waiting: ``(envelope, request)``; a request that is not a JSON object is answered
        at once with an error."""
        got = []
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return got
            envelope, body = frames[:-1], frames[-1]
            try:
                req = json.loads(body)
                if not isinstance(req, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                self.reply(envelope, {"ok": False, "error": f"a request is one JSON object ({exc})"})
                continue
            got.append((envelope, req))

    def reply(self, envelope: list[bytes], body: dict) -> None:
        self.sock.send_multipart([*envelope, json.dumps(body).encode()])

    def close(self) -> None:
        self.sock.close()


def request(address: str, body: dict[str, Any], *, timeout_s: float = 15.0) -> dict[str, Any]:
    """Send one request to a running pipeline's control endpoint and return its reply.

    Raises:
        TransportError: no reply within ``timeout_s`` (no pipeline there, or it has no control endpoint).
    """
    ctx = zmq.Context(io_threads=1)
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send(json.dumps(body).encode())
        if not sock.poll(int(timeout_s * 1000)):
            raise TransportError(f"no reply from {address} within {timeout_s:g} s: is a pipeline running with "
                                 "runtime.control set to that address?")
        return json.loads(sock.recv())
    finally:
        sock.close()
        ctx.term()
