"""Opens a recorded drive with the reader its format needs (:mod:`.rosbag` or :mod:`.mcapfile`).

Apart from :mod:`.reader` (the protocol both readers implement) so that the readers import the protocol
and this module imports the readers, with no cycle between them.
"""

from __future__ import annotations

import os
from pathlib import Path

from perception.errors import SourceError
from perception.sources.drives.reader import DriveReader


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

    A ROS 1 bag that ``rosbags`` refuses (truncated by a crash, so without its index, or with a damaged
    chunk) is read as far as it can be by :class:`~.ros1salvage.Ros1SalvageReader` (its ``damage``
    says what was lost).

    Raises:
        SourceError: missing, unreadable, corrupt or truncated input (the message names the file).
    """
    p = Path(path)
    if not p.exists():
        raise SourceError(f"recorded drive not found: {p}")
    if p.is_file() and p.suffix.lower() == ".mcap":
        from perception.sources.drives.mcapfile import McapFileReader

        return McapFileReader(p)
    if p.is_dir() and not (p / "metadata.yaml").is_file():
        raise SourceError(f"{p} is a folder without metadata.yaml: not a ROS 2 bag")
    from perception.sources.drives.rosbag import RosbagReader

    try:
        return RosbagReader(bag_paths(p), shown_as=p)
    except SourceError as exc:
        if not (p.is_file() and p.suffix.lower() == ".bag"):
            raise
        cause = exc  # a ROS 1 bag that rosbags refuses (no index, a damaged chunk): read what is left
    from perception.sources.drives.ros1salvage import Ros1SalvageReader

    try:
        return Ros1SalvageReader(p, cause=str(cause))
    except SourceError as exc:
        raise exc from cause
