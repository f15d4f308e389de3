"""End-of-stream message: the subscriber learns the last seq, so a dropped final message shows."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from perception.errors import TransportError
from perception.transport.publisher import Publisher
from perception.transport.subscriber import Subscriber
from perception.transport.wire import MessageDecoder, MessageEncoder
from perception.types import FrameResult
from tests.transport.helpers import CLASSES, make_labels, make_meta, wait_until


def _subscribed(pub: Publisher) -> None:
    def seen() -> bool:
        pub.poll()
        return pub.stats.subscriptions >= 1

    wait_until(seen, what="a subscription at the publisher")


def test_end_arrives_after_every_message_and_stops_iteration(tcp_address):
    with Publisher(address=tcp_address, classes=CLASSES, hwm=64) as pub, Subscriber(address=pub.endpoint) as sub:
        _subscribed(pub)
        for i in range(5):
            assert pub.publish(FrameResult(meta=make_meta(i), labels=make_labels(i)))
        assert pub.end_stream(reason="end")
        got = [m.seq for m in sub]  # iteration ends with the stream
        assert got == [0, 1, 2, 3, 4]
        assert sub.end is not None and sub.end.reason == "end"
        assert (sub.end.last_seq, sub.end.published, sub.end.dropped) == (4, 5, 0)
        assert sub.end.session == pub.session
        assert sub.missing_at_end == 0 and sub.gaps == 0
        assert sub.recv(timeout_s=5) is None  # at once: the stream is over


def test_missing_at_end_counts_the_dropped_tail(tcp_address):
    # big raw messages, tiny queues and a subscriber that does not read: its queue fills quickly and it
    # loses every later message; the stream's last messages never reach it
    w, h = 1920, 1080
    with Publisher(address=tcp_address, classes=CLASSES, hwm=1) as pub, \
            Subscriber(address=pub.endpoint, rcvhwm=1) as sub:
        _subscribed(pub)
        i = 0
        while pub.stats.dropped == 0 or i < 50:
            pub.publish(FrameResult(meta=make_meta(i, w, h), labels=np.full((h, w), i % 200, np.uint8)))
            i += 1
            assert i < 10_000, "the stalled subscriber's queue never filled"
        # the reader was set aside by libzmq: the end message is repeated until it reads again
        ended = threading.Thread(target=pub.end_stream, kwargs={"timeout_s": 5.0})
        ended.start()
        seqs = [m.seq for m in sub]
        ended.join(timeout=30)
    assert sub.end is not None and sub.end.last_seq == i - 1
    assert sub.end.dropped == pub.stats.dropped >= 1 and sub.end.published == pub.stats.sent == i
    assert seqs and seqs[-1] < i - 1 and sub.missing_at_end == i - 1 - seqs[-1] >= 1
    # every message of the stream is accounted for: received, lost before the first one received
    # (seq starts at 0; the class table sent on subscribing can fill a queue of 1), a gap in seq, or
    # lost at the tail
    head = sub.first_seq
    assert head == seqs[0]
    assert len(seqs) + head + sub.gaps + sub.missing_at_end == i


def test_end_message_round_trip_and_errors():
    enc, dec = MessageEncoder(), MessageDecoder()
    end = dec.decode_end([enc.encode_end(last_seq=-1, published=0, dropped=0, reason="stopped", t_publish_wall_ns=5)])
    assert (end.last_seq, end.reason, end.t_publish_wall_ns, end.session) == (-1, "stopped", 5, enc.session)
    with pytest.raises(TransportError, match="expected kind 'end'"):
        dec.decode_end([enc.encode_classes(CLASSES, t_publish_wall_ns=0)])
    with pytest.raises(TransportError, match="no header"):
        dec.decode_end([])


def test_end_stream_on_a_closed_publisher_is_an_error(tcp_address):
    pub = Publisher(address=tcp_address, classes=CLASSES)
    pub.close()
    with pytest.raises(TransportError, match="closed"):
        pub.end_stream()
