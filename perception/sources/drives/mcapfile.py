"""Any ``.mcap`` file, read with the ``mcap`` package: ROS 2 (CDR), ROS 1 and Foxglove (JSON or
protobuf) image channels.

Messages are deserialised by their channel's encoding: ``cdr`` / ``ros1`` with ``rosbags``' type
stores (definitions of types the store lacks are taken from the file's ``ros2msg`` schema), ``json``
with :mod:`json` (bytes fields base64, as Foxglove writes them), ``protobuf`` with message classes built
from the file's own ``FileDescriptorSet`` (no generated code needed).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from perception.errors import DataError, SourceError
from perception.sources.drives.decode import ImageMessage
from perception.sources.drives.reader import TopicInfo, optional_errors
from perception.sources.drives.schemas import image_kind, to_image_message

try:
    from mcap.exceptions import McapError
    from mcap.reader import make_reader
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader
except ImportError as _exc:  # pragma: no cover - mcap is a declared dependency of drives
    raise ImportError(f"replaying MCAP files needs the 'mcap' package (pip install mcap): {_exc}") from _exc

CONTAINER_ERRORS: tuple[type[BaseException], ...] = (
    McapError, OSError, EOFError, struct.error, zlib.error, ValueError, KeyError, IndexError, RuntimeError,
    StopIteration,
)
"""What ``mcap`` (and the decompressors under it) raises on a corrupt or truncated file."""



CONTAINER_ERRORS = CONTAINER_ERRORS + optional_errors("zstandard.ZstdError", "apsw.Error")

_ROS2_SEPARATOR = "=" * 80 + "\n"


def _ros_type_name(name: str) -> str:
    """``sensor_msgs/Image`` -> ``sensor_msgs/msg/Image`` (rosbags' naming)."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


class McapFileReader:
    """An MCAP file opened for reading (see :class:`.reader.DriveReader`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        schemas: dict[int, Schema] = {}
        channels: dict[int, Channel] = {}
        counts: dict[int, int] | None
        try:
            with self.path.open("rb") as f:
                summary = make_reader(f).get_summary()
                if summary is not None:
                    schemas, channels = dict(summary.schemas), dict(summary.channels)
                    stats = summary.statistics
                    counts = dict(stats.channel_message_counts) if stats is not None else None
                    self.start_ns = int(stats.message_start_time) if stats is not None else 0
                    self.end_ns = int(stats.message_end_time) if stats is not None else 0
                else:  # a valid file written without a summary: scan it once
                    f.seek(0)
                    counts, self.start_ns, self.end_ns = {}, 0, 0
                    first = True
                    for record in StreamReader(f).records:
                        if isinstance(record, Schema):
                            schemas[record.id] = record
                        elif isinstance(record, Channel):
                            channels[record.id] = record
                        elif isinstance(record, Message):
                            counts[record.channel_id] = counts.get(record.channel_id, 0) + 1
                            self.start_ns = record.log_time if first else min(self.start_ns, record.log_time)
                            self.end_ns = max(self.end_ns, record.log_time)
                            first = False
        except CONTAINER_ERRORS as exc:
            raise SourceError(
                f"cannot read MCAP file {self.path}: corrupt, truncated or not an MCAP file "
                f"({type(exc).__name__}: {exc}); a truncated recording can be repaired with `mcap recover`"
            ) from exc
        self._schemas = schemas
        self._channels = channels
        self.image_topics: dict[str, TopicInfo] = {}
        self.other_topics: dict[str, str] = {}
        self._topic_kind: dict[str, Any] = {}
        for ch in channels.values():
            schema = schemas.get(ch.schema_id)
            name = schema.name if schema is not None else ""
            kind = image_kind(name)
            if kind is None:
                self.other_topics.setdefault(ch.topic, name or "(no schema)")
                continue
            known = self.image_topics.get(ch.topic)
            count = None if counts is None else counts.get(ch.id, 0) + ((known.count or 0) if known else 0)
            self.image_topics[ch.topic] = TopicInfo(topic=ch.topic, schema=name, kind=kind, count=count)
        self._decoders: dict[int, Callable[[bytes], Any]] = {}
        self._typestores: dict[str, Any] = {}
        self._closed = False

    # ------------------------------------------------------------------ messages
    def messages(self, topics: Sequence[str], *, start_ns: int | None = None) -> Iterator[tuple[str, int, Any]]:
        if self._closed:
            raise SourceError(f"MCAP file {self.path} was closed")
        topics = [t for t in topics if t in self.image_topics]
        if not topics:
            return
        try:
            with self.path.open("rb") as f:  # one handle per pass: passes never disturb each other
                for schema, channel, message in make_reader(f, validate_crcs=True).iter_messages(
                    topics=topics, starting_at=start_ns, log_time_order=True
                ):
                    yield channel.topic, int(message.log_time), (schema, channel, message.data)
        except CONTAINER_ERRORS as exc:
            raise SourceError(
                f"MCAP file {self.path} is corrupt or truncated: reading stopped ({type(exc).__name__}: {exc})"
            ) from exc

    def image(self, topic: str, payload: Any) -> ImageMessage:
        schema, channel, data = payload
        decode = self._decoders.get(channel.id)
        if decode is None:
            decode = self._decoders[channel.id] = self._make_decoder(schema, channel)
        try:
            obj = decode(data)
        except DataError:
            raise
        except (ValueError, KeyError, IndexError, TypeError, struct.error, UnicodeDecodeError) as exc:
            raise DataError(f"cannot deserialise a {channel.message_encoding} {schema.name} message: {exc}") from exc
        return to_image_message(obj, self.image_topics[topic].kind)

    def close(self) -> None:
        """Nothing stays open between passes; marks the reader closed. Idempotent."""
        self._closed = True

    # ------------------------------------------------------------------ decoders
    def _make_decoder(self, schema: Schema | None, channel: Channel) -> Callable[[bytes], Any]:
        if schema is None:
            raise DataError(f"channel {channel.topic} has no schema; cannot decode its messages")
        enc = channel.message_encoding
        if enc == "json":
            return json.loads
        if enc == "cdr":
            store = self._ros_typestore("ros2", schema)
            name = _ros_type_name(schema.name)
            return lambda data: store.deserialize_cdr(data, name)
        if enc == "ros1":
            store = self._ros_typestore("ros1", schema)
            name = _ros_type_name(schema.name)
            return lambda data: store.deserialize_ros1(data, name)
        if enc == "protobuf":
            cls = _protobuf_class(schema)
            return cls.FromString
        raise DataError(f"channel {channel.topic}: unsupported message encoding {enc!r} (json, cdr, ros1, protobuf)")

    def _ros_typestore(self, flavour: str, schema: Schema) -> Any:
        from rosbags.typesys import Stores, get_typestore
        from rosbags.typesys.msg import get_types_from_msg

        store = self._typestores.get(flavour)
        if store is None:
            store = get_typestore(Stores.ROS2_HUMBLE if flavour == "ros2" else Stores.ROS1_NOETIC)
            self._typestores[flavour] = store
        name = _ros_type_name(schema.name)
        if name not in store.fielddefs and schema.encoding in ("ros2msg", "ros1msg"):
            text = schema.data.decode("utf-8", errors="replace")
            sections = text.split(_ROS2_SEPARATOR)
            types = dict(get_types_from_msg(sections[0], name))
            for section in sections[1:]:
                head, _, body = section.partition("\n")
                if head.startswith("MSG: "):
                    types.update(get_types_from_msg(body, _ros_type_name(head[5:].strip())))
            store.register(types)
        return store


def _protobuf_class(schema: Schema) -> Any:
    """The protobuf message class of ``schema`` (``encoding == "protobuf"``, data = FileDescriptorSet)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf.message import DecodeError

    try:
        fds = descriptor_pb2.FileDescriptorSet.FromString(schema.data)
        pool = descriptor_pool.DescriptorPool()
        pending = list(fds.file)
        added: set[str] = set()
        while pending:  # add files after their dependencies
            ready = [fd for fd in pending if all(dep in added for dep in fd.dependency)]
            if not ready:
                raise DataError(f"protobuf schema {schema.name}: unresolved imports in its FileDescriptorSet")
            for fd in ready:
                pool.Add(fd)
                added.add(fd.name)
                pending.remove(fd)
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema.name))
    except (DecodeError, KeyError, TypeError) as exc:
        raise DataError(f"cannot load protobuf schema {schema.name}: {exc}") from exc
