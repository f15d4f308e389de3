"""The ZeroMQ publisher as a sink: every frame's result goes out as one label message.

The wire format and the socket live in :mod:`perception.transport` (the contract with consumers);
this module maps the ``publish`` configuration section onto it.
"""

from __future__ import annotations

import logging

from perception.config import PublishConfig
from perception.outputs.base import Ending, RunContext, SinkConfig
from perception.transport.curve import CurveServerKeys
from perception.transport.publisher import Publisher
from perception.types import FrameResult

log = logging.getLogger(__name__)


def curve_keys(cfg: PublishConfig) -> CurveServerKeys | None:
    """The CURVE keys named by ``publish.curve`` (None without it). Raises TransportError naming a
    missing or malformed key file."""
    if cfg.curve is None:
        return None
    return CurveServerKeys.load(cfg.curve.secret_key, cfg.curve.client_keys)


class PublisherSink:
    """Publishes label messages (and the class table, and the end-of-stream message) over ZeroMQ.

    :meth:`write` returns False when some reader's queue was full (that reader lost the message, the
    others got it): the pipeline's ``dropped_publish`` counts those (see :class:`PublisherStats`).
    """

    name = "publisher"

    def __init__(self, config: SinkConfig) -> None:
        self._cfg = config.publish
        self.publisher: Publisher | None = None

    def open(self, run: RunContext) -> None:
        p = self._cfg
        self.publisher = Publisher(
            address=p.address, topic=p.topic, encoding=p.encoding, level=p.level, hwm=p.hwm,
            preview=p.preview, classes=run.classes, curve=curve_keys(p),
        )
        log.info("publishing on %s (topic %r, %s%s)", self.publisher.endpoint, p.topic, p.encoding,
                 ", CURVE" if p.curve else "")
        if p.wait_for_subscribers:
            self.publisher.wait_for_subscribers(p.wait_for_subscribers, timeout_s=p.wait_timeout_s, stop=run.stop)

    def write(self, result: FrameResult) -> bool:
        return self.publisher.publish(result)

    def write_status(self, status: dict) -> None:
        """The pipeline's health, on ``<topic>/status`` (an optional sink method: see :class:`~.base.Sink`)."""
        if self.publisher is not None:
            self.publisher.publish_status(status)

    def close(self, *, reason: Ending = "end") -> None:
        if self.publisher is None:
            return
        try:
            # subscribers learn the last seq (a dropped final message shows) and why the stream ended;
            # an interrupted run does not wait long for slow subscribers
            self.publisher.end_stream(reason=reason, timeout_s=1.0 if reason == "end" else 0.2)
        finally:
            self.publisher.close()
            self.publisher = None


def make_sink(config: SinkConfig) -> PublisherSink:
    """The publisher is always on: it is how the pipeline's output reaches anyone. The CURVE key files
    are read here too, so that a bad one fails before any process starts."""
    curve_keys(config.publish)
    return PublisherSink(config)
