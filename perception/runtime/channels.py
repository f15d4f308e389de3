"""The pipeline's inter-process channels: ZeroMQ sockets on abstract Unix sockets, nothing on disk.

Every queue between the processes is a ZeroMQ socket bound to an address in Linux's *abstract* socket
namespace (``ipc://@name``): it has no file, and it disappears with the process that bound it, however
that process dies. Nothing here creates a POSIX semaphore (multiprocessing's queues and events each
create several, and a SIGKILL of the whole process group leaves them in ``/dev/shm``).

Messages are small frozen dataclasses (:mod:`perception.runtime.protocol`: slot indices, frame
metadata, commands) in msgpack, through a codec that rebuilds only the registered message types: an
abstract socket has no file permissions, so another local process could connect, and it must not be
able to make ours run code (as unpickling would). Pixels never travel here (they are in shared memory).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sys
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from perception.errors import ConfigError, TransportError

_TYPES: dict[str, type] = {}


def register(*classes: type) -> None:
    """Dataclasses that may travel on the channels (by class name; fields of plain values, tuples,
    dicts and other registered dataclasses)."""
    for cls in classes:
        _TYPES[cls.__name__] = cls


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and type(obj).__name__ in _TYPES:
        return {"__t": type(obj).__name__, "f": {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}}
    if isinstance(obj, tuple):
        return {"__tuple": list(obj)}
    raise TypeError(f"cannot send a {type(obj).__name__} on a pipeline channel")


def _hook(d: dict) -> Any:
    if "__tuple" in d:
        return tuple(d["__tuple"])
    if "__t" in d:
        cls = _TYPES.get(d["__t"])
        if cls is None:
            raise TransportError(f"unknown message type {d['__t']!r} on a pipeline channel")
        return cls(**d["f"])
    return d


def encode(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True, strict_types=True)


def decode(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, object_hook=_hook, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise TransportError(f"malformed message on a pipeline channel: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Addresses:
    """The fixed endpoints of one run (per-stream ones are made by :meth:`free`)."""

    base: str

    @classmethod
    def new(cls) -> Addresses:
        if not sys.platform.startswith("linux"):
            raise ConfigError("the pipeline's process channels need Linux (abstract Unix sockets)")
        return cls(base=f"ipc://@perception-{os.getpid()}-{secrets.token_hex(4)}")

    @property
    def control(self) -> str:
        """Supervisor ROUTER ⇄ one DEALER per stage process."""
        return f"{self.base}-ctl"

    @property
    def inference(self) -> str:
        """captures PUSH → inference PULL: frames in shared memory, ready for the model."""
        return f"{self.base}-inf"

    @property
    def post(self) -> str:
        """inference PUSH → post-processing PULL: frames with their network outputs."""
        return f"{self.base}-post"

    def free(self, lane: int) -> str:
        """inference and post-processing PUSH → one capture's PULL: slots it may fill again."""
        return f"{self.base}-free-{lane}"


def context() -> zmq.Context:
    """One context per process, with one I/O thread (the messages are tiny)."""
    return zmq.Context(io_threads=1)


LAST_WORDS_MS = 1000
"""How long a closing socket may still deliver what was sent on it (a stage's failure message, a
stream's end marker); bounded so a process whose peer died still exits promptly."""


def socket(ctx: zmq.Context, kind: int, address: str, *, bind: bool, identity: bytes | None = None,
           linger_ms: int = LAST_WORDS_MS) -> zmq.Socket:
    """A socket without a high-water mark (the slots bound what is in flight), bound or connected to
    ``address``; on close it gets ``linger_ms`` to deliver what was sent."""
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, int(linger_ms))
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.RCVHWM, 0)
    if identity is not None:
        s.setsockopt(zmq.IDENTITY, identity)
    if bind:
        s.bind(address)
    else:
        s.connect(address)
    return s


def send(sock: zmq.Socket, obj: Any) -> None:
    sock.send(encode(obj))


def send_to(sock: zmq.Socket, identity: bytes, obj: Any) -> None:
    """ROUTER → the DEALER named ``identity`` (dropped silently when it is gone)."""
    sock.send_multipart([identity, encode(obj)])


def recv(sock: zmq.Socket, *, block: bool = True) -> Any | None:
    """The next object, or None when ``block`` is False and nothing is waiting."""
    try:
        return decode(sock.recv(0 if block else zmq.NOBLOCK))
    except zmq.Again:
        return None


def recv_from(sock: zmq.Socket) -> tuple[bytes, Any] | None:
    """ROUTER: ``(identity, object)`` of the next message, or None when nothing is waiting."""
    try:
        identity, payload = sock.recv_multipart(zmq.NOBLOCK)
    except zmq.Again:
        return None
    return identity, decode(payload)


def close(*things: Any) -> None:
    """Close sockets (each with the linger it was made with) and then a context, if given last."""
    for t in things:
        if t is None:
            continue
        if isinstance(t, zmq.Context):
            t.term()
        else:
            t.close()
