"""ZeroMQ CURVE: key files, and the ZAP handler that admits only the listed clients.

CURVE (RFC 26, elliptic-curve Curve25519 + XSalsa20-Poly1305) encrypts every byte between a publisher
and a subscriber, and authenticates both ends: a subscriber must know the publisher's public key (so a
process that grabs the port after the pipeline died cannot pass as it), and the publisher's ZAP
handler admits only clients whose public key is listed (everyone else completes no handshake and
receives nothing).

Key files use ZeroMQ's usual certificate format (the one czmq's ``zcert`` and pyzmq's
``zmq.auth.create_certificates`` write): ``NAME.key`` holds the public key (give it to the other side),
``NAME.key_secret`` the public and the secret key (keep it; written with mode 0600)::

    metadata
    curve
        public-key = "<40 z85 characters>"
        secret-key = "<40 z85 characters>"
"""

from __future__ import annotations

import datetime
import logging
import os
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from perception.errors import TransportError

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = "perception"
KEY_CHARS = 40  # z85 of 32 bytes
_Z85 = set(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
_HINT = "create keys with `perception keys generate NAME`"


def has_curve() -> bool:
    """Whether this libzmq was built with CURVE (libsodium or its bundled TweetNaCl)."""
    return bool(zmq.has("curve"))


def require_curve() -> None:
    if not has_curve():
        raise TransportError(f"this libzmq ({zmq.zmq_version()}) was built without CURVE support")


# ------------------------------------------------------------------------------------------- files
def _z85_key(value: bytes, *, path: Path, what: str) -> bytes:
    if len(value) != KEY_CHARS or not set(value) <= _Z85:
        raise TransportError(f"CURVE key file {path}: the {what} is not {KEY_CHARS} z85 characters ({_HINT})")
    return value


def read_key_file(path: str | os.PathLike) -> tuple[bytes, bytes | None]:
    """(public key, secret key or None), both z85 bytes, from a ZeroMQ certificate file.

    Raises:
        TransportError: the file is missing, unreadable, or holds no well-formed public key.
    """
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError as exc:
        raise TransportError(f"CURVE key file {p}: not found ({_HINT})") from exc
    except OSError as exc:
        raise TransportError(f"CURVE key file {p}: cannot read it: {exc.strerror}") from exc
    keys: dict[bytes, bytes] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition(b"=")
        name = name.strip()
        if sep and name in (b"public-key", b"secret-key"):
            keys[name] = value.strip(b" \t'\"")
    if b"public-key" not in keys:
        raise TransportError(f"CURVE key file {p}: no 'public-key = \"...\"' line; is it a ZeroMQ key file? ({_HINT})")
    public = _z85_key(keys[b"public-key"], path=p, what="public key")
    secret = keys.get(b"secret-key")
    return public, None if secret is None else _z85_key(secret, path=p, what="secret key")


def read_public_key(path: str | os.PathLike) -> bytes:
    """The public key (z85) from a ``.key`` or ``.key_secret`` file."""
    return read_key_file(path)[0]


def read_key_pair(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a ``.key_secret`` file; warns when others may read the file."""
    public, secret = read_key_file(path)
    if secret is None:
        raise TransportError(
            f"CURVE key file {path}: holds no secret key; give the {SECRET_SUFFIX} file of the pair here"
        )
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("CURVE secret key file %s is readable by other users (mode %o); chmod 600 it",
                    path, stat.S_IMODE(mode))
    return public, secret


def read_client_keys(paths: Iterable[str | os.PathLike]) -> frozenset[bytes]:
    """Public keys (z85) of the allowed clients: each path a key file or a folder of ``*.key`` files."""
    keys: set[bytes] = set()
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files = sorted(p.glob("*" + PUBLIC_SUFFIX))
            if not files:
                raise TransportError(f"CURVE client key folder {p}: holds no *{PUBLIC_SUFFIX} files ({_HINT})")
            keys.update(read_public_key(f) for f in files)
        else:
            keys.add(read_public_key(p))
    if not keys:
        raise TransportError("CURVE: no client keys given; list the public key files of the allowed clients")
    return frozenset(keys)


def _banner(kind: str) -> str:
    now = datetime.datetime.now().isoformat(timespec="seconds")
    return f"#   ****  Generated on {now} by perception keys generate  ****\n#   ZeroMQ CURVE {kind}\n\n"


def write_key_pair(directory: str | os.PathLike, name: str, *, force: bool = False) -> tuple[Path, Path]:
    """Generate a key pair; write ``NAME.key`` (public, 0644) and ``NAME.key_secret`` (both keys, 0600).

    Raises:
        TransportError: a file exists (and not ``force``), the name is not a plain file name, or writing failed.
    """
    require_curve()
    if not name or os.sep in name or name in (".", ".."):
        raise TransportError(f"key name {name!r}: expected a plain file name such as 'server' or 'planner'")
    folder = Path(directory)
    public_path, secret_path = folder / (name + PUBLIC_SUFFIX), folder / (name + SECRET_SUFFIX)
    for p in (public_path, secret_path):
        if p.exists() and not force:
            raise TransportError(f"{p} exists; pass --force to replace it (clients holding the old key lose access)")
    public, secret = zmq.curve_keypair()
    body = f'metadata\ncurve\n    public-key = "{public.decode()}"\n'
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write(secret_path, _banner("**Secret** Certificate: do not share") + body
               + f'    secret-key = "{secret.decode()}"\n', 0o600)
        _write(public_path, _banner("Public Certificate") + body, 0o644)
    except OSError as exc:
        raise TransportError(f"cannot write the key pair to {folder}: {exc.strerror}") from exc
    return public_path, secret_path


def _write(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to a fresh file created with ``mode`` (a secret is never readable by others, even briefly)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)  # the umask may have cleared bits of a public file's mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------ sockets
@dataclass(frozen=True, slots=True)
class CurveServerKeys:
    """What a CURVE publisher needs: its own key pair and the public keys of the clients it admits."""

    public: bytes
    secret: bytes
    clients: frozenset[bytes]
    """z85 public keys of the allowed clients."""

    @classmethod
    def load(cls, secret_key_file: str | os.PathLike, client_key_files: Iterable[str | os.PathLike]) -> CurveServerKeys:
        require_curve()
        public, secret = read_key_pair(secret_key_file)
        return cls(public=public, secret=secret, clients=read_client_keys(client_key_files))


@dataclass(frozen=True, slots=True)
class CurveClientKeys:
    """What a CURVE subscriber needs: the server's public key and its own key pair."""

    server: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, server_key: str | os.PathLike | bytes, client_keys: str | os.PathLike | tuple[bytes, bytes]
             ) -> CurveClientKeys:
        """``server_key``: the server's ``.key`` file (or its z85 public key as bytes); ``client_keys``: this
        client's ``.key_secret`` file (or a ``(public, secret)`` pair of z85 bytes)."""
        require_curve()
        server = _z85_key(server_key, path=Path("<bytes>"), what="server key") if isinstance(server_key, bytes) \
            else read_public_key(server_key)
        public, secret = client_keys if isinstance(client_keys, tuple) else read_key_pair(client_keys)
        return cls(server=server, public=public, secret=secret)


def apply_server(sock: zmq.Socket, keys: CurveServerKeys) -> None:
    """Make ``sock`` a CURVE server (before it binds); a :class:`ZapHandler` must run in its context."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())


def apply_client(sock: zmq.Socket, keys: CurveClientKeys) -> None:
    """Make ``sock`` a CURVE client of the server whose public key is ``keys.server`` (before it connects)."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


class ZapHandler:
    """A ZAP (RFC 27) handler thread in one context: CURVE clients whose key is listed pass, all others fail.

    Bound before the server socket binds, it answers every handshake of every socket in the context:
    a client with another key, or a client without CURVE (refused by the mechanism check before ZAP is
    asked), completes no handshake and receives nothing. Refusals are counted and logged at most once
    per ``log_interval_s``.
    """

    def __init__(self, ctx: zmq.Context, allowed: frozenset[bytes], *, log_interval_s: float = 10.0) -> None:
        self._allowed = frozenset(z85.decode(k) for k in allowed)
        self._sock = ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise TransportError(f"cannot start the CURVE ZAP handler: {exc.strerror}") from exc
        self.accepted = 0
        self.refused = 0
        self._log_interval_s = log_interval_s
        self._logged_refused = 0
        self._last_log = -float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="perception-zap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._sock.poll(100, zmq.POLLIN):
                    self._sock.send_multipart(self._reply(self._sock.recv_multipart()))
        except zmq.ZMQError as exc:  # the context is going away
            if not self._stop.is_set():
                log.error("CURVE ZAP handler stopped: %s", exc.strerror)
        finally:
            self._sock.close(linger=0)

    def _reply(self, frames: list[bytes]) -> list[bytes]:
        request_id = frames[1] if len(frames) > 1 else b""
        ok = len(frames) >= 7 and frames[0] == b"1.0" and frames[5] == b"CURVE" and frames[6] in self._allowed
        if ok:
            self.accepted += 1
            return [b"1.0", request_id, b"200", b"OK", z85.encode(frames[6]), b""]
        self.refused += 1
        self._log_refusal(frames)
        return [b"1.0", request_id, b"400", b"client key not allowed", b"", b""]

    def _log_refusal(self, frames: list[bytes]) -> None:
        now = time.monotonic()
        if now - self._last_log < self._log_interval_s:
            return
        peer = frames[3].decode(errors="replace") if len(frames) > 3 else "?"
        key = z85.encode(frames[6]).decode() if len(frames) > 6 and len(frames[6]) == 32 else "?"
        log.warning("CURVE: refused a client from %s with key %s (not in publish.curve.client_keys); "
                    "%d refusal(s) since the last report", peer, key, self.refused - self._logged_refused)
        self._logged_refused = self.refused
        self._last_log = now

    def close(self) -> None:
        """Stop the thread (before the context terminates). Idempotent."""
        self._stop.set()
        self._thread.join(timeout=2.0)
