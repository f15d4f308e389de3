"""Endpoint checks before libzmq sees them, and output files that are not overwritten without --force."""

from __future__ import annotations

import subprocess
import sys

import pytest

from perception.config import parse_config
from perception.errors import ConfigError, TransportError
from perception.transport.address import check_address, is_local
from perception.transport.publisher import Publisher
from perception.transport.subscriber import Subscriber
from tests.runtime.helpers import REPO
from tests.transport.helpers import CLASSES


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:99999", "tcp://127.0.0.1:65536", "tcp://127.0.0.1:-1",
                                     "tcp://127.0.0.1:http", "tcp://127.0.0.1", "udp://127.0.0.1:5555"])
def test_bad_addresses_are_refused_before_binding(address):
    with pytest.raises(TransportError, match="address"):
        Publisher(address=address, classes=CLASSES)
    with pytest.raises(ConfigError, match=r"publish\.address"):
        parse_config({"publish": {"address": address}})


def test_ports_0_and_star_pick_a_free_port_when_binding_only():
    assert check_address("tcp://127.0.0.1:0", bind=True) and check_address("tcp://[::1]:*", bind=True)
    assert check_address("tcp://127.0.0.1:65535", bind=False)
    with pytest.raises(TransportError, match="port '0'"):
        Subscriber(address="tcp://127.0.0.1:0")


def test_ipc_path_that_is_a_file_is_refused_and_kept(tmp_path):
    f = tmp_path / "precious.txt"
    f.write_text("do not delete")
    with pytest.raises(TransportError, match="exists and is not a socket"):
        Publisher(address=f"ipc://{f}", classes=CLASSES)
    assert f.read_text() == "do not delete"


def test_ipc_socket_in_use_is_refused_a_stale_one_replaced(tmp_path):
    path = tmp_path / "pub.sock"
    with Publisher(address=f"ipc://{path}", classes=CLASSES):
        with pytest.raises(TransportError, match="another process is listening"):
            Publisher(address=f"ipc://{path}", classes=CLASSES)
    import socket

    path.unlink(missing_ok=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening: what a killed process leaves
    stale.close()
    with Publisher(address=f"ipc://{path}", classes=CLASSES) as pub:
        assert pub.endpoint == f"ipc://{path}"


def test_is_local():
    for a in ("tcp://127.0.0.1:5555", "tcp://127.1.2.3:1", "tcp://localhost:5", "tcp://[::1]:5", "ipc:///tmp/x",
              "inproc://x"):
        assert is_local(a), a
    for a in ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://eth0:5555", "tcp://10.0.0.2:5555"):
        assert not is_local(a), a


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perception.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_existing_outputs_need_force(tmp_path):
    existing = tmp_path / "old.mp4"
    existing.write_bytes(b"keep me")
    r = _cli("run", "--overlay", str(existing), "--max-frames", "1")
    assert r.returncode == 2 and "exists; pass --force" in r.stderr and str(existing) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _cli("view", "--no-window", "--out", str(existing), "--timeout", "1")
    assert r.returncode == 2 and "exists; pass --force" in r.stderr
    mcap = tmp_path / "old.mcap"
    mcap.write_bytes(b"keep me too")
    r = _cli("record", "--out", str(mcap), "--timeout", "1", "--no-progress")
    assert r.returncode == 1 and "exists; pass --force" in r.stderr
    assert existing.read_bytes() == b"keep me" and mcap.read_bytes() == b"keep me too"
    # with --force the file is taken (here nothing is published, so view times out: exit 1, not 2)
    r = _cli("view", "--no-window", "--out", str(existing), "--timeout", "0.5", "--force")
    assert r.returncode == 1 and "no message on" in r.stderr
