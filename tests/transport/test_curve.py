"""CURVE over real sockets on 127.0.0.1: keys from `perception keys generate`, clients in their own
processes (`perception view`) and in this one."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
import time

import pytest
import zmq
import zmq.auth

from perception.errors import TransportError
from perception.transport.curve import CurveServerKeys, read_key_pair, read_public_key, write_key_pair
from perception.transport.publisher import Publisher
from perception.transport.subscriber import Subscriber
from perception.types import FrameResult
from tests.runtime.helpers import REPO
from tests.transport.helpers import CLASSES, make_labels, make_meta

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "perception.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    for name in ("server", "planner", "intruder"):
        proc = _cli("keys", "generate", name, "--dir", str(d))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"{name}.key" in out
    return d


def test_generated_keys_are_zeromq_certificates_with_a_private_secret(keys):
    public, secret = zmq.auth.load_certificate(keys / "server.key_secret")  # pyzmq's reader agrees
    assert (public, secret) == read_key_pair(keys / "server.key_secret")
    assert zmq.auth.load_certificate(keys / "server.key") == (public, None)
    assert stat.S_IMODE((keys / "server.key_secret").stat().st_mode) == 0o600
    assert zmq.curve_public(secret) == public
    with pytest.raises(TransportError, match="exists; pass --force"):
        write_key_pair(keys, "server")


def test_key_file_errors_name_the_file(tmp_path, keys):
    with pytest.raises(TransportError, match=r"CURVE key file .*nope\.key: not found"):
        read_public_key(tmp_path / "nope.key")
    bad = tmp_path / "bad.key"
    bad.write_text("hello\n")
    with pytest.raises(TransportError, match=r"bad\.key: no 'public-key"):
        read_public_key(bad)
    bad.write_text('curve\n    public-key = "short"\n')
    with pytest.raises(TransportError, match=r"bad\.key: the public key is not 40 z85"):
        read_public_key(bad)
    with pytest.raises(TransportError, match=r"server\.key: holds no secret key"):
        CurveServerKeys.load(keys / "server.key", [keys / "planner.key"])
    with pytest.raises(TransportError, match=r"nope\.key: not found"):
        Subscriber(address="tcp://127.0.0.1:5555", server_key=tmp_path / "nope.key",
                   client_keys=keys / "planner.key_secret")
    with pytest.raises(TransportError, match="both server_key"):
        Subscriber(address="tcp://127.0.0.1:5555", server_key=keys / "server.key")


def _publish_for(pub: Publisher, seconds: float) -> int:
    i = 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        pub.publish(FrameResult(meta=make_meta(i), labels=make_labels(i)))
        i += 1
        time.sleep(0.02)
    return i


def test_only_the_allowed_client_receives(keys, caplog):
    server = CurveServerKeys.load(keys / "server.key_secret", [keys / "planner.key"])
    caplog.set_level(logging.WARNING)
    with Publisher(address="tcp://127.0.0.1:0", classes=CLASSES, curve=server, log_interval_s=0.0) as pub:
        addr = pub.endpoint
        allowed = _cli("view", "--no-window", "--connect", addr, "--max-frames", "5", "--timeout", "30",
                       "--server-key", str(keys / "server.key"), "--client-key", str(keys / "planner.key_secret"))
        intruder = _cli("view", "--no-window", "--connect", addr, "--timeout", "3",
                        "--server-key", str(keys / "server.key"), "--client-key", str(keys / "intruder.key_secret"))
        plain = _cli("view", "--no-window", "--connect", addr, "--timeout", "3")
        # a client that trusts another server key (a process that took the port would look like this)
        spoofed = _cli("view", "--no-window", "--connect", addr, "--timeout", "3",
                       "--server-key", str(keys / "intruder.key"), "--client-key", str(keys / "planner.key_secret"))
        procs = (allowed, intruder, plain, spoofed)
        t_end = time.monotonic() + 90
        while any(p.poll() is None for p in procs) and time.monotonic() < t_end:
            _publish_for(pub, 0.2)
        refused = pub.stats.refused_clients
    outs = {}
    for name, p in zip(("allowed", "intruder", "plain", "spoofed"), procs):
        if p.poll() is None:
            p.kill()
        outs[name] = p.communicate(timeout=10)
        outs[name] += (p.returncode,)
    out, err, code = outs["allowed"]
    assert code == 0 and "5 frames received" in out, err
    out, err, code = outs["intruder"]
    assert code == 1 and "frames received" not in out
    assert "refused this client's CURVE key" in err and "check --server-key / --client-key" in err
    out, err, code = outs["plain"]
    assert code == 1 and "the publisher uses CURVE" in err, err
    out, err, code = outs["spoofed"]
    assert code == 1 and "handshake failed" in err, err
    assert refused >= 1
    assert any("refused a client" in r.getMessage() for r in caplog.records)


def test_allowed_client_in_process_gets_messages_and_the_class_table(keys):
    server = CurveServerKeys.load(keys / "server.key_secret", [keys])  # a folder of *.key files
    with Publisher(address="tcp://127.0.0.1:0", classes=CLASSES, curve=server) as pub, \
            Subscriber(address=pub.endpoint, server_key=keys / "server.key",
                       client_keys=keys / "planner.key_secret") as sub:
        msg = None
        t_end = time.monotonic() + 30
        while msg is None and time.monotonic() < t_end:
            pub.publish(FrameResult(meta=make_meta(0), labels=make_labels(0)))
            msg = sub.recv(0.1)
        assert msg is not None and sub.handshakes >= 1 and sub.handshake_failure is None
        assert sub.classes == CLASSES


def test_non_loopback_bind_without_curve_warns(caplog):
    caplog.set_level(logging.WARNING)
    with Publisher(address="tcp://0.0.0.0:0", classes=CLASSES):
        pass
    assert any("without CURVE" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with Publisher(address="tcp://127.0.0.1:0", classes=CLASSES):
        pass
    assert not any("without CURVE" in r.getMessage() for r in caplog.records)
