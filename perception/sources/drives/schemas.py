"""Which message schemas are camera images, and how their fields map onto :class:`ImageMessage`.

Covers ROS 1 / ROS 2 ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage``, Foxglove's
``foxglove.RawImage`` / ``foxglove.CompressedImage`` (JSON or protobuf) and their ROS twins
``foxglove_msgs/msg/RawImage`` / ``foxglove_msgs/msg/CompressedImage``. Decoded messages arrive as
objects (rosbags dataclasses, protobuf messages) or dicts (JSON); field access handles both.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from perception.errors import DataError
from perception.sources.drives.decode import ImageMessage

ImageKind = Literal["raw", "compressed"]

_IMAGE_SCHEMAS: dict[str, ImageKind] = {
    "sensor_msgs/msg/Image": "raw",
    "sensor_msgs/Image": "raw",
    "sensor_msgs/msg/CompressedImage": "compressed",
    "sensor_msgs/CompressedImage": "compressed",
    "foxglove.RawImage": "raw",
    "foxglove_msgs/msg/RawImage": "raw",
    "foxglove_msgs/RawImage": "raw",
    "foxglove.CompressedImage": "compressed",
    "foxglove_msgs/msg/CompressedImage": "compressed",
    "foxglove_msgs/CompressedImage": "compressed",
}


def image_kind(schema_name: str) -> ImageKind | None:
    """``"raw"`` / ``"compressed"`` for an image schema name, None for anything else."""
    return _IMAGE_SCHEMAS.get(schema_name)


def _field(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(obj, dict):
            if name in obj:
                return obj[name]
        elif hasattr(obj, name):
            return getattr(obj, name)
    return default


def stamp_ns(stamp: Any) -> int:
    """A ROS ``Time`` (sec/nanosec), protobuf ``Timestamp`` (seconds/nanos) or Foxglove JSON time
    (sec/nsec) as integer ns; 0 when absent."""
    if stamp is None:
        return 0
    sec = _field(stamp, "sec", "seconds", "secs", default=0) or 0
    nsec = _field(stamp, "nanosec", "nanos", "nsec", "nsecs", default=0) or 0
    return int(sec) * 1_000_000_000 + int(nsec)


def _payload(data: Any) -> Any:
    if isinstance(data, str):  # JSON: bytes fields are base64
        try:
            return base64.b64decode(data, validate=True)
        except ValueError as exc:
            raise DataError(f"image data is not valid base64: {exc}") from exc
    if data is None:
        raise DataError("image message has no data field")
    return data


def to_image_message(obj: Any, kind: ImageKind) -> ImageMessage:
    """Map a decoded image message (any supported schema) onto :class:`ImageMessage`.

    Raises:
        DataError: a required field is missing or malformed.
    """
    header = _field(obj, "header")
    stamp = _field(header, "stamp") if header is not None else _field(obj, "timestamp")
    try:
        if kind == "compressed":
            return ImageMessage(kind="compressed", encoding=str(_field(obj, "format", default="") or ""),
                                data=_payload(_field(obj, "data")), stamp_ns=stamp_ns(stamp))
        return ImageMessage(
            kind="raw",
            encoding=str(_field(obj, "encoding", default="")),
            data=_payload(_field(obj, "data")),
            stamp_ns=stamp_ns(stamp),
            width=int(_field(obj, "width", default=0)),
            height=int(_field(obj, "height", default=0)),
            step=int(_field(obj, "step", default=0)),
            is_bigendian=bool(_field(obj, "is_bigendian", default=False)),
        )
    except (TypeError, ValueError) as exc:
        raise DataError(f"malformed {kind} image message: {exc}") from exc
