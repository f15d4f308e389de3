"""ROS 2 bags out: the pipeline's outputs as a rosbag2 (MCAP storage) that ``ros2 bag play`` replays.

Written with ``rosbags``' rosbag2 writer (its ``metadata.yaml``, MCAP storage with ``ros2msg`` schemas
and CDR messages, zstd chunks), no ROS installation needed. Per camera (``/perception/<camera>/...``,
made a valid ROS name by :func:`~perception.outputs.frames.ros_name`):

==================  ====================================  ==============================================
topic               type                                  content
==================  ====================================  ==============================================
``.../input``       ``sensor_msgs/msg/Image`` (bgr8)      the input frame (``perception record``: the preview)
``.../labels``      ``sensor_msgs/msg/Image`` (mono8)     class id per pixel
``.../instances``   ``sensor_msgs/msg/Image`` (mono16)    instance id per pixel (0 = none)
``.../detections``  ``vision_msgs/msg/Detection2DArray``  one ``Detection2D`` per track: ``id`` = the
                                                          track id, ``results[0].hypothesis`` = class id
                                                          (as text, as vision_msgs asks) and score, ``bbox``
                                                          = centre and size in pixels
``.../camera_info`` ``sensor_msgs/msg/CameraInfo``        when ``output.calibration`` names the camera
``/perception/label_info`` ``vision_msgs/msg/LabelInfo``  the class table (id -> name), transient-local QoS
==================  ====================================  ==============================================

Every header stamp and every bag timestamp is the frame's stamp: a recorded drive's own stamp when it
has one, else the capture wall time; ``header.frame_id`` is the camera id. vision_msgs is ROS 2's
standard for 2D detections (Humble and later, ``ros-<distro>-vision-msgs``); its definitions are written
into the bag, so readers without the package (rosbags, Foxglove) decode it too.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perception.config import CameraCalibrationConfig
from perception.errors import ConfigError, DataError
from perception.outputs.base import Ending, RunContext, SinkConfig
from perception.outputs.frames import DEFAULT_PREFIX, OutputFrame, camera_topic, ros_name
from perception.types import ClassInfo, FrameResult

log = logging.getLogger(__name__)

VISION_MSGS = {
    # vision_msgs 4.x (ROS 2 Humble and later), the definitions ros2 installs
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    "vision_msgs/msg/VisionClass": "uint16 class_id\nstring class_name\n",
    "vision_msgs/msg/LabelInfo": "std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n",
}

IMAGE = "sensor_msgs/msg/Image"
DETECTIONS = "vision_msgs/msg/Detection2DArray"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
LABEL_INFO = "vision_msgs/msg/LabelInfo"


def typestore() -> Any:
    """rosbags' ROS 2 Humble type store with vision_msgs added."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def bag_folder(path: str | Path) -> Path:
    """Where a bag for ``path`` goes: ``out/run.mcap`` -> the folder ``out/run``; a folder name as is."""
    p = Path(path)
    return p.with_suffix("") if p.suffix.lower() == ".mcap" else p


def refuse_existing_bag(folder: Path, *, overwrite: bool, what: str) -> None:
    """ConfigError when ``folder`` exists, unless ``overwrite`` and it is a bag (holds metadata.yaml)."""
    if not folder.exists():
        return
    if not overwrite:
        raise ConfigError(f"{what}: {folder} exists; pass --force to overwrite it (or choose another name)")
    if not (folder / "metadata.yaml").is_file():
        raise ConfigError(f"{what}: {folder} exists and is not a ROS 2 bag; refusing to replace it")


def _latched_qos() -> list:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(sec=0, nsec=0)
    return [Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                durability=QosDurability.TRANSIENT_LOCAL, deadline=zero, lifespan=zero,
                liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
                avoid_ros_namespace_conventions=False)]


@dataclass(slots=True)
class _Camera:
    frame_id: str
    image: Any
    labels: Any
    instances: Any
    detections: Any
    camera_info: Any | None


class Ros2BagWriter:
    """Writes :class:`OutputFrame` s to a ROS 2 bag (see the module docstring for the topics).

    Args:
        path: the bag folder (``out/run.mcap`` becomes ``out/run``: :func:`bag_folder`).
        with_image: also write the input frame as ``.../input``.
        overwrite: replace an existing bag folder (only one that holds a ``metadata.yaml``).
        calibrations: camera id -> calibration, written as ``.../camera_info`` with every frame.

    The bag is complete (``metadata.yaml`` written) only after :meth:`close`.
    """

    def __init__(self, path: str | Path, *, with_image: bool = True, overwrite: bool = False,
                 calibrations: Mapping[str, CameraCalibrationConfig] | None = None,
                 prefix: str = DEFAULT_PREFIX) -> None:
        try:
            from rosbags.rosbag2 import StoragePlugin, Writer
            from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
        except ImportError as exc:
            raise ConfigError(f"ROS 2 bags need rosbags: pip install 'perception[drives]' ({exc})") from exc
        self.path = bag_folder(path)
        refuse_existing_bag(self.path, overwrite=overwrite, what="recording")
        if self.path.exists():
            shutil.rmtree(self.path)
        self.prefix = prefix
        self.with_image = with_image
        self.calibrations = dict(calibrations or {})
        self.ts = typestore()
        self._t = self.ts.types
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer.open()
        except Exception as exc:  # rosbags' WriterError, OSError
            raise DataError(f"cannot create the ROS 2 bag {self.path}: {exc}") from exc
        self._cameras: dict[str, _Camera] = {}
        self._label_info = self._writer.add_connection(ros_name(f"{prefix}/label_info"), LABEL_INFO,
                                                       typestore=self.ts, offered_qos_profiles=_latched_qos())
        self._classes: tuple[ClassInfo, ...] = ()
        self._classes_due = False
        self.frames = 0
        self._closed = False

    def _camera(self, camera_id: str) -> _Camera:
        cam = self._cameras.get(camera_id)
        if cam is None:
            def conn(leaf: str, msgtype: str) -> Any:
                topic = ros_name(camera_topic(self.prefix, camera_id, leaf))
                return self._writer.add_connection(topic, msgtype, typestore=self.ts)

            cam = self._cameras[camera_id] = _Camera(
                frame_id=camera_id.strip("/") or "camera",
                image=conn("input", IMAGE) if self.with_image else None,
                labels=conn("labels", IMAGE), instances=conn("instances", IMAGE),
                detections=conn("detections", DETECTIONS),
                camera_info=conn("camera_info", CAMERA_INFO) if camera_id in self.calibrations else None,
            )
        return cam

    def set_classes(self, classes: Sequence[ClassInfo] | None) -> None:
        """Use this class table from now on; written to ``label_info`` with the next frame."""
        if classes and tuple(classes) != self._classes:
            self._classes = tuple(classes)
            self._classes_due = True

    def write(self, frame: OutputFrame) -> None:
        """Write one frame's messages. Raises DataError when the bag is closed."""
        if self._closed:
            raise DataError(f"ROS 2 bag {self.path} is closed")
        cam = self._camera(frame.camera_id)
        t = frame.stamp_ns
        header = self._header(t, cam.frame_id)
        if self._classes_due:
            self._classes_due = False
            self._put(self._label_info, t, LABEL_INFO, self._t[LABEL_INFO](
                header=header, threshold=0.0,
                class_map=[self._t["vision_msgs/msg/VisionClass"](class_id=c.id, class_name=c.name)
                           for c in self._classes]))
        if cam.image is not None and frame.image is not None:
            self._put(cam.image, t, IMAGE, self._image(header, frame.image, "bgr8"))
        self._put(cam.labels, t, IMAGE, self._image(header, frame.labels, "mono8"))
        if frame.instances is not None:
            self._put(cam.instances, t, IMAGE, self._image(header, frame.instances, "mono16"))
        self._put(cam.detections, t, DETECTIONS, self._detections(header, frame))
        if cam.camera_info is not None:
            self._put(cam.camera_info, t, CAMERA_INFO, self._camera_info(header, frame))
        self.frames += 1

    def close(self) -> None:
        """Finish the MCAP file and write ``metadata.yaml``. Idempotent."""
        if not self._closed:
            self._closed = True
            self._writer.close()

    # ------------------------------------------------------------------ messages
    def _put(self, connection: Any, t_ns: int, msgtype: str, msg: Any) -> None:
        self._writer.write(connection, t_ns, self.ts.serialize_cdr(msg, msgtype))

    def _header(self, t_ns: int, frame_id: str) -> Any:
        sec, nsec = divmod(int(t_ns), 1_000_000_000)
        return self._t["std_msgs/msg/Header"](stamp=self._t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                              frame_id=frame_id)

    def _image(self, header: Any, array: np.ndarray, encoding: str) -> Any:
        h, w = array.shape[:2]
        data = np.ascontiguousarray(array)
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        return self._t[IMAGE](header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                              step=data.strides[0], data=data.reshape(-1).view(np.uint8))

    def _detections(self, header: Any, frame: OutputFrame) -> Any:
        t = self._t
        pose = t["geometry_msgs/msg/PoseWithCovariance"](
            pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                             orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(36, np.float64))
        detections = []
        for tr in frame.tracks:
            x0, y0, x1, y1 = tr.box
            hypothesis = t["vision_msgs/msg/ObjectHypothesisWithPose"](
                hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=str(tr.class_id), score=float(tr.score)),
                pose=pose)
            bbox = t["vision_msgs/msg/BoundingBox2D"](
                center=t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=(x0 + x1) / 2,
                                                                                          y=(y0 + y1) / 2),
                                                   theta=0.0),
                size_x=x1 - x0, size_y=y1 - y0)
            detections.append(t["vision_msgs/msg/Detection2D"](header=header, results=[hypothesis], bbox=bbox,
                                                               id=str(tr.track_id)))
        return t[DETECTIONS](header=header, detections=detections)

    def _camera_info(self, header: Any, frame: OutputFrame) -> Any:
        c = self.calibrations[frame.camera_id]
        t = self._t
        return t[CAMERA_INFO](
            header=header, height=c.height or frame.height, width=c.width or frame.width,
            distortion_model=c.distortion_model, d=np.asarray(c.D, np.float64), k=np.asarray(c.K, np.float64),
            r=np.asarray(c.R, np.float64), p=np.asarray(c.projection(), np.float64), binning_x=0, binning_y=0,
            roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


class Ros2BagSink:
    """The pipeline sink (``perception run --record out/run --format ros2``)."""

    name = "ros2bag"

    def __init__(self, *, path: Path, with_image: bool, overwrite: bool,
                 calibrations: Mapping[str, CameraCalibrationConfig]) -> None:
        self.path = path
        self._args = {"with_image": with_image, "overwrite": overwrite, "calibrations": calibrations}
        self.writer: Ros2BagWriter | None = None
        self.frames = 0
        self.write_s = 0.0

    def open(self, run: RunContext) -> None:
        self.writer = Ros2BagWriter(self.path, **self._args)
        self.writer.set_classes(run.classes)

    def write(self, result: FrameResult) -> bool:
        t0 = time.perf_counter()
        self.writer.write(OutputFrame.from_result(result, now_wall_ns=time.time_ns()))
        self.write_s += time.perf_counter() - t0
        self.frames += 1
        return True

    def close(self, *, reason: Ending = "end") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            if self.frames:
                log.info("ros2 bag: %d frames, %.2f ms per frame, written to %s", self.frames,
                         self.write_s / self.frames * 1e3, self.path)


def make_sink(config: SinkConfig) -> Ros2BagSink | None:
    out = config.output
    if not out.record or out.record_format != "ros2":
        return None
    folder = bag_folder(out.record)
    refuse_existing_bag(folder, overwrite=out.overwrite, what="output.record")  # before any process starts
    return Ros2BagSink(path=folder, with_image=out.record_image, overwrite=out.overwrite,
                       calibrations=out.calibration)
