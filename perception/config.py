"""Typed, validated configuration: YAML in, frozen objects out.

Unknown keys and bad values are :class:`ConfigError` naming the key (as a dotted path) and, where
the choice is from a set, the allowed values. This module is the only place that knows the YAML
shape; components take typed keyword arguments, mapped from these objects in the runtime.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from perception.errors import ConfigError
from perception.paths import DATA_ROOT, bundled
from perception.tracking.params import TrackerParams

DEFAULT_MODEL = DATA_ROOT / "engines" / "camvid_lite0_panoptic.onnx"
DEFAULT_CONFIG = DATA_ROOT / "configs" / "default.yaml"


def default_model_path() -> Path:
    """The bundled default model (``engines/camvid_lite0_panoptic.onnx``)."""
    return DEFAULT_MODEL


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReconnectConfig(_Section):
    """``source.reconnect``: how a live source (camera, RTSP/HTTP stream, GStreamer) reopens a lost input.

    Exponential backoff with jitter: attempt n waits ``min(max_delay_s, initial_delay_s * 2**(n-1))``,
    shortened by up to ``jitter`` (a fraction) at random. Replayed inputs ignore this section.
    """

    initial_delay_s: float = Field(default=0.5, gt=0)
    """Wait before the first attempt; shorter recovers from a blip sooner, longer spares a rebooting server."""
    max_delay_s: float = Field(default=5.0, gt=0)
    """Cap of the wait, so the longest a returning camera waits to be tried again; shorter means more
    connection attempts while it is down."""
    max_attempts: int | None = Field(default=None, ge=0)
    """Attempts per loss before the run fails (null = for as long as the run lasts; 0 = fail at the
    first loss; a small number fails fast, e.g. when a supervisor of your own restarts the run)."""
    jitter: float = Field(default=0.2, ge=0, le=1)
    """Fraction by which each wait is randomly shortened, so cameras of one site do not reconnect in step."""

    @model_validator(mode="after")
    def _delays(self) -> ReconnectConfig:
        if self.initial_delay_s > self.max_delay_s:
            raise ValueError(f"initial_delay_s ({self.initial_delay_s:g}) must not exceed max_delay_s "
                             f"({self.max_delay_s:g})")
        return self


class SourceConfig(_Section):
    uri: str = "synthetic"
    """Video file, image folder, camera:N, /dev/videoN, rtsp:// or http:// URL, gst:<pipeline>,
    a recorded drive (.bag, .mcap, ROS 2 bag folder) or 'synthetic[:key=value,...]'."""
    camera_id: str | None = None
    """The stream's id, carried in every message (``cam``); None = ``cam0``, ``cam1``, … by the stream's
    place in ``sources``. Letters, digits, ``-`` and ``_``; unique among the streams."""
    mode: Literal["live", "replay"] | None = None
    """This stream's mode; None = the top-level ``mode``, else live for cameras and URLs, replay otherwise."""
    loop: bool = False
    fps: float | None = Field(default=None, gt=0)
    """Frame rate of an image folder (for pacing and timestamps); ignored where the input has one."""
    start_s: float = Field(default=0.0, ge=0)
    max_frames: int | None = Field(default=None, gt=0)
    width: int | None = Field(default=None, gt=0)
    """Capture width to ask a camera for (cameras only)."""
    height: int | None = Field(default=None, gt=0)
    topics: tuple[str, ...] = ()
    """Image topics to replay from a recorded drive (all image topics when empty)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Source-specific options (e.g. synthetic: num_frames, seed)."""
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    """How a live source reopens a lost input (default: for as long as the run lasts)."""
    stall_timeout_s: float = Field(default=5.0, gt=0)
    """A live source that delivers no frame for this long has lost its input (it is reopened per
    ``source.reconnect``). Shorter notices a dead camera sooner; longer tolerates a stream that hiccups."""


class ReplayConfig(_Section):
    speed: float = Field(default=1.0, ge=0)
    """Replay at the recorded rate × speed; 0 runs as fast as possible (every frame either way)."""


class ModelConfig(_Section):
    path: str = str(DEFAULT_MODEL.relative_to(DATA_ROOT))
    """ONNX model with its .card.json beside it; relative paths are taken from the folder holding the
    bundled ``engines/`` (:mod:`perception.paths`: the checkout, or a wheel's installed copy) when they
    do not exist relative to the working directory."""
    backend: Literal["onnxruntime", "tensorrt", "auto"] = "onnxruntime"
    threads: int | None = Field(default=None, gt=0)
    """Intra-op threads of the backend (None = one per core)."""
    input_size: tuple[int, int] | None = None
    """(width, height) to run a dynamic-size model at; None = the card's default."""
    precision: Literal["fp32", "fp16", "int8"] = "fp16"
    """TensorRT precision (ignored by ONNX Runtime)."""

    def resolved_path(self) -> Path:
        p = Path(self.path)
        if p.is_absolute() or p.exists():
            return p
        return DATA_ROOT / p


class BackgroundConfig(_Section):
    """``postprocess.background``: the fixed-camera background model (used when ``postprocess.motion``
    is not ``off``). Moving pixels are those the model of the recent frames does not explain; a moving
    region the network labels as a thing, or as nothing in particular, becomes an instance."""

    history: int = Field(default=200, ge=2)
    """Frames the background remembers (MOG2/KNN ``history``; the learning rate is 1/history). Longer
    keeps a person who stops walking in the foreground longer but takes longer to accept a parked car
    or a change of light as background."""
    threshold: float | None = Field(default=None, gt=0)
    """How different a pixel must be from the background to be moving: MOG2's squared Mahalanobis
    distance (``varThreshold``, OpenCV's default 16) or KNN's squared distance (``dist2Threshold``,
    default 400); None = that default. Lower finds low-contrast people and more noise."""
    learning_rate: float | None = Field(default=None, ge=0, le=1)
    """Weight of each new frame in the background; None = automatic (1/history once warmed up), 0 =
    frozen background (a camera that must not learn a standing person)."""
    shadows: bool = True
    """Detect shadows (pixels darker than the background by a uniform factor) and leave them out:
    shadows are not objects. Off saves about a tenth of the model's time where there are none."""
    shadow_ratio: float = Field(default=0.5, gt=0, lt=1)
    """A pixel down to this fraction of the background's brightness (same colour) is a shadow (MOG2's
    ``shadowThreshold``, tau). Lower counts darker shadows as shadows, and dark clothes too."""
    scale: float = Field(default=0.5, gt=0, le=1)
    """The model runs on the frame resized by this factor (a 768x576 frame at 0.5: 384x288). Smaller is
    cheaper (cost ~ scale²) and less noisy, but misses objects a few pixels wide."""
    min_area: int = Field(default=200, ge=1)
    """Moving regions with fewer full-resolution pixels are noise (a person 40 px tall covers ~500)."""
    fill_px: int = Field(default=9, ge=0)
    """Gaps narrower than this (full-resolution pixels) inside a moving region are filled, so a person
    whose shirt matches the background stays one region; larger merges people walking side by side."""
    warmup_frames: int = Field(default=10, ge=0)
    """No motion instances in a camera's first frames, while the model learns the background."""
    classes: tuple[str, ...] = ()
    """Thing classes (model card names) a moving region may become: the one with the highest
    probability summed over the region. Empty = every thing class. A camera that sees only people
    names just ``Pedestrian``: a person partly taken for a cyclist then stays one person (one track)."""
    min_thing_probability: float = Field(default=0.3, ge=0, le=1)
    """A moving region whose thing classes' probability, averaged over its pixels, reaches this is a
    thing. Lower turns more moving stuff (swaying trees, water) into instances."""
    max_stuff_confidence: float = Field(default=0.5, ge=0, le=1)
    """A moving region whose top class probability, averaged over its pixels, is below this is "nothing
    in particular" and becomes an instance too; a region confidently labelled stuff (a tree) does not."""
    trust_score: float = Field(default=0.5, ge=0, le=1)
    """Network instances scoring at least this keep their pixels inside a moving region (the centre head
    separates people walking together); weaker ones give way to the moving region, which is then that
    object (often a person the network half takes for a car or a cyclist)."""


class PostprocessConfig(_Section):
    upsample: Literal["nearest", "bilinear", "refine"] = "refine"
    refine_classes: tuple[str, ...] = ("Road", "Pavement")
    """Class names (from the model card) whose boundaries are refined against the full-resolution image."""
    panoptic: bool = True
    """Group thing pixels into instances (needs a model with centre outputs)."""
    motion: Literal["off", "mog2", "knn"] = "off"
    """Fixed cameras only: a background model (OpenCV's MOG2 or KNN) finds moving regions, and those the
    network labels as a thing (or as nothing in particular) become instances even where the centre head
    is silent. ``off`` for moving cameras (everything would move). Settings: ``postprocess.background``."""
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    """The background model's settings (``postprocess.motion`` not ``off``)."""

    @field_validator("motion", mode="before")
    @classmethod
    def _bare_off(cls, value: object) -> object:
        """YAML 1.1 reads a bare ``off`` (as in ``motion: off`` or ``--set postprocess.motion=off``) as false."""
        return "off" if value is False else value


Point = tuple[float, float]


def _check_points(points: tuple[Point, ...], units: str, least: int) -> tuple[Point, ...]:
    if len(points) < least:
        raise ValueError(f"needs at least {least} points [x, y], got {len(points)}")
    for i, (x, y) in enumerate(points):
        if not (math.isfinite(x) and math.isfinite(y)) or x < 0 or y < 0:
            raise ValueError(f"point {i} ({x:g}, {y:g}) is outside the frame")
        if units == "fraction" and (x > 1 or y > 1):
            raise ValueError(f"point {i} ({x:g}, {y:g}) is outside the frame (units: fraction, so 0..1; "
                             "use units: pixels for pixel coordinates)")
    return points


class _Shape(_Section):
    name: str = Field(min_length=1)
    """Its name in the counts (message header ``counts``, overlay)."""
    units: Literal["fraction", "pixels"] = "fraction"
    """``fraction``: x and y are fractions of the frame's width and height (0..1, any frame size);
    ``pixels``: full-resolution pixels (checked against each camera's size at its first frame)."""
    classes: tuple[str, ...] = ()
    """Thing classes (model card names) counted; empty = every thing class."""


class LineConfig(_Shape):
    """A counting line: a track whose anchor point moves across it is counted, by class and direction."""

    points: tuple[Point, ...]
    """``[[x, y], [x, y], ...]``: from A to B (more points: a polyline). Its direction names which way is
    which: ``directions[0]`` counts crossings from the left of A→B to its right, as seen on the image
    (A left, B right: from above to below); ``directions[1]`` the other way."""
    directions: tuple[str, str] = ("in", "out")
    """Names of the two directions (``[left-to-right, right-to-left]`` of A→B as seen on the image)."""

    @field_validator("points")
    @classmethod
    def _points(cls, v: tuple[Point, ...], info) -> tuple[Point, ...]:
        return _check_points(v, info.data.get("units", "fraction"), 2)


class ZoneConfig(_Shape):
    """A counting zone: the tracks whose anchor point is inside the polygon, per frame, by class."""

    points: tuple[Point, ...]
    """``[[x, y], ...]``: the polygon's corners in order (at least 3)."""

    @field_validator("points")
    @classmethod
    def _points(cls, v: tuple[Point, ...], info) -> tuple[Point, ...]:
        return _check_points(v, info.data.get("units", "fraction"), 3)


class AnalyticsConfig(_Section):
    """Counting, as NVIDIA's nvdsanalytics does: lines crossed and zones occupied, per camera."""

    anchor: Literal["foot", "centre"] = "foot"
    """Which point of a track's box counts: ``foot`` (bottom centre: where a person stands, right for
    lines and zones drawn on the ground) or ``centre``."""
    lines: tuple[LineConfig, ...] = ()
    zones: tuple[ZoneConfig, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> AnalyticsConfig:
        for what, items in (("lines", self.lines), ("zones", self.zones)):
            names = [x.name for x in items]
            for i, n in enumerate(names):
                if n in names[:i]:
                    raise ValueError(f"{what}[{i}].name {n!r} is used twice")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.lines or self.zones)


class TrackingConfig(TrackerParams):
    """The ``tracking:`` section: every :class:`~perception.tracking.params.TrackerParams` setting
    (same names, defaults and checks: ``tracking.<name>``), plus the two that are not the tracker's."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = True
    """Track instances with persistent ids (needs a model with instance outputs)."""
    reid_model: str | None = None
    """ONNX re-id model (:mod:`perception.tracking.reid`) whose embeddings of every instance join the
    colour appearance; None = off. The bundled ``engines/sim_reid.onnx`` knows generated scenes only
    (``source.kind: synthetic``); a camera needs a model trained on its own kind of scene."""

    # validated as a section of PipelineConfig, like the others: errors then name the dotted key
    # (``tracking.low_score``) and the file (parse_config), instead of TrackerParams' own ConfigError
    __init__ = BaseModel.__init__

    def params(self) -> TrackerParams:
        """The tracker's settings alone (without ``enabled`` and ``reid_model``)."""
        return self.replace()


class CurveConfig(_Section):
    """ZeroMQ CURVE: encrypted publishing to the listed clients only (keys from ``perception keys generate``)."""

    secret_key: str
    """The publisher's secret key file (``NAME.key_secret``); subscribers get its ``NAME.key``."""
    client_keys: tuple[str, ...] = Field(min_length=1)
    """Public key files (``NAME.key``) of the clients allowed to subscribe, or folders of them; a ZAP
    handler refuses every other client."""


class PublishConfig(_Section):
    address: str = "tcp://127.0.0.1:5555"
    """Where to bind: tcp://HOST:PORT (port 1-65535, 0 or * = any free one), ipc://PATH or inproc://NAME.
    A host other than 127.0.0.1 exposes the stream to the network: set ``curve`` then."""
    topic: str = "perception"
    encoding: Literal["raw", "zstd", "lz4"] = "raw"
    level: int | None = None
    """Compression level (zstd 1-22, lz4 0-16); None = the codec's fast default."""
    hwm: int = Field(default=4, ge=1)
    """Messages queued per reader; a reader whose queue is full loses new ones (it alone; counted)."""
    preview: Literal["none", "jpeg"] = "jpeg"
    """Also send a small JPEG of the input frame so viewers can draw an overlay."""
    wait_for_subscribers: int = Field(default=0, ge=0)
    """Hold the first frame until this many subscribers have connected (replay tests, recorders)."""
    wait_timeout_s: float = Field(default=10.0, gt=0)
    curve: CurveConfig | None = None
    """Encrypt and authenticate (None: plain TCP that anyone reaching the port can read)."""

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        from perception.errors import TransportError
        from perception.transport.address import check_address

        try:
            return check_address(v, bind=True, check_files=False)
        except TransportError as exc:
            raise ValueError(str(exc)) from None


class CameraCalibrationConfig(_Section):
    """A pinhole camera's intrinsics (ROS ``sensor_msgs/CameraInfo`` conventions), for the viewers:
    written as ``foxglove.CameraCalibration`` / ``sensor_msgs/msg/CameraInfo`` beside every frame."""

    K: tuple[float, ...]
    """3x3 intrinsic matrix, row-major: ``[fx, 0, cx, 0, fy, cy, 0, 0, 1]`` (pixels)."""
    D: tuple[float, ...] = ()
    """Distortion coefficients of ``distortion_model`` (plumb_bob: k1, k2, t1, t2, k3)."""
    distortion_model: str = "plumb_bob"
    R: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    """Rectification rotation, row-major (identity for a monocular camera)."""
    P: tuple[float, ...] | None = None
    """3x4 projection matrix, row-major; None = ``K`` with a zero fourth column."""
    width: int | None = Field(default=None, gt=0)
    """Image size the calibration is for; None = the frame's own size."""
    height: int | None = Field(default=None, gt=0)

    @field_validator("K", "R", "P")
    @classmethod
    def _matrix(cls, v: tuple[float, ...] | None, info: ValidationInfo) -> tuple[float, ...] | None:
        rows, n = ("3x4", 12) if info.field_name == "P" else ("3x3", 9)
        if v is not None and len(v) != n:
            raise ValueError(f"{info.field_name} is a {rows} matrix ({n} numbers, row-major), got {len(v)}")
        return v

    def projection(self) -> tuple[float, ...]:
        """``P``, or ``K`` with a zero fourth column."""
        if self.P is not None:
            return self.P
        k = self.K
        return (k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0)


class OutputConfig(_Section):
    overlay: str | None = None
    """Write the label colours blended over the frames to this .mp4 file."""
    overlay_alpha: float = Field(default=0.5, ge=0, le=1)
    overwrite: bool = False
    """Replace existing output files (``perception run --force``); otherwise an existing file is an error."""
    record: str | None = None
    """Record every frame's outputs here (``perception run --record``): an ``.mcap`` file for
    ``record_format: foxglove``; a ROS 2 bag folder for ``ros2`` (``out/run.mcap`` -> folder ``out/run``)."""
    record_format: Literal["foxglove", "ros2"] = "foxglove"
    """``foxglove``: MCAP with Foxglove's protobuf schemas (docs/foxglove.md); ``ros2``: a ROS 2 bag
    with MCAP storage (sensor_msgs, vision_msgs; docs/drives.md)."""
    record_image: bool = True
    """Also record the input frame (JPEG in Foxglove recordings, raw bgr8 in ROS 2 bags: by far the
    largest topic; off keeps only what the pipeline found)."""
    foxglove: str | None = None
    """Serve the outputs live to Foxglove on this ``HOST:PORT`` (``perception run --foxglove``,
    default ``127.0.0.1:8765``); None = off. A host other than 127.0.0.1 exposes the frames to the network."""
    calibration: dict[str, CameraCalibrationConfig] = Field(default_factory=dict)
    """Camera calibrations by camera id (``source.camera_id``, or a drive's topic name), written beside
    the frames of that camera in Foxglove recordings, the live view and ROS 2 bags."""
    plugins: tuple[str, ...] = ()
    """Extra sinks from outside the package, each ``module:factory`` (a callable taking the
    :class:`~perception.outputs.base.SinkConfig` and returning a sink or None); see ``docs/architecture.md``."""

    @field_validator("foxglove")
    @classmethod
    def _foxglove(cls, v: str | None) -> str | None:
        if v is not None:
            split_host_port(v)
        return v

    def foxglove_address(self) -> tuple[str, int] | None:
        """``output.foxglove`` as ``(host, port)``, None when off."""
        return None if self.foxglove is None else split_host_port(self.foxglove)


DEFAULT_FOXGLOVE = "127.0.0.1:8765"
"""Where ``perception run --foxglove`` serves Foxglove by default (the Foxglove app's default address)."""


def split_host_port(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``":PORT"``, ``"PORT"``: host 127.0.0.1) -> ``(host, port)``; port 0 = any free one.

    Raises ValueError naming the expected form.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"expected HOST:PORT (e.g. {DEFAULT_FOXGLOVE}), got {text!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port must be 0-65535, got {number} in {text!r}")
    return host, number


class BatchConfig(_Section):
    max_size: int = Field(default=4, ge=1, le=64)
    """At most this many frames, one per stream, go through one backend call. 1 = no batching. Larger
    batches use a GPU better, at the cost of the time a frame waits for the others. On a small CPU they
    do not pay: on 2 cores (ONNX Runtime), 4 streams gave 36.8 frames/s with 1 and 34.9 with 4
    (``tools/bench_streams.py --streams 4 --set batch.max_size=1``, docs/benchmarks.md)."""
    timeout_ms: float = Field(default=5.0, ge=0)
    """How long inference waits for a frame of another stream to fill a batch once it holds one; frames
    of a single stream never wait."""


class RuntimeConfig(_Section):
    slots: int = Field(default=4, ge=2, le=64)
    """Frames in flight in shared memory, per stream; more absorbs jitter, fewer bounds latency and
    memory. Each stream has its own slots, so a busy camera cannot starve another."""
    max_streams: int = Field(default=16, ge=1, le=256)
    """Streams one pipeline can run at once, counting those added while it runs."""
    control: str | None = None
    """ZeroMQ REQ/REP endpoint on which ``perception streams add|remove|list`` reach the running pipeline,
    e.g. ``tcp://127.0.0.1:5560``; loopback addresses only; None = no control endpoint."""
    stop_timeout_s: float = Field(default=2.0, gt=0)
    status_interval_s: float = Field(default=2.0, gt=0)
    """How often the status is logged (``-v``); ``<topic>/status`` goes out every second regardless."""
    progress: bool = True
    """Progress bar on stderr for replays with a known length."""
    watchdog_s: float = Field(default=10.0, gt=0)
    """A stage that shows no sign of life for this long is hung: a capture stuck on a source that is not
    reconnecting, inference or post-processing stuck on a frame. Shorter notices sooner; too short takes
    a stage the machine merely starved for a hang (a soak on a loaded 2-core machine saw inference stall
    5.3 s, so 5 was too short)."""
    restart: Literal["on-failure", "never"] = "on-failure"
    """What to do with a stage that failed or hung: start it again (a stream's capture alone, or the run's
    inference and post-processing with every stream), or stop with one line naming the stage."""
    max_restarts: int = Field(default=5, ge=0)
    """Restarts allowed within ``restart_window_s``; past that the run stops (a crash loop is a failure)."""
    restart_window_s: float = Field(default=300.0, gt=0)
    metrics: str | None = None
    """Serve Prometheus metrics at ``HOST:PORT`` (``perception run --metrics``; needs prometheus-client):
    frames, drops, reconnects and restarts per stream, latency histograms per stage and stream."""
    max_age_ms: float | None = Field(default=1000.0, gt=0)
    """Live streams: a frame older than this when inference or post-processing reaches it is dropped and
    counted (``dropped_stale``), so latency stays bounded when the machine cannot keep up; None = never."""


class PipelineConfig(_Section):
    source: SourceConfig = Field(default_factory=SourceConfig)
    """The input of a single-stream run (use ``sources`` for several)."""
    sources: tuple[SourceConfig, ...] = ()
    """Several streams in one run, each a source section of its own; replaces ``source``."""
    mode: Literal["live", "replay"] | None = None
    """live: drop stale frames (policy 'latest'); replay: process every frame (policy 'every').
    None picks live for cameras and URLs, replay for files, folders, drives and synthetic input."""
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    analytics: AnalyticsConfig = Field(default_factory=AnalyticsConfig)
    """Counting lines and zones (fixed cameras); none by default."""
    publish: PublishConfig = Field(default_factory=PublishConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)

    @model_validator(mode="after")
    def _one_way_to_name_sources(self) -> PipelineConfig:
        if self.sources and "source" in self.model_fields_set:
            raise ValueError("give either 'source' (one stream) or 'sources' (several), not both")
        streams = self.streams()
        ids = [s.camera_id for s in streams]
        for cam in ids:
            if not STREAM_ID.fullmatch(cam):
                raise ValueError(f"stream id {cam!r}: use letters, digits, '-' and '_' only")
        dup = sorted({c for c in ids if ids.count(c) > 1})
        if dup:
            raise ValueError(f"stream id {dup[0]!r} is used by more than one source; ids must be unique")
        if len(streams) > self.runtime.max_streams:
            raise ValueError(f"{len(streams)} sources but runtime.max_streams is {self.runtime.max_streams}")
        return self

    def streams(self) -> tuple[SourceConfig, ...]:
        """Every stream's source section, with its id (``cam0``, ``cam1``, … by place when not given) and
        its mode (its own, else the top-level ``mode``) filled in."""
        return tuple(resolve_stream(s, index=i, mode=self.mode) for i, s in enumerate(self.sources or (self.source,)))


STREAM_ID = re.compile(r"[A-Za-z0-9_-]+")
"""What a stream id may be made of (it names files and appears on the command line as ``ID=SRC``)."""


def resolve_stream(source: SourceConfig, *, index: int, mode: str | None = None) -> SourceConfig:
    """``source`` with its id and mode filled in: ``cam<index>`` and ``mode`` when they are None."""
    changes = {}
    if source.camera_id is None:
        changes["camera_id"] = f"cam{index}"
    if source.mode is None and mode is not None:
        changes["mode"] = mode
    return source.model_copy(update=changes) if changes else source


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed beside the last part of ``loc`` (sections are models, ``kalman_params`` a dataclass)."""
    cur: Any = model
    for part in loc[:-1]:
        field = cur.model_fields.get(str(part)) if isinstance(cur, type) and issubclass(cur, BaseModel) else None
        if field is None:
            return []
        cur = field.annotation
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return sorted(cur.model_fields)
    if dataclasses.is_dataclass(cur):
        return sorted(f.name for f in dataclasses.fields(cur))
    return []


def _format_error(exc: ValidationError, origin: str) -> str:
    msgs = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            allowed = _allowed_keys(PipelineConfig, loc)
            msgs.append(f"unknown key '{key}'" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else ""))
        elif err["type"] == "value_error" and "ctx" in err:  # a section's own check across its keys
            msgs.append(f"'{key}': {err['ctx']['error']}")
        else:
            msg = err["msg"]
            if err["type"] == "literal_error":
                msg = msg.replace("Input should be", "must be one of")
            msgs.append(f"'{key}': {msg} (got {err.get('input')!r})")
    return f"{origin}: " + "; ".join(msgs)


def parse_config(data: dict | None, *, origin: str = "configuration") -> PipelineConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections (source:, model:, ...), "
                          f"got a {_yaml_kind(data)}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, origin)) from exc


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: the top level must be a mapping of sections (source:, model:, ...), "
                          f"got a {_yaml_kind(data)}")
    return data


def _yaml_kind(value: object) -> str:
    """How a YAML value reads to a user: list, string, number, ..."""
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def parse_assignment(item: str, *, option: str, example: str) -> tuple[str, Any]:
    """``"key=value"`` from a command-line option -> ``(key, value)``, the value read as YAML (empty = None).

    Raises:
        ConfigError: no ``=``, an empty key, or a value that is not YAML; the message names ``option``
            and shows ``example``.
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"{option} expects key=value (e.g. {example}), got {item!r}")
    if not key:
        raise ConfigError(f"{option}: empty key in {item!r}")
    try:
        return key, (yaml.safe_load(raw) if raw.strip() else None)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{option} {key}: cannot parse value {raw!r}: {exc}") from exc


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict, returning a copy."""
    import copy

    if not isinstance(data, dict):
        raise ConfigError(f"--set needs a configuration whose top level is a mapping of sections, got a "
                          f"{_yaml_kind(data)}")
    out = copy.deepcopy(data)
    for item in overrides:
        key, value = parse_assignment(item, option="--set", example="publish.encoding=zstd")
        parts = [p for p in key.split(".") if p]
        if not parts:
            raise ConfigError(f"--set: empty key in {item!r}")
        cur = out
        for p in parts[:-1]:
            nxt = cur.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: '{p}' is not a section")
            cur = nxt
        cur[parts[-1]] = value
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, sources: list[dict] | None = None
) -> PipelineConfig:
    """Read a YAML file (default ``configs/default.yaml``), apply ``--set`` overrides, validate.

    ``sources`` (several ``--source`` options) replaces the file's ``source`` and ``sources``.
    """
    p = Path(path) if path else DEFAULT_CONFIG
    data = load_yaml(p) if p.exists() or path else {}
    if overrides:
        data = apply_overrides(data, overrides)
    if sources is not None and isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "source"} | {"sources": sources}
    config = parse_config(data, origin=str(p))
    # the bundled demo clip, wherever the command runs from
    update = {"source": _bundled_uri(config.source)}
    if config.sources:
        update["sources"] = tuple(_bundled_uri(s) for s in config.sources)
    return config.model_copy(update=update)


def _bundled_uri(source: SourceConfig) -> SourceConfig:
    uri = bundled(source.uri)
    return source if uri == source.uri else source.model_copy(update={"uri": uri})
