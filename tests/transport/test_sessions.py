"""The subscriber follows one publisher session: class tables and end-of-stream messages of another
session are counted and ignored, never obeyed (real sockets on 127.0.0.1)."""

from __future__ import annotations

import logging

import pytest
import zmq

from perception.transport.subscriber import Subscriber
from perception.transport.wire import MessageEncoder
from perception.types import ClassInfo, FrameResult
from tests.transport.helpers import CLASSES, make_labels, make_meta, wait_until

W, H = 32, 24
OTHER_CLASSES = (ClassInfo(id=0, name="forged", color=(1, 2, 3), is_thing=False),)


class RawPublisher:
    """A bare PUB socket sending what the given encoders make: two 'publishers' on one port."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")

    def labels(self, enc: MessageEncoder, seq: int) -> None:
        frames = enc.encode_labels(FrameResult(meta=make_meta(seq, W, H), labels=make_labels(seq, W, H)), seq=seq)
        self.sock.send_multipart([b"perception", *frames])

    def classes(self, enc: MessageEncoder, classes=CLASSES) -> None:
        self.sock.send_multipart([b"perception/classes", enc.encode_classes(classes, t_publish_wall_ns=0)])

    def end(self, enc: MessageEncoder, last_seq: int) -> None:
        self.sock.send_multipart([b"perception/end", enc.encode_end(
            last_seq=last_seq, published=last_seq + 1, dropped=0, reason="end", t_publish_wall_ns=0)])

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@pytest.fixture()
def pub():
    p = RawPublisher()
    yield p
    p.close()


def _connect(pub: RawPublisher, sub: Subscriber, enc: MessageEncoder) -> None:
    """PUB has no join notification: send ``enc``'s class table until the subscriber holds it."""
    def joined() -> bool:
        pub.classes(enc)
        sub.recv(0.05)
        return sub.classes is not None

    wait_until(joined, what="the subscriber to connect")


def test_foreign_class_table_and_end_are_ignored(pub, caplog):
    real, forger = MessageEncoder(session=11), MessageEncoder(session=666)
    with Subscriber(address=f"tcp://127.0.0.1:{pub.port}") as sub:
        _connect(pub, sub, real)
        assert sub.session == 11
        pub.labels(real, 0)
        assert sub.recv(10).seq == 0
        with caplog.at_level(logging.WARNING, logger="perception.transport.subscriber"):
            pub.classes(forger, OTHER_CLASSES)
            pub.end(forger, 0)
            pub.labels(real, 1)
            msg = sub.recv(10)
        assert msg is not None and msg.seq == 1  # the forged end did not end the stream
        assert sub.end is None and sub.classes == CLASSES and sub.foreign == 2
        # the forged end is logged at once; the forged table when session 11's next frame shows that two
        # publishers share the address (counted, not logged again within 10 s)
        assert "ignored an end-of-stream message from publisher session 666 while following session 11" in caplog.text
        pub.end(real, 1)
        assert sub.recv(10) is None and sub.end is not None and sub.end.session == 11
        assert sub.missing_at_end == 0


def test_a_restarted_publisher_is_followed_and_its_class_table_adopted(pub, caplog):
    old, new = MessageEncoder(session=1), MessageEncoder(session=2)
    with Subscriber(address=f"tcp://127.0.0.1:{pub.port}") as sub:
        _connect(pub, sub, old)
        pub.labels(old, 0)
        assert sub.recv(10).session == 1
        with caplog.at_level(logging.WARNING, logger="perception.transport.subscriber"):
            pub.classes(new, OTHER_CLASSES)  # a restarted pipeline sends its table before its first frame
            pub.labels(new, 0)
            msg = sub.recv(10)
        assert (msg.session, sub.session, sub.restarts) == (2, 2, 1)
        assert sub.classes == OTHER_CLASSES  # held back until the session changed, then adopted
        assert sub.foreign == 0 and "ignored" not in caplog.text  # a restart is not a second publisher
        pub.end(old, 0)  # the old session's late word is no longer obeyed
        pub.labels(new, 1)
        assert sub.recv(10).seq == 1 and sub.end is None and sub.foreign == 1


def test_end_before_any_session_is_ignored(pub):
    enc = MessageEncoder(session=5)
    with Subscriber(address=f"tcp://127.0.0.1:{pub.port}") as sub:
        def ended_or_received() -> bool:  # keep sending until the subscriber has surely seen one end
            pub.end(enc, 3)
            sub.recv(0.05)
            return sub.foreign > 0

        wait_until(ended_or_received, what="an end-of-stream message at the subscriber")
        assert sub.end is None and sub.session is None
        pub.labels(enc, 0)
        assert sub.recv(10).seq == 0


def test_a_second_publishers_table_is_reported_when_ours_goes_on(pub, caplog):
    real, other = MessageEncoder(session=11), MessageEncoder(session=12)
    with Subscriber(address=f"tcp://127.0.0.1:{pub.port}") as sub:
        _connect(pub, sub, real)
        pub.labels(real, 0)
        assert sub.recv(10).seq == 0
        with caplog.at_level(logging.WARNING, logger="perception.transport.subscriber"):
            pub.classes(other, OTHER_CLASSES)
            pub.labels(real, 1)
            assert sub.recv(10).seq == 1
        assert sub.foreign == 1 and sub.classes == CLASSES and sub.session == 11
        assert "ignored a class table from publisher session 12 while following session 11" in caplog.text
