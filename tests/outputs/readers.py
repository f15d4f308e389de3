"""Read recordings back with readers that share no code with the writers: ``mcap`` with
``mcap-protobuf-support`` and ``foxglove-schemas-protobuf`` for Foxglove recordings; ``rosbags`` and
``mcap`` with ``mcap-ros2-support`` for ROS 2 bags."""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

FOXGLOVE_TYPES = ("CompressedImage", "ImageAnnotations", "CameraCalibration")


@dataclass
class Read:
    schema: str
    log_time: int
    publish_time: int
    msg: Any


def _foxglove_classes() -> dict[str, Any]:
    import importlib

    return {f"foxglove.{n}": getattr(importlib.import_module(f"foxglove_schemas_protobuf.{n}_pb2"), n)
            for n in FOXGLOVE_TYPES}


def read_foxglove(path: Path) -> dict[str, list[Read]]:
    """topic -> messages, each decoded from the schema stored in the file (mcap-protobuf-support) and,
    for Foxglove's own types, checked to parse identically with foxglove-schemas-protobuf's classes."""
    from mcap.reader import make_reader
    from mcap_protobuf.decoder import DecoderFactory

    official = _foxglove_classes()
    out: dict[str, list[Read]] = defaultdict(list)
    with path.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            assert schema.encoding == "protobuf" and channel.message_encoding == "protobuf", channel.topic
            assert decoded.DESCRIPTOR.full_name == schema.name, channel.topic
            msg = decoded
            if schema.name in official:
                msg = official[schema.name].FromString(message.data)
                assert msg.SerializeToString(deterministic=True) == decoded.SerializeToString(deterministic=True)
            out[channel.topic].append(Read(schema.name, message.log_time, message.publish_time, msg))
    return dict(out)


def stamp_ns(ts: Any) -> int:
    """A protobuf ``google.protobuf.Timestamp`` in ns."""
    return ts.seconds * 1_000_000_000 + ts.nanos


def png_ids(data: bytes) -> np.ndarray:
    """The palette indices of an indexed PNG (Pillow's mode ``P``)."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    assert im.mode == "P", im.mode
    return np.asarray(im)


def decode_image(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def read_ros2_rosbags(folder: Path) -> dict[str, list[tuple[str, int, Any]]]:
    """topic -> [(type, bag timestamp, message)], with rosbags' reader; types the bag defines itself
    (vision_msgs) come from the definitions stored in the bag, not from our type store."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    out: dict[str, list] = defaultdict(list)
    with AnyReader([folder], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        for conn, t, raw in reader.messages():
            out[conn.topic].append((conn.msgtype, t, reader.deserialize(raw, conn.msgtype)))
    return dict(out)


def read_ros2_mcap(folder: Path) -> dict[str, list[tuple[str, int, Any]]]:
    """The same bag's MCAP file with ``mcap`` and ``mcap-ros2-support`` (ros2msg schemas, CDR)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (mcap_file,) = folder.glob("*.mcap")
    out: dict[str, list] = defaultdict(list)
    with mcap_file.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            out[channel.topic].append((schema.name, message.log_time, decoded))
    return dict(out)


def ros_image(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image as an array (mono8, mono16, bgr8; little-endian)."""
    dtype = {"mono8": np.uint8, "mono16": np.dtype("<u2"), "bgr8": np.uint8}[msg.encoding]
    channels = 3 if msg.encoding == "bgr8" else 1
    data = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    row = data[:, : msg.width * channels * np.dtype(dtype).itemsize]
    arr = np.ascontiguousarray(row).view(dtype).reshape(msg.height, msg.width, channels)
    return arr[..., 0] if channels == 1 else arr
