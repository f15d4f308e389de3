"""What the drive source needs from a recorded-drive container, whatever the format.

Two implementations: :mod:`perception.sources.drives.rosbag` (ROS 1 ``.bag``, ROS 2 bag folders with sqlite3
or MCAP storage, through ``rosbags``) and :mod:`perception.sources.drives.mcapfile` (any ``.mcap`` file,
through ``mcap``). :func:`~perception.sources.drives.opener.open_reader` picks one from the path.

Reading is split in two steps so that one bad message never ends a replay: :meth:`DriveReader.messages`
yields raw payloads in log-time order (container errors there are fatal: :class:`SourceError`), and
:meth:`DriveReader.image` deserialises one payload (a bad payload is a :class:`DataError` the source
counts and skips).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from perception.sources.drives.decode import ImageMessage
from perception.sources.drives.schemas import ImageKind


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
