"""Write small real drives (ROS 1 bag, ROS 2 bag in sqlite3 / MCAP storage, plain MCAP with ROS 2 or
Foxglove schemas) with the same libraries users record with, for the drive tests."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
COMPRESSED_FORMATS = ("jpeg", "png")


@dataclass(frozen=True)
class Frame:
    """One message to write: ``image`` (BGR) stored on ``topic`` in ``encoding`` (raw encodings, or
    ``jpeg`` / ``png`` for compressed messages; any other string is written as a raw image with that
    encoding name and BGR bytes, i.e. an unknown encoding)."""

    topic: str
    stamp_ns: int
    log_ns: int
    image: np.ndarray
    encoding: str = "bgr8"


def test_frames(
    n: int, camvid_dir: Path | None = None, *, size: tuple[int, int] = (96, 72), seed: int = 0
) -> list[np.ndarray]:
    """``n`` distinct BGR frames: CamVid val images (resized) when available, else generated ones."""
    w, h = size
    if camvid_dir is not None:
        files = sorted((camvid_dir / "val").glob("*.png"))[:n]
        if len(files) == n:
            return [cv2.resize(cv2.imread(str(f)), (w, h), interpolation=cv2.INTER_AREA) for f in files]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 2] = (200, 160, 120)
        img[h // 2 :] = (90, 90, 90)
        x = (i * 7) % (w - 12)
        img[h // 3 : h // 3 + 12, x : x + 12] = rng.integers(0, 255, 3)
        out.append(cv2.GaussianBlur(img, (5, 5), 0))
    return out


def raw_bytes(image: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """``(uint8 data, step)`` of ``image`` (BGR) in a raw ROS encoding."""
    h, w = image.shape[:2]
    if encoding == "rgb8":
        data = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif encoding == "mono8":
        data = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif encoding == "mono16":
        data = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype("<u2") * 257).view(np.uint8)
    elif encoding == "bayer_rggb8":
        data = np.empty((h, w), np.uint8)
        data[0::2, 0::2] = image[0::2, 0::2, 2]
        data[0::2, 1::2] = image[0::2, 1::2, 1]
        data[1::2, 0::2] = image[1::2, 0::2, 1]
        data[1::2, 1::2] = image[1::2, 1::2, 0]
    elif encoding in ("yuv422", "uyvy", "yuyv", "yuv422_yuy2"):
        # video-range BT.601 (what OpenCV's YUV422 decoders expect), chroma from the 4:2:0 planes
        i420 = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        y = i420[:h]
        chroma = i420[h:].reshape(2, h // 2, w // 2)
        u = np.repeat(chroma[0], 2, axis=0)
        v = np.repeat(chroma[1], 2, axis=0)
        packed = np.empty((h, w // 2, 4), np.uint8)
        if encoding in ("yuv422", "uyvy"):
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
        else:
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y[:, 0::2], u, y[:, 1::2], v
        data = packed.reshape(h, w * 2)
    else:  # bgr8 and unknown encodings: BGR bytes
        data = image
    data = np.ascontiguousarray(data).reshape(h, -1)
    return data.reshape(-1), data.shape[1]


def _encoded(image: np.ndarray, fmt: str) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", image)
    assert ok
    return buf.reshape(-1)


def ros_message(typestore, frame: Frame):
    """The rosbags message object for ``frame`` (sensor_msgs Image or CompressedImage)."""
    t = typestore.types
    extra = {"seq": 0} if any(n == "seq" for n, _ in typestore.fielddefs["std_msgs/msg/Header"][1]) else {}
    header = t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=frame.stamp_ns // 10**9, nanosec=frame.stamp_ns % 10**9),
        frame_id="camera", **extra,
    )
    if frame.encoding in COMPRESSED_FORMATS:
        return COMPRESSED_TYPE, t[COMPRESSED_TYPE](header=header, format=frame.encoding,
                                                   data=_encoded(frame.image, frame.encoding))
    data, step = raw_bytes(frame.image, frame.encoding)
    h, w = frame.image.shape[:2]
    return IMAGE_TYPE, t[IMAGE_TYPE](header=header, height=h, width=w, encoding=frame.encoding,
                                     is_bigendian=0, step=step, data=data)


def write_ros1_bag(path: Path, frames: list[Frame], *, chunk_bytes: int | None = None,
                   compression: str | None = None) -> Path:
    """A ROS 1 bag; ``chunk_bytes`` sets the chunk size (rosbags' default: 1 MiB; ``rosbag record``'s
    768 KiB), ``compression`` ``"bz2"`` or ``"lz4"`` compresses the chunks."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    conns: dict[tuple[str, str], object] = {}
    writer = Writer(path)
    if chunk_bytes is not None:
        writer.chunk_threshold = chunk_bytes
    if compression is not None:
        writer.set_compression(Writer.CompressionFormat[compression.upper()])
    with writer:
        for f in sorted(frames, key=lambda f: f.log_ns):
            msgtype, msg = ros_message(ts, f)
            key = (f.topic, msgtype)
            if key not in conns:
                conns[key] = writer.add_connection(f.topic, msgtype, typestore=ts)
            writer.write(conns[key], f.log_ns, ts.serialize_ros1(msg, msgtype))
    return path


def write_ros2_bag(path: Path, frames: list[Frame], *, storage: str = "sqlite3") -> Path:
    """A ROS 2 bag folder at ``path`` (must not exist)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    conns: dict[tuple[str, str], object] = {}
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        for f in sorted(frames, key=lambda f: f.log_ns):
            msgtype, msg = ros_message(ts, f)
            key = (f.topic, msgtype)
            if key not in conns:
                conns[key] = writer.add_connection(f.topic, msgtype, typestore=ts)
            writer.write(conns[key], f.log_ns, ts.serialize_cdr(msg, msgtype))
    return path


def write_ros2_mcap(path: Path, frames: list[Frame]) -> Path:
    """A plain MCAP file with ROS 2 schemas (``ros2msg``) and CDR messages, written with ``mcap``."""
    from mcap.writer import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    with path.open("wb") as fh:
        w = Writer(fh)
        w.start(profile="ros2")
        schemas: dict[str, int] = {}
        channels: dict[tuple[str, str], int] = {}
        for f in sorted(frames, key=lambda f: f.log_ns):
            msgtype, msg = ros_message(ts, f)
            if msgtype not in schemas:
                text = ts.generate_msgdef(msgtype, ros_version=2)[0]
                schemas[msgtype] = w.register_schema(msgtype, "ros2msg", text.encode())
            key = (f.topic, msgtype)
            if key not in channels:
                channels[key] = w.register_channel(f.topic, "cdr", schemas[msgtype])
            w.add_message(channels[key], log_time=f.log_ns, publish_time=f.log_ns,
                          data=bytes(ts.serialize_cdr(msg, msgtype)))
        w.finish()
    return path


def write_foxglove_mcap(path: Path, frames: list[Frame], *, encoding: str = "json") -> Path:
    """A plain MCAP with ``foxglove.RawImage`` / ``foxglove.CompressedImage`` in JSON or protobuf."""
    from mcap.writer import Writer

    with path.open("wb") as fh:
        w = Writer(fh)
        w.start()
        schemas: dict[str, int] = {}
        channels: dict[tuple[str, str], int] = {}
        for f in sorted(frames, key=lambda f: f.log_ns):
            compressed = f.encoding in COMPRESSED_FORMATS
            name = "foxglove.CompressedImage" if compressed else "foxglove.RawImage"
            h, wd = f.image.shape[:2]
            if compressed:
                payload = _encoded(f.image, f.encoding).tobytes()
                fields = {"format": f.encoding}
            else:
                data, step = raw_bytes(f.image, f.encoding)
                payload = data.tobytes()
                fields = {"width": wd, "height": h, "encoding": f.encoding, "step": step}
            sec, nsec = divmod(f.stamp_ns, 10**9)
            if encoding == "json":
                if name not in schemas:
                    schemas[name] = w.register_schema(name, "jsonschema", json.dumps({"type": "object"}).encode())
                body = {"timestamp": {"sec": sec, "nsec": nsec}, "frame_id": "camera",
                        "data": base64.b64encode(payload).decode(), **fields}
                data_out = json.dumps(body).encode()
            else:
                import pytest

                pytest.importorskip("foxglove_schemas_protobuf")  # test extra: foxglove-schemas-protobuf
                from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
                from foxglove_schemas_protobuf.RawImage_pb2 import RawImage

                cls = CompressedImage if compressed else RawImage
                if name not in schemas:
                    schemas[name] = w.register_schema(name, "protobuf", _file_descriptor_set(cls))
                pb = cls(frame_id="camera", data=payload, **fields)
                pb.timestamp.seconds, pb.timestamp.nanos = sec, nsec
                data_out = pb.SerializeToString()
            key = (f.topic, name)
            if key not in channels:
                channels[key] = w.register_channel(f.topic, encoding, schemas[name])
            w.add_message(channels[key], log_time=f.log_ns, publish_time=f.log_ns, data=data_out)
        w.finish()
    return path


def _file_descriptor_set(cls) -> bytes:
    from google.protobuf.descriptor_pb2 import FileDescriptorSet

    fds = FileDescriptorSet()
    seen: set[str] = set()

    def add(fd) -> None:
        if fd.name in seen:
            return
        for dep in fd.dependencies:
            add(dep)
        seen.add(fd.name)
        fd.CopyToProto(fds.file.add())

    add(cls.DESCRIPTOR.file)
    return fds.SerializeToString()


def make_frames(topic: str, images: list[np.ndarray], *, encoding: str = "bgr8", t0_ns: int = 1_700_000_000_000_000_000,
                period_ns: int = 100_000_000, offset_ns: int = 0, log_delay_ns: int = 3_000_000) -> list[Frame]:
    """Messages of one topic: stamps ``t0 + offset + i * period``, logged ``log_delay_ns`` later."""
    return [Frame(topic, t0_ns + offset_ns + i * period_ns, t0_ns + offset_ns + i * period_ns + log_delay_ns, img,
                  encoding)
            for i, img in enumerate(images)]
