"""ZeroMQ endpoint checks done before libzmq sees an address.

libzmq takes ``tcp://host:99999`` and binds port 99999 mod 65536 without a word, and binding
``ipc:///some/path`` unlinks whatever file is at that path first. These checks refuse both, and say
whether an endpoint is reachable only from this host (loopback TCP, ``ipc://``, ``inproc://``) so the
publisher can warn when it exposes an unencrypted stream to the network.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat

from perception.errors import TransportError

SCHEMES = ("tcp://", "ipc://", "inproc://")
LOOPBACK_NAMES = ("localhost", "lo")


def _split_tcp(address: str) -> tuple[str, str]:
    """``tcp://HOST:PORT`` → (host, port) as written; IPv6 hosts in brackets keep them."""
    rest = address[len("tcp://"):]
    rest = rest.rpartition(";")[2]  # connect syntax tcp://source;destination: check the destination
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise TransportError(f"address {address!r}: expected tcp://HOST:PORT")
    return host, port


def _check_port(address: str, port: str, *, bind: bool) -> None:
    if bind and port in ("*", "0"):
        return  # any free port
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        allowed = "1-65535 (or 0 / * for any free port)" if bind else "1-65535"
        raise TransportError(f"address {address!r}: port {port!r} is not a TCP port; use {allowed}")


def _check_ipc_path(address: str) -> None:
    """Refuse an ``ipc://`` path that holds a regular file (libzmq would delete it) or a live socket."""
    path = address[len("ipc://"):]
    if not path:
        raise TransportError(f"address {address!r}: expected ipc://PATH")
    if path.startswith("@"):
        return  # Linux abstract namespace: no file
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise TransportError(f"address {address!r}: cannot check {path}: {exc.strerror}") from exc
    if not stat.S_ISSOCK(st.st_mode):
        raise TransportError(
            f"address {address!r}: {path} exists and is not a socket; binding would delete it. "
            "Pick another path (or remove the file yourself)"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return  # a stale socket left by a process that died: libzmq replaces it
    raise TransportError(f"address {address!r}: another process is listening on {path}; pick another path")


def check_address(address: str, *, bind: bool, check_files: bool = True) -> str:
    """Validate an endpoint before binding (``bind=True``) or connecting to it; return it unchanged.

    Args:
        address: ``tcp://HOST:PORT``, ``ipc://PATH`` or ``inproc://NAME``.
        bind: for a bind, port 0 or ``*`` (any free port) is allowed and ``ipc://`` paths are checked.
        check_files: look at the ``ipc://`` path (False: syntax only, e.g. while reading a config).

    Raises:
        TransportError: naming the address and what is wrong with it.
    """
    if not isinstance(address, str) or not address.startswith(SCHEMES):
        raise TransportError(f"address {address!r}: must start with tcp://, ipc:// or inproc://")
    if address.startswith("tcp://"):
        _, port = _split_tcp(address)
        _check_port(address, port, bind=bind)
    elif address.startswith("ipc://") and bind and check_files:
        _check_ipc_path(address)
    elif address.startswith("inproc://") and len(address) == len("inproc://"):
        raise TransportError(f"address {address!r}: expected inproc://NAME")
    return address


def is_local(address: str) -> bool:
    """True when only processes on this host can reach ``address`` (loopback TCP, ipc, inproc)."""
    if not address.startswith("tcp://"):
        return True
    host = _split_tcp(address)[0].strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: assume it is reachable from outside
