"""What the recorders and the live viewers write about one frame, from either side of the wire.

The pipeline's sinks see a :class:`~perception.types.FrameResult`; ``perception record`` sees a
:class:`~perception.transport.wire.LabelMessage` from the ZeroMQ stream. Both become one
:class:`OutputFrame`, so that the Foxglove and ROS 2 encoders exist once and write the same messages
on both paths. Also here: the topic names, and the PNG of a label map in class colours that keeps the
class ids (:func:`indexed_png`).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from perception.errors import DataError
from perception.transport.wire import LabelMessage, TrackRecord
from perception.types import FrameResult, Instance, Track

DEFAULT_PREFIX = "/perception"
"""Topic prefix of every recorded or live channel."""

STATE_NAMES = {0: "tentative", 1: "confirmed", 2: "lost", 3: "removed"}
"""``TrackState`` values as the words written to recordings."""

PNG_PARAMS = (int(cv2.IMWRITE_PNG_COMPRESSION), 1, int(cv2.IMWRITE_PNG_STRATEGY), int(cv2.IMWRITE_PNG_STRATEGY_RLE),
              int(cv2.IMWRITE_PNG_FILTER), int(cv2.IMWRITE_PNG_FILTER_UP))
"""How label and instance PNGs are compressed. A label map is large flat regions whose rows repeat: the
"up" filter turns them into runs of zeros and zlib's run-length strategy at level 1 packs those, 4x
faster and a third smaller than OpenCV's default (adaptive filters, level 1): 0.9 ms and 8.7 kB for a
960x540 CamVid label map, against 3.5 ms and 13.3 kB."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputFrame:
    """One frame as the recorders see it. Arrays are borrowed (valid during the write that got them)."""

    camera_id: str
    stamp_ns: int
    """The frame's time in every recording: a recorded drive's own stamp (``t_rec_ns``) when it has
    one, else the capture wall time; ns since the epoch."""
    seq: int
    frame_index: int
    labels: np.ndarray
    """``uint8[H, W]`` class ids."""
    instances: np.ndarray | None
    """``uint16[H, W]`` instance ids (0 = none), or None."""
    tracks: tuple[TrackRecord, ...]
    image: np.ndarray | None
    """BGR ``uint8[h, w, 3]``: the full frame (pipeline sinks) or the preview (``perception record``);
    None when there is none."""
    latencies_ms: Mapping[str, float]
    capture_to_output_ms: float
    """Capture to this output (sinks: to the post-processing stage's write; recordings of the stream:
    capture to publish), 0 when unknown."""

    @property
    def height(self) -> int:
        return int(self.labels.shape[0])

    @property
    def width(self) -> int:
        return int(self.labels.shape[1])

    @classmethod
    def from_result(cls, result: FrameResult, *, now_wall_ns: int = 0) -> OutputFrame:
        """The frame a pipeline sink was handed (``now_wall_ns``: the write's wall time, for the latency)."""
        meta = result.meta
        frame = result.frame if result.frame is not None and result.frame.ndim == 3 else None
        return cls(
            camera_id=meta.camera_id, stamp_ns=meta.t_rec_ns or meta.t_wall_ns, seq=meta.seq,
            frame_index=meta.frame_index, labels=result.labels, instances=result.instance_map,
            tracks=tracks_of(result.tracks, result.instances), image=frame, latencies_ms=result.latencies_ms,
            capture_to_output_ms=max(0.0, (now_wall_ns - meta.t_wall_ns) / 1e6) if now_wall_ns else 0.0,
        )

    @classmethod
    def from_message(cls, msg: LabelMessage) -> OutputFrame:
        """A decoded label message from the ZeroMQ stream (its image is the preview, if sent)."""
        end_to_end = 0.0
        if msg.t_publish_wall_ns and msg.t_capture_wall_ns:
            end_to_end = (msg.t_publish_wall_ns - msg.t_capture_wall_ns) / 1e6
        return cls(
            camera_id=msg.camera_id or "camera", stamp_ns=msg.stamp_ns or msg.t_receive_wall_ns,
            seq=msg.frame_seq, frame_index=msg.frame_index, labels=np.asarray(msg.labels),
            instances=None if msg.instances is None else np.asarray(msg.instances), tracks=tuple(msg.tracks),
            image=msg.preview, latencies_ms=msg.latencies_ms, capture_to_output_ms=end_to_end,
        )


def tracks_of(tracks: Sequence[Track], instances: Sequence[Instance]) -> tuple[TrackRecord, ...]:
    """The tracker's report as :class:`TrackRecord` (what the wire carries): each with its mask's area
    and centroid when it was matched this frame (``instances[k].index == k + 1``), else its box centre."""
    out = []
    for t in tracks:
        x0, y0, x1, y1 = (float(v) for v in t.box)
        k = t.instance_index - 1
        det = instances[k] if 0 <= k < len(instances) else None
        out.append(TrackRecord(
            track_id=t.track_id, instance_index=t.instance_index, class_id=t.class_id, score=float(t.score),
            box=(x0, y0, x1, y1), area=det.area if det is not None else 0,
            centroid=det.centroid if det is not None else ((x0 + x1) / 2, (y0 + y1) / 2),
            velocity=(float(t.velocity[0]), float(t.velocity[1])), age=t.age, hits=t.hits, state=t.state,
        ))
    return tuple(out)


def camera_topic(prefix: str, camera_id: str, leaf: str) -> str:
    """``/perception`` + ``cam0`` + ``labels`` -> ``/perception/cam0/labels`` (``/cam/x`` keeps its slashes)."""
    cam = camera_id.strip("/") or "camera"
    return f"{prefix.rstrip('/')}/{cam}/{leaf}"


_ROS_TOKEN = re.compile(r"[^A-Za-z0-9_]")


def ros_name(name: str) -> str:
    """``name`` made a valid ROS 2 topic name: each ``/``-separated token only letters, digits and
    ``_``, not starting with a digit, no empty tokens (``/front-cam/2`` -> ``/front_cam/_2``)."""
    tokens = [_ROS_TOKEN.sub("_", t) for t in name.split("/") if t]
    return "/" + "/".join(f"_{t}" if t[0].isdigit() else t for t in tokens)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def indexed_png(ids: np.ndarray, palette_rgb: bytes) -> bytes:
    """An 8-bit *indexed-colour* PNG of ``ids`` (``uint8[H, W]``) with ``palette_rgb`` as its colours.

    The pixels stay the ids (a reader that keeps the palette index, e.g. Pillow's mode ``P``, gets the
    class ids back exactly); every image viewer, Foxglove's Image panel included, shows the palette's
    colours. It costs one greyscale PNG encode: OpenCV writes the greyscale PNG, whose image data is
    byte for byte that of an 8-bit indexed one, and the header's colour type is switched to 3 with a
    PLTE chunk added.

    Args:
        ids: ``uint8[H, W]``.
        palette_rgb: 768 bytes, RGB of index 0..255.
    """
    if len(palette_rgb) != 768:
        raise ValueError(f"an indexed PNG palette is 256 RGB entries (768 bytes), got {len(palette_rgb)}")
    ok, buf = cv2.imencode(".png", ids, list(PNG_PARAMS))
    if not ok:
        raise DataError(f"PNG encoding of a {ids.shape[1]}x{ids.shape[0]} label map failed")
    png = buf.tobytes()
    # signature (8) + IHDR chunk (4 length + 4 type + 13 data + 4 crc); colour type is data byte 9
    ihdr = png[16:29]
    if png[12:16] != b"IHDR" or ihdr[8] != 8 or ihdr[9] != 0:
        raise DataError("OpenCV wrote an unexpected PNG header for an 8-bit greyscale image")
    header = ihdr[:9] + b"\x03" + ihdr[10:]
    return png[:8] + _chunk(b"IHDR", header) + _chunk(b"PLTE", palette_rgb) + png[33:]


def palette_rgb(lut_bgr: np.ndarray) -> bytes:
    """``uint8[256, 3]`` BGR lookup table (:mod:`perception.viz`) -> the 768 RGB bytes of a PNG palette."""
    return np.ascontiguousarray(lut_bgr[:, ::-1]).tobytes()


_WRAP = np.concatenate([[0], np.arange(65535) % 255 + 1]).astype(np.uint8)
"""uint16 id -> uint8: 0 stays 0, 1..65535 wrap into 1..255 (a 64 KiB lookup table)."""


def wrap_ids(instances: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``uint16`` instance ids -> ``uint8`` 1..255 (wrapping every 255), 0 kept: for an indexed PNG.

    One table lookup per pixel; ``instances`` is not modified; ``out`` (``uint8``, same shape) is
    reused when given.
    """
    return np.take(_WRAP, instances, out=out)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise DataError(f"JPEG encoding of a {image.shape[1]}x{image.shape[0]} image failed")
    return buf.tobytes()
