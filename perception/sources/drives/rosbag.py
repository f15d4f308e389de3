"""ROS 1 bags and ROS 2 bag folders (sqlite3 or MCAP storage), read with ``rosbags`` (no ROS needed)."""

from __future__ import annotations

import lzma
import sqlite3
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from perception.errors import DataError, SourceError
from perception.sources.drives.decode import ImageMessage
from perception.sources.drives.reader import TopicInfo, optional_errors
from perception.sources.drives.schemas import image_kind, to_image_message

try:
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.rosbag1 import ReaderError as Ros1ReaderError
    from rosbags.rosbag2 import ReaderError as Ros2ReaderError
    from rosbags.typesys import Stores, get_typestore
except ImportError as _exc:  # pragma: no cover - rosbags is a declared dependency of drives
    raise ImportError(f"replaying ROS bags needs the 'rosbags' package (pip install rosbags): {_exc}") from _exc

CONTAINER_ERRORS: tuple[type[BaseException], ...] = (
    AnyReaderError, Ros1ReaderError, Ros2ReaderError, sqlite3.Error, OSError, EOFError, struct.error,
    zlib.error, lzma.LZMAError, ValueError, KeyError, IndexError, RuntimeError,
)
"""What ``rosbags`` (and the sqlite3 / decompression code under it) raises on a corrupt or truncated
bag; translated to :class:`SourceError` naming the file."""



CONTAINER_ERRORS = CONTAINER_ERRORS + optional_errors("zstandard.ZstdError", "apsw.Error")

DEFAULT_TYPESTORE = Stores.ROS2_HUMBLE
"""Message definitions used for ROS 2 bags that do not embed their own (older rosbag2 versions).
``sensor_msgs`` image types are identical across ROS 2 distributions."""


class RosbagReader:
    """A ROS 1 bag file or ROS 2 bag folder, opened for reading (see :class:`.reader.DriveReader`)."""

    def __init__(self, path: Path, *, shown_as: Path | None = None) -> None:
        self.path = Path(shown_as or path)
        try:
            reader = AnyReader([Path(path)], default_typestore=get_typestore(DEFAULT_TYPESTORE))
            reader.open()
        except FileNotFoundError as exc:
            raise SourceError(f"recorded drive not found: {self.path} ({exc})") from exc
        except CONTAINER_ERRORS as exc:
            raise SourceError(f"cannot read bag {self.path}: corrupt, truncated or not a bag ({exc})") from exc
        self._reader = reader
        self.image_topics: dict[str, TopicInfo] = {}
        self.other_topics: dict[str, str] = {}
        self._connections: dict[str, list[Any]] = {}
        for conn in reader.connections:
            kind = image_kind(conn.msgtype)
            if kind is None:
                self.other_topics.setdefault(conn.topic, conn.msgtype)
                continue
            self._connections.setdefault(conn.topic, []).append(conn)
            known = self.image_topics.get(conn.topic)
            count = conn.msgcount + (known.count or 0 if known else 0)
            self.image_topics[conn.topic] = TopicInfo(topic=conn.topic, schema=conn.msgtype, kind=kind, count=count)
        try:
            self.start_ns = int(reader.start_time) if reader.message_count else 0
            self.end_ns = int(reader.end_time) if reader.message_count else 0
        except CONTAINER_ERRORS as exc:
            raise SourceError(f"cannot read bag {self.path}: {exc}") from exc

    def messages(self, topics: Sequence[str], *, start_ns: int | None = None) -> Iterator[tuple[str, int, Any]]:
        conns = [c for t in topics for c in self._connections.get(t, ())]
        if not conns:
            return
        try:
            for conn, t_ns, raw in self._reader.messages(connections=conns, start=start_ns):
                yield conn.topic, int(t_ns), (conn.msgtype, raw)
        except CONTAINER_ERRORS as exc:
            raise SourceError(f"bag {self.path} is corrupt or truncated: reading stopped ({type(exc).__name__}: "
                              f"{exc})") from exc

    def image(self, topic: str, payload: Any) -> ImageMessage:
        msgtype, raw = payload
        try:
            obj = self._reader.deserialize(raw, msgtype)
        except (AnyReaderError, struct.error, ValueError, IndexError, KeyError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot deserialise a {msgtype} message: {exc}") from exc
        return to_image_message(obj, self.image_topics[topic].kind)

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
