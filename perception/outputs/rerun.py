"""Show published label messages live in Rerun (``rerun-sdk``): label map, instances with ids, tracks,
the preview frame and per-stage latencies.

``rerun-sdk`` is optional: it is imported when a sink is created, and its absence is a
:class:`~perception.errors.ConfigError` that names the package to install.

Entity layout per camera (``<cam>`` = the camera id without leading slashes):
``<cam>/image`` (preview, when the publisher sends one), ``<cam>/image/labels`` (segmentation image,
coloured and named by the class table), ``<cam>/image/instances`` (instance ids),
``<cam>/image/tracks`` (boxes labelled ``#id class``), ``latency/<cam>/<stage>`` (ms, scalars).
Time lines: ``capture`` (the frame's capture wall time) and ``frame`` (the camera's frame sequence).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perception.errors import ConfigError, TransportError
from perception.transport.wire import LabelMessage
from perception.types import ClassInfo

INSTALL_HINT = "pip install rerun-sdk"


def _import_rerun() -> Any:
    try:
        import rerun
    except ImportError as exc:
        raise ConfigError(f"the Rerun viewer needs the 'rerun-sdk' package ({INSTALL_HINT}): {exc}") from exc
    return rerun


class RerunSink:
    """Streams label messages to a Rerun viewer and/or an ``.rrd`` file.

    Args:
        app_id: Rerun application id (groups recordings in the viewer).
        spawn: start a local Rerun viewer and stream to it.
        connect: gRPC URL of a running viewer (e.g. ``rerun+http://127.0.0.1:9876/proxy``).
        save: write the stream to this ``.rrd`` file (open it later with ``rerun FILE.rrd``).

    At least one of ``spawn``, ``connect``, ``save`` must be given. Call :meth:`close` (or use a
    ``with`` block) to flush the stream.
    """

    def __init__(
        self,
        *,
        app_id: str = "perception",
        spawn: bool = False,
        connect: str | None = None,
        save: str | os.PathLike[str] | None = None,
    ) -> None:
        if not (spawn or connect or save):
            raise ConfigError("a Rerun sink needs a destination: spawn a viewer, connect to one, or save to a file")
        rr = _import_rerun()
        self._rr = rr
        self._rec = rr.RecordingStream(app_id)
        try:
            if save is not None:
                Path(save).parent.mkdir(parents=True, exist_ok=True)
                self._rec.save(str(save))
            if spawn:
                self._rec.spawn()
            elif connect:
                self._rec.connect_grpc(connect)
        except (RuntimeError, OSError, ValueError) as exc:
            raise TransportError(f"cannot start the Rerun stream: {exc}") from exc
        self._classes: tuple[ClassInfo, ...] = ()
        self._names: dict[int, str] = {}
        self._cameras: set[str] = set()
        self.logged = 0
        self._closed = False

    def _set_classes(self, classes: Sequence[ClassInfo] | None, cam: str) -> None:
        rr = self._rr
        if classes and tuple(classes) != self._classes:
            self._classes = tuple(classes)
            self._names = {c.id: c.name for c in self._classes}
            self._cameras.clear()  # re-send the context to every camera
        if cam not in self._cameras and self._classes:
            infos = [rr.AnnotationInfo(id=c.id, label=c.name, color=c.color) for c in self._classes]
            context = rr.AnnotationContext(infos)
            self._rec.log(cam, context, static=True)
            self._cameras.add(cam)

    def log(self, msg: LabelMessage, classes: Sequence[ClassInfo] | None = None) -> None:
        """Log one label message at its capture time."""
        if self._closed:
            raise TransportError("the Rerun sink is closed")
        rr = self._rr
        rec = self._rec
        cam = (msg.camera_id or "camera").strip("/") or "camera"
        self._set_classes(classes, cam)
        rec.set_time("capture", timestamp=np.datetime64(int(msg.stamp_ns), "ns"))
        rec.set_time("frame", sequence=int(msg.frame_seq))
        if msg.preview is not None:
            rec.log(f"{cam}/image", rr.Image(msg.preview, color_model="BGR"))
        rec.log(f"{cam}/image/labels", rr.SegmentationImage(np.asarray(msg.labels), opacity=0.5))
        if msg.instances is not None:
            rec.log(f"{cam}/image/instances", rr.SegmentationImage(np.asarray(msg.instances), opacity=0.0))
        if msg.tracks:
            boxes = np.array([t.box for t in msg.tracks], np.float32)
            rec.log(f"{cam}/image/tracks", rr.Boxes2D(
                array=boxes, array_format=rr.Box2DFormat.XYXY,
                class_ids=[t.class_id for t in msg.tracks],
                labels=[f"#{t.track_id} {self._names.get(t.class_id, t.class_id)}" for t in msg.tracks],
            ))
        else:
            rec.log(f"{cam}/image/tracks", rr.Clear(recursive=False))
        for stage, ms in msg.latencies_ms.items():
            rec.log(f"latency/{cam}/{stage}", rr.Scalars(float(ms)))
        self.logged += 1

    def close(self) -> None:
        """Flush and end the stream (an ``.rrd`` file is complete afterwards). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._rec.flush()
        self._rec.disconnect()

    def __enter__(self) -> RerunSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_rerun_sink(*, spawn: bool = False, connect: str | None = None, save: str | os.PathLike[str] | None = None,
                    app_id: str = "perception") -> RerunSink:
    """Create a :class:`RerunSink` (for ``perception view --rerun`` and ``perception record --rerun``)."""
    return RerunSink(app_id=app_id, spawn=spawn, connect=connect, save=save)


def add_rerun_arguments(parser: Any) -> None:
    """Add ``--rerun``, ``--rerun-connect URL`` and ``--rerun-save FILE.rrd`` to an argparse parser."""
    parser.add_argument("--rerun", action="store_true",
                        help=f"also stream live to a Rerun viewer started here (needs rerun-sdk: {INSTALL_HINT})")
    parser.add_argument("--rerun-connect", metavar="URL", default=None,
                        help="stream live to a running Rerun viewer at this gRPC URL "
                             "(e.g. rerun+http://127.0.0.1:9876/proxy; needs rerun-sdk)")
    parser.add_argument("--rerun-save", metavar="FILE.rrd", default=None,
                        help="write the Rerun stream to this .rrd file (open it with `rerun FILE.rrd`; needs "
                             "rerun-sdk)")


def rerun_sink_from_args(args: Any) -> RerunSink | None:
    """The sink the options of :func:`add_rerun_arguments` ask for, or None when none was given.

    Raises:
        ConfigError: rerun-sdk is not installed.
        TransportError: the viewer could not be started / reached, or the file not created.
    """
    spawn = bool(getattr(args, "rerun", False))
    connect = getattr(args, "rerun_connect", None)
    save = getattr(args, "rerun_save", None)
    if not (spawn or connect or save):
        return None
    return open_rerun_sink(spawn=spawn, connect=connect, save=save)
