"""What the drive source needs from a recorded-drive container, whatever the format.

Two implementations: :mod:`perception.drives.rosbag` (ROS 1 ``.bag``, ROS 2 bag folders with sqlite3
or MCAP storage, through ``rosbags``) and :mod:`perception.drives.mcapfile` (any ``.mcap`` file,
through ``mcap``). :func:`open_reader` picks one from the path.

Reading is split in two steps so that one bad message never ends a replay: :meth:`DriveReader.messages`
yields raw payloads in log-time order (container errors there are fatal: :class:`SourceError`), and
:meth:`DriveReader.image` deserialises one payload (a bad payload is a :class:`DataError` the source
counts and skips).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from perception.drives.decode import ImageMessage
from perception.drives.schemas import ImageKind
from perception.errors import SourceError


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicInfo:
    """One image topic of a drive."""

    topic: str
    schema: str
    """Message type / schema name, e.g. ``sensor_msgs/msg/Image`` or ``foxglove.CompressedImage``."""
    kind: ImageKind
    count: int | None
    """Messages on the topic in the whole file (None when the container does not say)."""


class DriveReader(Protocol):
    path: Path
    image_topics: dict[str, TopicInfo]
    """Image topics by name."""
    other_topics: dict[str, str]
    """Non-image topics: name -> schema (for error messages)."""
    start_ns: int
    """Log time of the first message (ns); 0 for an empty file."""
    end_ns: int
    """Log time of the last message (ns)."""

    def messages(self, topics: Sequence[str], *, start_ns: int | None = None) -> Iterator[tuple[str, int, Any]]:
        """``(topic, log_time_ns, payload)`` of the given topics in log-time order, from ``start_ns``.

        Raises:
            SourceError: the container is corrupt or truncated (names the file and the cause).
        """
        ...

    def image(self, topic: str, payload: Any) -> ImageMessage:
        """Deserialise one payload of ``topic``. Raises DataError when it cannot be read."""
        ...

    def close(self) -> None: ...


def bag_paths(path: Path) -> Path:
    """The path ``rosbags`` opens for ``path``: a ``.bag`` file, or the ROS 2 bag folder.

    A ``.db3`` file (or a ``.mcap`` file inside a bag folder) is replayed through its folder, which
    holds the ``metadata.yaml`` the ROS 2 reader needs.
    """
    if path.is_dir():
        return path
    if path.suffix.lower() == ".db3":
        if (path.parent / "metadata.yaml").is_file():
            return path.parent
        raise SourceError(
            f"cannot replay {path}: a ROS 2 .db3 file is read through its bag folder, but "
            f"{path.parent} holds no metadata.yaml (replay the whole bag folder)"
        )
    return path


def open_reader(path: str | os.PathLike[str]) -> DriveReader:
    """Open a recorded drive: ``.bag`` (ROS 1), ``.mcap``, ``.db3`` or a ROS 2 bag folder.

    Raises:
        SourceError: missing, unreadable, corrupt or truncated input (the message names the file).
    """
    p = Path(path)
    if not p.exists():
        raise SourceError(f"recorded drive not found: {p}")
    if p.is_file() and p.suffix.lower() == ".mcap":
        from perception.drives.mcapfile import McapFileReader

        return McapFileReader(p)
    if p.is_dir() and not (p / "metadata.yaml").is_file():
        raise SourceError(f"{p} is a folder without metadata.yaml: not a ROS 2 bag")
    from perception.drives.rosbag import RosbagReader

    return RosbagReader(bag_paths(p), shown_as=p)


def optional_errors(*names: str) -> tuple[type[BaseException], ...]:
    """Exception classes of optional decompressors / sqlite drivers, where they are installed."""
    import importlib

    found: list[type[BaseException]] = []
    for name in names:
        module, _, attr = name.rpartition(".")
        try:
            found.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(found)
