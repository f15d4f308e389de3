"""Publisher and Subscriber over real ZeroMQ sockets on 127.0.0.1 (random ports)."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
import zmq

from perception.errors import TransportError
from perception.transport.publisher import Publisher
from perception.transport.subscriber import Subscriber
from perception.transport.wire import MessageEncoder, classes_version
from perception.types import FrameResult
from tests.transport.helpers import CLASSES, make_instances, make_labels, make_meta, make_tracks, wait_until

W, H = 64, 48


def _subscribed(pub: Publisher, n: int = 1) -> None:
    """Wait until the publisher has seen ``n`` subscriptions (so the next message reaches them)."""

    def seen() -> bool:
        pub.poll()
        return pub.stats.subscriptions >= n

    wait_until(seen, what=f"{n} subscription(s) at the publisher")


def _recv(sub: Subscriber, timeout_s: float = 10.0):
    msg = sub.recv(timeout_s)
    assert msg is not None, f"no message within {timeout_s} s"
    return msg


@pytest.mark.parametrize("encoding", ["raw", "zstd", "lz4"])
def test_round_trip_over_tcp(tcp_address, encoding):
    with Publisher(address=tcp_address, classes=CLASSES, encoding=encoding, preview="jpeg", hwm=64) as pub, \
            Subscriber(address=pub.endpoint) as sub:
        _subscribed(pub)
        sent = []
        for i in range(5):
            labels = make_labels(i, W, H)
            inst = make_instances(labels)
            image = np.full((H, W, 3), 40 * i, np.uint8)
            meta = make_meta(i, W, H)
            assert pub.publish(FrameResult(
                meta=meta, labels=labels, instance_map=inst, frame=image, latencies_ms={"infer": 1.5 * i},
                tracks=make_tracks()))
            sent.append((meta, labels, inst))
        for i, (meta, labels, inst) in enumerate(sent):
            msg = _recv(sub)
            assert msg.seq == i and msg.encoding == encoding
            assert msg.frame_meta() == meta
            assert np.array_equal(msg.labels, labels)
            assert np.array_equal(msg.instances, inst)
            assert msg.preview.shape == (H, W, 3) and abs(int(msg.preview.mean()) - 40 * i) <= 3
            assert msg.latencies_ms == {"infer": 1.5 * i}
            assert [t.track_id for t in msg.tracks] == [7, 9]
            assert msg.t_capture_wall_ns <= msg.t_publish_wall_ns <= msg.t_receive_wall_ns
        assert sub.classes == CLASSES and sub.classes_version == classes_version(CLASSES)
        assert sub.gaps == 0 and pub.stats.sent == 5 and pub.stats.dropped == 0


def test_raw_receive_wraps_the_zmq_buffer(tcp_address):
    """Large raw parts arrive as numpy views over the zmq frame (no copy)."""
    w, h = 640, 480  # above pyzmq's copy threshold
    with Publisher(address=tcp_address, classes=CLASSES) as pub, Subscriber(address=pub.endpoint) as sub:
        _subscribed(pub)
        pub.publish(FrameResult(meta=make_meta(0, w, h), labels=make_labels(0, w, h)))
        msg = _recv(sub)
        root = msg.labels
        while isinstance(root, np.ndarray):
            root = root.base
        assert isinstance(root, memoryview) and isinstance(root.obj, zmq.Frame)
        assert not msg.labels.flags.owndata


def test_late_joiner_gets_the_class_table(tcp_address):
    with Publisher(address=tcp_address, classes=CLASSES, classes_interval_s=3600) as pub:
        for i in range(3):
            pub.publish(FrameResult(meta=make_meta(i, W, H), labels=make_labels(i, W, H)))  # nobody listening yet
        with Subscriber(address=pub.endpoint) as sub:
            assert sub.classes is None
            _subscribed(pub)  # the join triggers the class table (the hourly interval does not)
            pub.publish(FrameResult(meta=make_meta(3, W, H), labels=make_labels(3, W, H)))
            msg = _recv(sub)
            assert msg.seq == 3
            assert sub.first_seq == 3 and sub.gaps == 0  # sent before it joined: not gaps
            assert sub.classes == CLASSES
            assert msg.classes_version == sub.classes_version


def test_class_table_is_republished_periodically(tcp_address):
    with Publisher(address=tcp_address, classes=CLASSES, classes_interval_s=0.05) as pub, \
            Subscriber(address=pub.endpoint):
        _subscribed(pub)
        before = pub.stats.classes_sent
        wait_until(lambda: (pub.poll(), pub.stats.classes_sent >= before + 2)[1], what="periodic class tables")


def test_sequence_gaps_are_counted(tcp_address):
    """Messages the publisher never delivered show up as gaps in ``seq``."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    enc = MessageEncoder(session=1)
    try:
        with Subscriber(address=f"tcp://127.0.0.1:{port}") as sub:
            seqs = [0, 1, 2, 5, 6, 10]

            def send(seq: int) -> None:
                frames = enc.encode_labels(FrameResult(
                    meta=make_meta(seq, W, H),
                    labels=make_labels(seq, W, H)), seq=seq, t_publish_wall_ns=time.time_ns())
                pub.send_multipart([b"perception", *frames])

            # PUB has no join notification: resend seq 0 until the subscriber gets one
            def first() -> bool:
                send(0)
                return sub.recv(0.05) is not None

            wait_until(first, what="the subscriber to connect")
            while sub.recv(0.2) is not None:  # duplicates of seq 0 are restarts, not gaps
                pass
            for s in seqs[1:]:
                send(s)
            got = [_recv(sub).seq for _ in seqs[1:]]
            assert got == seqs[1:]
            assert sub.gaps == (5 - 3) + (10 - 7)
            restarts = sub.restarts
            enc2 = MessageEncoder(session=2)  # a restarted publisher starts again at 0: not a gap
            pub.send_multipart([b"perception", *enc2.encode_labels(FrameResult(
                meta=make_meta(0, W, H), labels=make_labels(0, W, H)), seq=0, t_publish_wall_ns=0)])
            assert _recv(sub).session == 2
            assert sub.gaps == 5 and sub.restarts == restarts + 1 and sub.first_seq == 0
    finally:
        pub.close()
        ctx.term()


def test_latest_only_returns_the_newest(tcp_address):
    n = 50
    with Publisher(address=tcp_address, classes=CLASSES, hwm=100) as pub, \
            Subscriber(address=pub.endpoint, latest_only=True, rcvhwm=100) as latest, \
            Subscriber(address=pub.endpoint, rcvhwm=100) as every:
        _subscribed(pub, 2)
        for i in range(n):
            assert pub.publish(FrameResult(meta=make_meta(i, W, H), labels=make_labels(i, W, H)))
        assert [_recv(every).seq for _ in range(n)] == list(range(n))  # all n are on the wire
        got = []
        wait_until(lambda: got.append(_recv(latest)) or got[-1].seq == n - 1, what="the newest message")
        seqs = [m.seq for m in got]
        assert seqs == sorted(seqs) and len(seqs) < n // 2
        assert np.array_equal(got[-1].labels, make_labels(n - 1, W, H))
        assert latest.skipped == n - len(seqs) and latest.gaps == 0
        assert latest.recv(0.05) is None


def test_publisher_never_blocks_on_a_stalled_subscriber(tcp_address):
    """2000 large messages to a subscriber that never reads: publish returns, the reader's queue filling
    up is counted (it alone loses messages), and the reader counts what it lost as gaps."""
    w, h = 1280, 720
    frames = [make_labels(i, w, h) for i in range(4)]
    with Publisher(address=tcp_address, classes=CLASSES, hwm=2) as pub, \
            Subscriber(address=pub.endpoint, rcvhwm=1) as sub:
        _subscribed(pub)
        results = [pub.publish(FrameResult(meta=make_meta(i, w, h), labels=frames[i % 4])) for i in range(2000)]
        stats = pub.stats
        assert stats.sent == 2000 and stats.readers == 1
        assert stats.dropped >= 1 and results.count(False) == stats.dropped
        # the subscriber wakes up, reads what was queued, then gets a new message: the losses are gaps
        msgs = []
        while (m := sub.recv(0.5)) is not None:
            msgs.append(m)
        seqs = [m.seq for m in msgs]
        assert seqs and seqs[0] == 0 and seqs == sorted(seqs) and len(seqs) < 1000
        pub.publish(FrameResult(meta=make_meta(0, w, h), labels=frames[0]))
        msgs.append(_recv(sub))
        assert msgs[-1].seq == 2000
        assert sub.gaps == msgs[-1].seq + 1 - len(msgs) > 1000


def test_publisher_without_subscribers_sends_nothing_and_does_not_block(tcp_address):
    with Publisher(address=tcp_address, classes=CLASSES) as pub:
        for i in range(100):
            assert pub.publish(FrameResult(meta=make_meta(i, W, H), labels=make_labels(i, W, H)))
        assert pub.stats.dropped == 0


def test_malformed_message_raises_and_subscriber_recovers():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    enc = MessageEncoder()
    try:
        with Subscriber(address=f"tcp://127.0.0.1:{port}") as sub:
            def connected() -> bool:
                pub.send_multipart([b"perception", *enc.encode_labels(FrameResult(
                    meta=make_meta(0, W, H), labels=make_labels(0, W, H)), seq=0, t_publish_wall_ns=0)])
                return sub.recv(0.05) is not None

            wait_until(connected, what="the subscriber to connect")
            while sub.recv(0.2) is not None:
                pass
            pub.send_multipart([b"perception", b"\xc1 not msgpack", b"xx"])
            with pytest.raises(TransportError, match="not valid msgpack"):
                sub.recv(10)
            pub.send_multipart([b"perception", msgpack.packb({"v": 99, "seq": 1})])
            with pytest.raises(TransportError, match="major version 99"):
                sub.recv(10)
            pub.send_multipart([b"perception/classes", msgpack.packb({"v": 1, "classes": [{"id": 0}]})])
            with pytest.raises(TransportError, match="missing required key 'rgb'"):
                sub.recv(10)
            pub.send_multipart([b"perceptionX", b"other topic sharing our prefix: ignored"])
            pub.send_multipart([b"perception", *enc.encode_labels(FrameResult(
                meta=make_meta(1, W, H), labels=make_labels(1, W, H)), seq=1, t_publish_wall_ns=0)])
            assert _recv(sub).seq == 1
    finally:
        pub.close()
        ctx.term()


def test_bind_errors_name_the_address(tcp_address):
    with Publisher(address=tcp_address, classes=CLASSES) as pub:
        with pytest.raises(TransportError, match=pub.endpoint.replace(".", r"\.")):
            Publisher(address=pub.endpoint, classes=CLASSES)
    with pytest.raises(TransportError, match=r"tcp://no-such-host\.invalid:1"):
        Publisher(address="tcp://no-such-host.invalid:1", classes=CLASSES)
    with pytest.raises(TransportError, match="bogus://x"):
        Publisher(address="bogus://x", classes=CLASSES)


def test_closed_objects_refuse_use(tcp_address):
    pub = Publisher(address=tcp_address, classes=CLASSES)
    sub = Subscriber(address=pub.endpoint)
    pub.close()
    sub.close()
    pub.close()  # idempotent
    with pytest.raises(TransportError, match="closed"):
        pub.publish(FrameResult(meta=make_meta(0, W, H), labels=make_labels(0, W, H)))
    with pytest.raises(TransportError, match="closed"):
        sub.recv(0)


def test_iteration_yields_messages(tcp_address):
    with Publisher(address=tcp_address, classes=CLASSES) as pub, Subscriber(address=pub.endpoint) as sub:
        _subscribed(pub)
        for i in range(3):
            pub.publish(FrameResult(meta=make_meta(i, W, H), labels=make_labels(i, W, H)))
        got = []
        for msg in sub:
            got.append(msg.seq)
            if len(got) == 3:
                break
        assert got == [0, 1, 2]
