"""One frame's outputs as Foxglove messages, logged through the Foxglove SDK (``foxglove-sdk``).

The SDK owns the schemas (Foxglove's protobuf definitions), the encoding and every sink that a
``foxglove.Context`` feeds: an MCAP file (:mod:`.foxglove_sink`, ``perception record``), the live
WebSocket server, or both at once from one encoding. This module only maps an :class:`OutputFrame` to
messages. Channels per camera (``PREFIX/<camera_id>/...``; a camera id that is a topic keeps its slashes):

==================  ===================================  ===========================================
topic               schema (protobuf)                    content
==================  ===================================  ===========================================
``.../input``       ``foxglove.CompressedImage`` (JPEG)   the input frame (the preview, from a stream)
``.../labels``      ``foxglove.CompressedImage`` (PNG)    label map: an indexed-colour PNG, pixels = class
                                                         ids, palette = class colours
``.../instances``   ``foxglove.CompressedImage`` (PNG)    instance map, indexed colour, one colour per id
``.../annotations`` ``foxglove.ImageAnnotations``         track boxes and ``#id class`` texts
``.../tracks``      ``perception.Tracks``                 ids, classes, scores, boxes, velocities, states
``.../latency``     ``perception.Latency``                per-stage latencies (ms), capture to output
``.../calibration`` ``foxglove.CameraCalibration``        when ``output.calibration`` names the camera
``PREFIX/classes``  ``perception.Classes``                the class table (ids, names, colours)
==================  ===================================  ===========================================

Every message is stamped (its ``timestamp`` and its log time) with the frame's stamp: a recorded
drive's own stamp when it has one, else the capture wall time. ``perception.*`` are declared in
:mod:`.proto`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.config import CameraCalibrationConfig
from perception.outputs import proto
from perception.outputs.frames import (
    DEFAULT_PREFIX,
    STATE_NAMES,
    OutputFrame,
    camera_topic,
    encode_jpeg,
    indexed_png,
    palette_rgb,
    wrap_ids,
)
from perception.types import ClassInfo
from perception.viz import generated_palette, palette

FRAME_JPEG_QUALITY = 85
"""JPEG quality of the recorded frame: the frame is most of a recording's size (about 60 % of it at
85 for the dash-cam clip); 85 keeps lane marks and edges clean, 95 doubles the size for no visible gain."""

BOX_THICKNESS = 2.0
"""Line width (px) of a matched track's box; a coasting track (no mask this frame) is drawn at half."""

TEXT_SIZE = 14.0
"""Font size (px) of the ``#id class`` label above each box."""


@dataclass(slots=True)
class _CameraChannels:
    image: Any
    labels: Any
    instances: Any
    annotations: Any
    tracks: Any
    latency: Any
    calibration: Any | None
    frame_id: str


class FoxgloveLogger:
    """Logs :class:`OutputFrame` s on typed channels of one ``foxglove.Context``.

    Args:
        context: the SDK context whose sinks (MCAP writer, WebSocket server) receive the messages.
        prefix: topic prefix of every channel.
        with_image: log the input frame on ``.../input`` (when the frame carries one).
        calibrations: camera id -> calibration, logged as ``.../calibration`` with every frame.
        jpeg_quality: JPEG quality of ``.../input``.

    A channel nobody listens to (``has_sinks()`` false: a live server without a subscriber) costs no
    encoding. Not thread-safe: one logger per writing thread.
    """

    def __init__(self, *, context: Any, prefix: str = DEFAULT_PREFIX, with_image: bool = True,
                 calibrations: Mapping[str, CameraCalibrationConfig] | None = None,
                 jpeg_quality: int = FRAME_JPEG_QUALITY) -> None:
        import foxglove

        self._fox = foxglove
        self.context = context
        self.prefix = prefix
        self.with_image = with_image
        self.calibrations = dict(calibrations or {})
        self.jpeg_quality = int(jpeg_quality)
        self._cameras: dict[str, _CameraChannels] = {}
        self._classes_channel = self._proto_channel(f"{prefix.rstrip('/')}/classes", "Classes")
        self._classes: tuple[ClassInfo, ...] = ()
        self._names: dict[int, str] = {}
        self._colors: np.ndarray = np.ones((256, 4), np.float32)
        self._label_palette = palette_rgb(generated_palette(0))
        lut = generated_palette(7)
        lut[0] = (0, 0, 0)
        self._instance_palette = palette_rgb(lut)
        self._ids8: np.ndarray | None = None
        self._classes_due = False

    # ------------------------------------------------------------------ channels
    def _proto_channel(self, topic: str, message: str) -> Any:
        schema = self._fox.Schema(name=f"{proto.PACKAGE}.{message}", encoding="protobuf", data=proto.schema_data())
        return self._fox.Channel(topic, schema=schema, message_encoding="protobuf", context=self.context)

    def _camera(self, camera_id: str) -> _CameraChannels:
        cam = self._cameras.get(camera_id)
        if cam is None:
            from foxglove import channels as ch

            def topic(leaf: str) -> str:
                return camera_topic(self.prefix, camera_id, leaf)

            ctx = self.context
            cam = self._cameras[camera_id] = _CameraChannels(
                image=ch.CompressedImageChannel(topic("input"), context=ctx),
                labels=ch.CompressedImageChannel(topic("labels"), context=ctx),
                instances=ch.CompressedImageChannel(topic("instances"), context=ctx),
                annotations=ch.ImageAnnotationsChannel(topic("annotations"), context=ctx),
                tracks=self._proto_channel(topic("tracks"), "Tracks"),
                latency=self._proto_channel(topic("latency"), "Latency"),
                calibration=(ch.CameraCalibrationChannel(topic("calibration"), context=ctx)
                             if camera_id in self.calibrations else None),
                frame_id=camera_id.strip("/") or "camera",
            )
        return cam

    # ------------------------------------------------------------------ public
    def set_classes(self, classes: Sequence[ClassInfo] | None) -> None:
        """Use this class table for colours and names from now on; it is logged with the next frame."""
        if not classes or tuple(classes) == self._classes:
            return
        self._classes = tuple(classes)
        self._names = {c.id: c.name for c in self._classes}
        lut = palette(self._classes)
        self._label_palette = palette_rgb(lut)
        self._colors = np.concatenate([lut[:, ::-1].astype(np.float32) / 255.0, np.ones((256, 1), np.float32)], 1)
        self._classes_due = True

    def resend_classes(self) -> None:
        """Log the class table again with the next frame (a live client subscribed to it)."""
        self._classes_due = bool(self._classes)

    def log(self, frame: OutputFrame) -> None:
        """Log one frame's messages on its camera's channels (created at the camera's first frame)."""
        cam = self._camera(frame.camera_id)
        t = frame.stamp_ns
        ts = self._timestamp(t)
        if self._classes_due:
            self._classes_due = False
            self._log_classes(t)
        m = self._fox.messages
        if self.with_image and frame.image is not None and cam.image.has_sinks():
            cam.image.log(m.CompressedImage(timestamp=ts, frame_id=cam.frame_id, format="jpeg",
                                            data=encode_jpeg(frame.image, self.jpeg_quality)), log_time=t)
        if cam.labels.has_sinks():
            cam.labels.log(m.CompressedImage(timestamp=ts, frame_id=cam.frame_id, format="png",
                                             data=indexed_png(frame.labels, self._label_palette)), log_time=t)
        if frame.instances is not None and cam.instances.has_sinks():
            if self._ids8 is None or self._ids8.shape != frame.instances.shape:
                self._ids8 = np.empty(frame.instances.shape, np.uint8)
            ids = wrap_ids(frame.instances, out=self._ids8)
            cam.instances.log(m.CompressedImage(timestamp=ts, frame_id=cam.frame_id, format="png",
                                                data=indexed_png(ids, self._instance_palette)), log_time=t)
        if cam.annotations.has_sinks():
            cam.annotations.log(self._annotations(frame, ts), log_time=t)
        if cam.tracks.has_sinks():
            cam.tracks.log(self._tracks(frame), log_time=t)
        if cam.latency.has_sinks():
            cam.latency.log(self._latency(frame), log_time=t)
        if cam.calibration is not None and cam.calibration.has_sinks():
            cam.calibration.log(self._calibration(frame, cam.frame_id, ts), log_time=t)

    def close(self) -> None:
        """Close every channel (a live client sees them unadvertised)."""
        for cam in self._cameras.values():
            for channel in (cam.image, cam.labels, cam.instances, cam.annotations, cam.tracks, cam.latency,
                            cam.calibration):
                if channel is not None:
                    channel.close()
        self._classes_channel.close()
        self._cameras.clear()

    # ------------------------------------------------------------------ messages
    def _timestamp(self, t_ns: int) -> Any:
        sec, nsec = divmod(int(t_ns), 1_000_000_000)
        return self._fox.messages.Timestamp(sec=sec, nsec=nsec)

    def _log_classes(self, t_ns: int) -> None:
        msg = proto.message_class("Classes")()
        for c in self._classes:
            r, g, b = c.color
            msg.classes.add(id=c.id, name=c.name, r=r, g=g, b=b, thing=c.is_thing)
        self._classes_channel.log(msg.SerializeToString(), log_time=t_ns)

    def _annotations(self, frame: OutputFrame, ts: Any) -> Any:
        m = self._fox.messages
        points, texts = [], []
        white = m.Color(r=1.0, g=1.0, b=1.0, a=1.0)
        for t in frame.tracks:
            x0, y0, x1, y1 = t.box
            r, g, b, _ = (float(v) for v in self._colors[t.class_id % 256])
            color = m.Color(r=r, g=g, b=b, a=1.0)
            points.append(m.PointsAnnotation(
                timestamp=ts, type=m.PointsAnnotationType.LineLoop, outline_color=color,
                thickness=BOX_THICKNESS if t.instance_index else BOX_THICKNESS / 2,
                points=[m.Point2(x=x0, y=y0), m.Point2(x=x1, y=y0), m.Point2(x=x1, y=y1), m.Point2(x=x0, y=y1)],
            ))
            texts.append(m.TextAnnotation(
                timestamp=ts, position=m.Point2(x=x0, y=max(0.0, y0 - 2.0)), font_size=TEXT_SIZE,
                text=f"#{t.track_id} {self._names.get(t.class_id, str(t.class_id))}", text_color=white,
                background_color=m.Color(r=r, g=g, b=b, a=0.7),
            ))
        return m.ImageAnnotations(points=points, texts=texts)

    def _tracks(self, frame: OutputFrame) -> bytes:
        msg = proto.message_class("Tracks")(camera_id=frame.camera_id, frame_seq=frame.seq,
                                            frame_index=max(0, frame.frame_index))
        msg.timestamp.FromNanoseconds(frame.stamp_ns)
        for t in frame.tracks:
            x0, y0, x1, y1 = t.box
            msg.tracks.add(
                id=t.track_id, class_id=t.class_id, class_name=self._names.get(t.class_id, str(t.class_id)),
                score=t.score, x0=x0, y0=y0, x1=x1, y1=y1, vx=t.velocity[0], vy=t.velocity[1],
                state=STATE_NAMES.get(int(t.state), str(int(t.state))), age=t.age, hits=t.hits, area=t.area,
                instance_index=t.instance_index,
            )
        return msg.SerializeToString()

    def _latency(self, frame: OutputFrame) -> bytes:
        msg = proto.message_class("Latency")(camera_id=frame.camera_id,
                                             capture_to_output_ms=frame.capture_to_output_ms)
        msg.timestamp.FromNanoseconds(frame.stamp_ns)
        for name, ms in frame.latencies_ms.items():
            msg.stages.add(name=name, ms=float(ms))
        return msg.SerializeToString()

    def _calibration(self, frame: OutputFrame, frame_id: str, ts: Any) -> Any:
        c = self.calibrations[frame.camera_id]
        return self._fox.messages.CameraCalibration(
            timestamp=ts, frame_id=frame_id, width=c.width or frame.width, height=c.height or frame.height,
            distortion_model=c.distortion_model, D=list(c.D), K=list(c.K), R=list(c.R), P=list(c.projection()),
        )
