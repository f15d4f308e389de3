"""Transport: the wire schema, ZeroMQ publisher and subscriber (the contract with consumers)."""

from perception.transport.publisher import Publisher, PublisherStats
from perception.transport.subscriber import Subscriber
from perception.transport.wire import (
    SCHEMA_MAJOR,
    SCHEMA_MINOR,
    ClassTable,
    DecodeLimits,
    LabelMessage,
    MessageDecoder,
    MessageEncoder,
    StreamEnd,
    TrackRecord,
    classes_version,
)

__all__ = [
    "SCHEMA_MAJOR",
    "SCHEMA_MINOR",
    "ClassTable",
    "DecodeLimits",
    "LabelMessage",
    "MessageDecoder",
    "MessageEncoder",
    "Publisher",
    "PublisherStats",
    "StreamEnd",
    "Subscriber",
    "TrackRecord",
    "classes_version",
]
