"""Raw maps leave without a copy: a caller reusing its buffer must never change what is on the wire,
and a replay can wait for its subscribers before the first frame."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from perception.errors import TransportError
from perception.transport.publisher import Publisher
from perception.transport.subscriber import Subscriber
from perception.types import FrameResult
from tests.transport.helpers import CLASSES, make_meta


def test_reused_caller_buffer_does_not_corrupt_queued_messages(tcp_address):
    n, w, h = 40, 640, 480
    with Publisher(address=tcp_address, classes=CLASSES, encoding="raw", hwm=n + 10) as pub:
        with Subscriber(address=pub.endpoint, rcvhwm=n + 10) as sub:
            pub.wait_for_subscribers(1, timeout_s=10)
            buf = np.empty((h, w), np.uint8)  # one buffer, overwritten every frame, like the upsampler's
            for i in range(n):
                buf.fill(i % 11)
                assert pub.publish(FrameResult(meta=make_meta(i, w, h), labels=buf))
            got = []
            while len(got) < n:
                msg = sub.recv(timeout_s=10)
                assert msg is not None, f"only {len(got)} of {n} arrived"
                got.append(msg)
    for i, msg in enumerate(got):
        assert msg.frame_seq == i
        assert np.all(msg.labels == i % 11), f"frame {i} carries another frame's labels"


def test_wait_for_subscribers_returns_once_one_joined(tcp_address):
    with Publisher(address=tcp_address, classes=CLASSES) as pub:
        result = {}

        def wait():
            result["n"] = pub.wait_for_subscribers(1, timeout_s=20)

        t = threading.Thread(target=wait)
        t.start()
        with Subscriber(address=pub.endpoint):
            t.join(20)
        assert result.get("n") == 1


def test_wait_for_subscribers_times_out_with_a_clear_error(tcp_address):
    with Publisher(address=tcp_address, classes=CLASSES) as pub:
        with pytest.raises(TransportError, match="0 of 2 subscribers connected"):
            pub.wait_for_subscribers(2, timeout_s=0.3)
