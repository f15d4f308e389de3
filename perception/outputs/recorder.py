"""Record the pipeline's published outputs to an MCAP file that Foxglove opens as is.

One set of channels per camera (``PREFIX/<camera_id>/...``; a camera id that is a ROS topic such as
``/cam/image`` keeps its slashes):

============================  =============================  =========================================
topic                         schema (JSON encoding)         content
============================  =============================  =========================================
``.../labels``                ``foxglove.CompressedImage``   label map, colourised with the class table, PNG
``.../instances``             ``foxglove.CompressedImage``   instance map, one colour per instance id, PNG
``.../annotations``           ``foxglove.ImageAnnotations``  track boxes and "#id class" texts (overlay)
``.../tracks``                ``perception.Tracks``          ids, classes, scores, boxes, velocities
``.../latency``               ``perception.Latency``         per-stage latencies (ms), capture→publish
``.../input``                 ``foxglove.CompressedImage``   the JPEG preview frame (``with_input``)
``PREFIX/classes``            ``perception.Classes``         the class table (once, when known)
============================  =============================  =========================================

Every message's log and publish time is the input frame's stamp (``LabelMessage.stamp_ns``: for a
replayed drive the recorded header stamp, else the capture time), so a recording lines up with the drive
it came from.
Bytes fields are base64 in JSON, as Foxglove expects.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from perception.errors import DataError, TransportError
from perception.transport.wire import LabelMessage
from perception.types import ClassInfo
from perception.viz import colorize, generated_palette, palette

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/perception"
"""Topic prefix of every recorded channel."""

PNG_COMPRESSION = 1
"""zlib level of the PNG label/instance images (0-9): colourised label maps are large flat regions,
so level 1 is already small; higher levels cost several times the CPU for a few per cent of size."""

PREVIEW_JPEG_QUALITY = 90
"""JPEG quality of re-encoded preview frames (the wire's JPEG is decoded by the subscriber)."""

_SCHEMAS: dict[str, dict[str, Any]] = {
    "foxglove.CompressedImage": {
        "title": "foxglove.CompressedImage", "type": "object",
        "properties": {
            "timestamp": {"type": "object", "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}}},
            "frame_id": {"type": "string"},
            "data": {"type": "string", "contentEncoding": "base64"},
            "format": {"type": "string"},
        },
    },
    "foxglove.ImageAnnotations": {
        "title": "foxglove.ImageAnnotations", "type": "object",
        "properties": {"circles": {"type": "array"}, "points": {"type": "array"}, "texts": {"type": "array"}},
    },
    "perception.Tracks": {
        "title": "perception.Tracks", "type": "object",
        "properties": {
            "timestamp": {"type": "object"}, "camera_id": {"type": "string"}, "frame_seq": {"type": "integer"},
            "frame_index": {"type": "integer"},
            "tracks": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "integer"}, "class_id": {"type": "integer"}, "class_name": {"type": "string"},
                "score": {"type": "number"},
                "box": {"type": "object", "description": "x0, y0, x1, y1 full-resolution pixels, x1/y1 exclusive"},
                "velocity": {"type": "object", "description": "vx, vy in pixels per second"},
                "state": {"type": "string"}, "age": {"type": "integer"}, "hits": {"type": "integer"},
                "area": {"type": "integer"}, "instance_index": {"type": "integer"},
            }}},
        },
    },
    "perception.Latency": {
        "title": "perception.Latency", "type": "object",
        "properties": {"timestamp": {"type": "object"}, "camera_id": {"type": "string"},
                       "stages_ms": {"type": "object", "additionalProperties": {"type": "number"}},
                       "capture_to_publish_ms": {"type": "number"}},
    },
    "perception.Classes": {
        "title": "perception.Classes", "type": "object",
        "properties": {"classes": {"type": "array"}},
    },
}

_STATE_NAMES = {0: "tentative", 1: "confirmed", 2: "lost", 3: "removed"}
_LINE_LOOP = 2  # foxglove.PointsAnnotationType.LINE_LOOP


def _time(ns: int) -> dict[str, int]:
    sec, nsec = divmod(int(ns), 1_000_000_000)
    return {"sec": sec, "nsec": nsec}


def camera_topic(prefix: str, camera_id: str, leaf: str) -> str:
    """``/perception`` + ``cam0`` + ``labels`` -> ``/perception/cam0/labels`` (``/cam/x`` keeps its slashes)."""
    cam = camera_id.strip("/") or "camera"
    return f"{prefix.rstrip('/')}/{cam}/{leaf}"


def instance_colors(instances: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Instance map -> colour image, one colour per id (ids wrap every 255), 0 black.

    Args:
        instances: ``uint16[H, W]`` instance ids.
        lut: ``uint8[256, 3]`` BGR; entry 0 is used for id 0.

    Returns:
        A new ``uint8[H, W, 3]`` BGR image; ``instances`` is not modified.
    """
    ids = np.where(instances == 0, 0, (instances.astype(np.int32) - 1) % 255 + 1).astype(np.uint8)
    return lut[ids]


@dataclass(slots=True)
class RecordStats:
    frames: int = 0
    bytes_written: int = 0
    cameras: int = 0


class McapRecorder:
    """Writes decoded label messages to an MCAP file (see the module docstring for the channels).

    Args:
        path: the output ``.mcap`` file (created or overwritten).
        with_input: also record the JPEG preview frame as ``.../input`` when a message carries one.
        prefix: topic prefix of every channel.
        compression: MCAP chunk compression: ``"zstd"``, ``"lz4"`` or ``"none"``.

    Use as a context manager, or call :meth:`close`; the file is valid (has its summary and index)
    only after closing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        with_input: bool = False,
        prefix: str = DEFAULT_PREFIX,
        compression: str = "zstd",
    ) -> None:
        from mcap.writer import CompressionType, Writer

        kinds = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
        if compression not in kinds:
            raise DataError(f"unknown MCAP compression {compression!r}; allowed: {', '.join(kinds)}")
        self.path = Path(path)
        self.with_input = bool(with_input)
        self.prefix = prefix
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("wb")
        except OSError as exc:
            raise DataError(f"cannot create recording {self.path}: {exc}") from exc
        self._writer = Writer(self._file, compression=kinds[compression])
        self._writer.start(profile="", library="perception")
        self._schema_ids: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._label_lut = generated_palette(0)
        self._instance_lut = generated_palette(7)
        self._instance_lut[0] = (0, 0, 0)
        self._classes: tuple[ClassInfo, ...] = ()
        self._class_names: dict[int, str] = {}
        self._cameras: set[str] = set()
        self._png = [int(cv2.IMWRITE_PNG_COMPRESSION), PNG_COMPRESSION]
        self._jpeg = [int(cv2.IMWRITE_JPEG_QUALITY), PREVIEW_JPEG_QUALITY]
        self._color_buf: np.ndarray | None = None
        self.stats = RecordStats()
        self._warned_no_preview = False
        self._closed = False

    # ------------------------------------------------------------------ channels
    def _channel(self, topic: str, schema: str) -> int:
        cid = self._channels.get(topic)
        if cid is None:
            sid = self._schema_ids.get(schema)
            if sid is None:
                sid = self._schema_ids[schema] = self._writer.register_schema(
                    name=schema, encoding="jsonschema", data=json.dumps(_SCHEMAS[schema]).encode()
                )
            cid = self._channels[topic] = self._writer.register_channel(topic=topic, message_encoding="json",
                                                                          schema_id=sid)
        return cid

    def _put(self, topic: str, schema: str, t_ns: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self._writer.add_message(self._channel(topic, schema), log_time=t_ns, publish_time=t_ns, data=data)
        self.stats.bytes_written += len(data)

    def _put_image(self, topic: str, t_ns: int, frame_id: str, fmt: str, encoded: np.ndarray | bytes) -> None:
        self._put(topic, "foxglove.CompressedImage", t_ns, {
            "timestamp": _time(t_ns), "frame_id": frame_id, "format": fmt,
            "data": base64.b64encode(encoded).decode("ascii"),
        })

    def _encode(self, ext: str, image: np.ndarray, params: list[int]) -> np.ndarray:
        ok, buf = cv2.imencode(ext, image, params)
        if not ok:
            raise DataError(f"{ext} encoding of a {image.shape[1]}x{image.shape[0]} image failed")
        return buf

    # ------------------------------------------------------------------ public
    def set_classes(self, classes: Sequence[ClassInfo] | None) -> None:
        """Use this class table for colours and names from now on (written once to ``PREFIX/classes``)."""
        if not classes or tuple(classes) == self._classes:
            return
        self._classes = tuple(classes)
        self._label_lut = palette(self._classes)
        self._class_names = {c.id: c.name for c in self._classes}
        self._put(f"{self.prefix.rstrip('/')}/classes", "perception.Classes", time.time_ns(), {
            "classes": [{"id": c.id, "name": c.name, "rgb": list(c.color), "thing": c.is_thing} for c in self._classes]
        })

    def write(self, msg: LabelMessage, classes: Sequence[ClassInfo] | None = None) -> None:
        """Record one label message (colourised maps, tracks, annotations, latencies, preview).

        Raises:
            DataError: the recorder is closed, or an image could not be encoded.
        """
        if self._closed:
            raise DataError(f"recording {self.path} is closed")
        self.set_classes(classes)
        t_ns = msg.stamp_ns or msg.t_receive_wall_ns or time.time_ns()
        cam = msg.camera_id or "camera"
        self._cameras.add(cam)
        self.stats.cameras = len(self._cameras)

        labels = np.asarray(msg.labels)
        if self._color_buf is None or self._color_buf.shape[:2] != labels.shape:
            self._color_buf = np.empty((*labels.shape, 3), np.uint8)
        colored = colorize(labels, self._label_lut, out=self._color_buf)
        png = self._encode(".png", colored, self._png)
        self._put_image(camera_topic(self.prefix, cam, "labels"), t_ns, cam, "png", png)
        if msg.instances is not None:
            inst = instance_colors(np.asarray(msg.instances), self._instance_lut)
            self._put_image(camera_topic(self.prefix, cam, "instances"), t_ns, cam, "png",
                            self._encode(".png", inst, self._png))
        if self.with_input and msg.preview is None and not self._warned_no_preview:
            self._warned_no_preview = True
            log.warning("--with-input: the publisher sends no preview frames (set publish.preview: jpeg); "
                        "recording without the input topic")
        if self.with_input and msg.preview is not None:
            self._put_image(camera_topic(self.prefix, cam, "input"), t_ns, cam, "jpeg",
                            self._encode(".jpg", msg.preview, self._jpeg))

        tracks = []
        points = []
        texts = []
        for t in msg.tracks:
            x0, y0, x1, y1 = (float(v) for v in t.box)
            name = self._class_names.get(t.class_id, str(t.class_id))
            tracks.append({
                "id": t.track_id, "class_id": t.class_id, "class_name": name, "score": t.score,
                "box": {"x0": x0, "y0": y0, "x1": x1, "y1": y1},
                "velocity": {"vx": t.velocity[0], "vy": t.velocity[1]},
                "state": _STATE_NAMES.get(int(t.state), str(int(t.state))), "age": t.age, "hits": t.hits,
                "area": t.area, "instance_index": t.instance_index,
            })
            b, g, r = (int(v) for v in self._label_lut[t.class_id % 256])
            color = {"r": r / 255, "g": g / 255, "b": b / 255, "a": 1.0}
            points.append({
                "timestamp": _time(t_ns), "type": _LINE_LOOP, "thickness": 2.0, "outline_color": color,
                "outline_colors": [], "fill_color": {"r": 0, "g": 0, "b": 0, "a": 0},
                "points": [{"x": x0, "y": y0}, {"x": x1, "y": y0}, {"x": x1, "y": y1}, {"x": x0, "y": y1}],
            })
            texts.append({
                "timestamp": _time(t_ns), "position": {"x": x0, "y": max(0.0, y0 - 2)}, "text": f"#{t.track_id} {name}",
                "font_size": 12.0, "text_color": {"r": 1, "g": 1, "b": 1, "a": 1},
                "background_color": {**color, "a": 0.7},
            })
        self._put(camera_topic(self.prefix, cam, "tracks"), "perception.Tracks", t_ns, {
            "timestamp": _time(t_ns), "camera_id": cam, "frame_seq": msg.frame_seq, "frame_index": msg.frame_index,
            "tracks": tracks,
        })
        self._put(camera_topic(self.prefix, cam, "annotations"), "foxglove.ImageAnnotations", t_ns,
                  {"circles": [], "points": points, "texts": texts})
        end_to_end = 0.0
        if msg.t_publish_wall_ns and msg.t_capture_wall_ns:
            end_to_end = (msg.t_publish_wall_ns - msg.t_capture_wall_ns) / 1e6
        self._put(camera_topic(self.prefix, cam, "latency"), "perception.Latency", t_ns, {
            "timestamp": _time(t_ns), "camera_id": cam, "stages_ms": dict(msg.latencies_ms),
            "capture_to_publish_ms": end_to_end,
        })
        self.stats.frames += 1

    def close(self) -> None:
        """Write the summary and index and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.finish()
        finally:
            self._file.close()

    def __enter__(self) -> McapRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record(
    *,
    subscriber: Any,
    recorder: McapRecorder | None,
    max_frames: int | None = None,
    idle_timeout_s: float | None = None,
    progress: bool = True,
    sinks: Sequence[Any] = (),
) -> RecordStats:
    """Receive label messages from ``subscriber`` and write each to ``recorder`` and every sink.

    Args:
        subscriber: a :class:`~perception.transport.subscriber.Subscriber` (``recv(timeout_s)``, ``classes``).
        recorder: where to write (None: only the sinks, e.g. a live viewer).
        max_frames: stop after this many messages (None: until the stream ends, the idle timeout or
            Ctrl-C).
        idle_timeout_s: stop when no message arrives for this long (None: wait forever).
        progress: show a tqdm bar on stderr (frames, frames/s, and an ETA when ``max_frames`` is given).
        sinks: objects with ``log(msg, classes)`` (e.g. :class:`perception.outputs.rerun.RerunSink`).

    Returns:
        The recorder's stats (frames written), or a fresh count when there is no recorder.
    """
    stats = recorder.stats if recorder is not None else RecordStats()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max_frames, unit="frame", desc="recorded", dynamic_ncols=True, mininterval=0.5)
    poll_s = 0.25
    last_msg = time.monotonic()
    try:
        while max_frames is None or stats.frames < max_frames:
            try:
                msg = subscriber.recv(timeout_s=poll_s)
            except TransportError as exc:
                log.warning("skipping a malformed message: %s", exc)
                continue
            if msg is None:
                if subscriber.end is not None:  # the publisher's end-of-stream message arrived
                    log.info("stream ended (%s) after seq %d", subscriber.end.reason, subscriber.end.last_seq)
                    break
                if idle_timeout_s is not None and time.monotonic() - last_msg >= idle_timeout_s:
                    break
                continue
            last_msg = time.monotonic()
            classes = subscriber.classes
            if recorder is not None:
                recorder.write(msg, classes)
            else:
                stats.frames += 1
            for sink in sinks:
                sink.log(msg, classes)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return stats
