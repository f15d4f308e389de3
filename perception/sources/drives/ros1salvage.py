"""Reading what is left of a damaged ROS 1 bag: one truncated by a recorder crash, or with a bad chunk.

``rosbags`` reads a ROS 1 bag through the index at its end, which a recorder that crashed or ran out of
disk never wrote: the whole bag is then refused. This reader walks the records themselves instead, as
``rosbag reindex`` does, and keeps every message up to the damage. Where the index is intact but a
chunk is damaged, it reads the chunks the index lists and skips the bad one. Either way it says what
was lost (:attr:`Ros1SalvageReader.damage`, :attr:`Ros1SalvageReader.lost`).

It implements :class:`~perception.sources.drives.reader.DriveReader`; messages are deserialised with
the message definitions the bag carries, like ``rosbags`` does.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from rosbags.rosbag1.reader import Header, ReaderError, RecordType, decompressors
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.msg import normalize_msgtype

from perception.errors import DataError, SourceError
from perception.sources.drives.decode import ImageMessage
from perception.sources.drives.reader import TopicInfo
from perception.sources.drives.schemas import image_kind, to_image_message

DAMAGE_ERRORS: tuple[type[BaseException], ...] = (
    ReaderError, struct.error, EOFError, OSError, ValueError, KeyError, IndexError, RuntimeError,
    zlib.error, lzma.LZMAError,
)
"""What reading a damaged record raises (short reads, bad headers, failed decompression)."""


@dataclass(frozen=True, slots=True)
class _Conn:
    topic: str
    msgtype: str
    msgdef: str


@dataclass(frozen=True, slots=True, order=True)
class _Entry:
    time: int
    chunk_pos: int
    offset: int
    conn: int


def _read_record(f: BinaryIO) -> tuple[Header, bytes]:
    """One record (header, data) at the current position; raises on a short or malformed one."""
    header = Header.read(f)
    size = struct.unpack("<L", _exact(f, 4))[0]
    return header, _exact(f, size)


def _exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError(f"the file ends {n - len(data)} bytes into a record")
    return data


class Ros1SalvageReader:
    """The readable part of a damaged ROS 1 bag (see the module docstring).

    Raises:
        SourceError: not a ROS 1 bag (wrong magic), or not one message could be read.
    """

    def __init__(self, path: Path, *, cause: str, shown_as: Path | None = None) -> None:
        self.path = Path(shown_as or path)
        self._file: BinaryIO | None = Path(path).open("rb")
        self._conns: dict[int, _Conn] = {}
        self._entries: list[_Entry] = []
        self._chunks: dict[int, tuple[int, int, str]] = {}  # chunk position -> (data pos, size, compression)
        self.damage: str | None = None
        """Where and why reading stopped or skipped (None when the whole bag was readable)."""
        self.lost: int | None = 0
        """Messages known lost (from the index of a skipped chunk); None when unknown (a truncated tail)."""
        self.cause = cause
        try:
            self._scan()
        except BaseException:
            self.close()
            raise
        if not self._entries:
            self.close()
            raise SourceError(f"{cause}; no message could be recovered ({self.damage or 'no messages'})")
        self._entries.sort()
        self._typestore = get_typestore(Stores.ROS1_NOETIC)
        types: dict[str, Any] = {}
        for c in self._conns.values():
            if c.msgdef:
                try:
                    types.update(get_types_from_msg(c.msgdef, c.msgtype))
                except Exception:
                    continue
        self._typestore.register(types)
        self._describe()

    # ------------------------------------------------------------------ scanning
    def _scan(self) -> None:
        f = self._file
        assert f is not None
        if not f.readline().startswith(b"#ROSBAG V2.0"):
            raise SourceError(self.cause)
        try:
            header, _ = _read_record(f)
        except DAMAGE_ERRORS:
            raise SourceError(self.cause) from None
        first_record = f.tell()
        index_pos = struct.unpack("<Q", header["index_pos"])[0] if "index_pos" in header else 0
        chunk_infos = self._index(index_pos) if index_pos else None
        if chunk_infos:
            self._read_listed_chunks(chunk_infos)
        else:
            self._walk(first_record)

    def _index(self, index_pos: int) -> list[tuple[int, int]] | None:
        """(chunk position, message count) of every chunk, from the index at the end; None if unreadable."""
        f = self._file
        assert f is not None
        infos: list[tuple[int, int]] = []
        try:
            f.seek(index_pos)
            while True:
                start = f.tell()
                if not f.read(1):
                    break
                f.seek(start)
                header, data = _read_record(f)
                op = header.get_uint8("op")
                if op == RecordType.CONNECTION:
                    self._connection(header, data)
                elif op == RecordType.CHUNK_INFO:
                    count = header.get_uint32("count")
                    msgs = sum(struct.unpack_from("<L", data, 8 * i + 4)[0] for i in range(count))
                    infos.append((header.get_uint64("chunk_pos"), msgs))
        except DAMAGE_ERRORS:
            return None
        return infos or None

    def _read_listed_chunks(self, infos: list[tuple[int, int]]) -> None:
        f = self._file
        assert f is not None
        lost = 0
        for pos, count in infos:
            try:
                f.seek(pos)
                header, data = _read_record(f)
                if header.get_uint8("op") != RecordType.CHUNK:
                    raise ReaderError("not a chunk record where the index says one starts")
                self._chunk(pos, header, data, f.tell() - len(data))
            except DAMAGE_ERRORS as exc:
                lost += count
                self.damage = f"chunk at byte {pos} is damaged ({type(exc).__name__}: {exc})"
        self.lost = lost

    def _walk(self, pos: int) -> None:
        """Read records one after the other from ``pos`` until the end or the first damaged one.

        An uncompressed chunk cut short (the usual end of a crashed recording) gives the messages it
        still holds whole.
        """
        f = self._file
        assert f is not None
        size = os.fstat(f.fileno()).st_size
        f.seek(pos)
        while pos < size:
            try:
                header = Header.read(f)
                op = header.get_uint8("op")
                length = struct.unpack("<L", _exact(f, 4))[0]
                data = f.read(length)
                if op == RecordType.CHUNK:
                    cut = len(data) < length
                    if cut and header.get_string("compression") != "none":
                        raise EOFError(f"the file ends {length - len(data)} bytes into a compressed chunk")
                    self._chunk(pos, header, data, f.tell() - len(data), partial=cut)
                    if cut:
                        raise EOFError(f"the file ends {length - len(data)} bytes into a chunk")
                elif len(data) < length:
                    raise EOFError(f"the file ends {length - len(data)} bytes into a record")
                elif op == RecordType.CONNECTION:
                    self._connection(header, data)
            except DAMAGE_ERRORS as exc:
                self.damage = f"unreadable from byte {pos} of {size} ({type(exc).__name__}: {exc})"
                self.lost = None
                return
            pos = f.tell()

    def _chunk(self, pos: int, header: Header, data: bytes, data_pos: int, *, partial: bool = False) -> None:
        """Index the messages of one chunk (all or none of them; ``partial``: those that are whole)."""
        compression = header.get_string("compression")
        raw = self._decompress(compression, data)
        entries: list[_Entry] = []
        conns: dict[int, tuple[Header, bytes]] = {}
        inner = io.BytesIO(raw)
        while inner.tell() < len(raw):
            offset = inner.tell()
            try:
                h, d = _read_record(inner)
            except DAMAGE_ERRORS:
                if not partial:
                    raise
                break
            op = h.get_uint8("op")
            if op == RecordType.CONNECTION:
                conns[h.get_uint32("conn")] = (h, d)
            elif op == RecordType.MSGDATA:
                entries.append(_Entry(h.get_time("time"), pos, offset, h.get_uint32("conn")))
        for h, d in conns.values():
            self._connection(h, d)
        self._entries.extend(e for e in entries if e.conn in self._conns)
        self._chunks[pos] = (data_pos, len(data), compression)

    @staticmethod
    def _decompress(compression: str, data: bytes) -> bytes:
        if compression == "bz2":
            return bz2.decompress(data)
        try:
            return decompressors[compression](data)
        except KeyError:
            raise ReaderError(f"compression {compression!r} is not supported") from None

    def _connection(self, header: Header, data: bytes) -> None:
        conn = header.get_uint32("conn")
        if conn in self._conns:
            return
        fields = Header.read(io.BytesIO(struct.pack("<L", len(data)) + data))
        self._conns[conn] = _Conn(
            topic=header.get_string("topic"), msgtype=normalize_msgtype(fields.get_string("type")),
            msgdef=fields.get_string("message_definition") if "message_definition" in fields else "",
        )

    def _describe(self) -> None:
        self.image_topics: dict[str, TopicInfo] = {}
        self.other_topics: dict[str, str] = {}
        counts: dict[int, int] = {}
        for e in self._entries:
            counts[e.conn] = counts.get(e.conn, 0) + 1
        for cid, c in self._conns.items():
            kind = image_kind(c.msgtype)
            if kind is None:
                self.other_topics.setdefault(c.topic, c.msgtype)
                continue
            known = self.image_topics.get(c.topic)
            count = counts.get(cid, 0) + (known.count or 0 if known else 0)
            self.image_topics[c.topic] = TopicInfo(topic=c.topic, schema=c.msgtype, kind=kind, count=count)
        self.start_ns = self._entries[0].time
        self.end_ns = self._entries[-1].time

    @property
    def recovered(self) -> int:
        """Messages that can be read."""
        return len(self._entries)

    # ------------------------------------------------------------------ DriveReader
    def messages(self, topics: Sequence[str], *, start_ns: int | None = None) -> Iterator[tuple[str, int, Any]]:
        wanted = {cid for cid, c in self._conns.items() if c.topic in topics}
        current: tuple[int, bytes] = (-1, b"")
        for e in self._entries:
            if e.conn not in wanted or (start_ns is not None and e.time < start_ns):
                continue
            if self._file is None:
                return
            if current[0] != e.chunk_pos:
                data_pos, size, compression = self._chunks[e.chunk_pos]
                try:
                    self._file.seek(data_pos)
                    current = (e.chunk_pos, self._decompress(compression, _exact(self._file, size)))
                except DAMAGE_ERRORS as exc:
                    raise SourceError(f"bag {self.path}: chunk at byte {e.chunk_pos} cannot be read again "
                                      f"({exc})") from exc
            inner = io.BytesIO(current[1])
            inner.seek(e.offset)
            _, data = _read_record(inner)
            c = self._conns[e.conn]
            yield c.topic, e.time, (c.msgtype, data)

    def image(self, topic: str, payload: Any) -> ImageMessage:
        msgtype, raw = payload
        try:
            obj = self._typestore.deserialize_ros1(raw, msgtype)
        except (SerdeError, struct.error, ValueError, IndexError, KeyError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot deserialise a {msgtype} message: {exc}") from exc
        return to_image_message(obj, self.image_topics[topic].kind)

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()
