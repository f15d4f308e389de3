"""The one place that turns a source string (``--source``) into a :class:`Source`.

Heavy or optional modules (synthetic scenes, recorded drives) are imported only in their branch.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from perception.errors import ConfigError, SourceError
from perception.redact import redact
from perception.sources.base import Source

if TYPE_CHECKING:
    from perception.config import SourceConfig
    from perception.sources.grabber import ReconnectPolicy

DRIVE_SUFFIXES = frozenset({".bag", ".mcap", ".db3"})
"""File suffixes of recorded drives (ROS 1 bag, MCAP, ROS 2 sqlite3 bag)."""

_EMPTY: Mapping[str, object] = MappingProxyType({})

_SOURCE_FORMS = """\
Source forms (--source SRC):
  synthetic                     a generated driving scene (no camera or file needed)
  synthetic:key=value,...       the same with settings, e.g. synthetic:seed=3,num_frames=100
  PATH/TO/VIDEO.mp4             a video file (anything FFmpeg decodes: mp4, avi, mkv, mov, ...)
  PATH/TO/FOLDER/               an image folder (png/jpg/jpeg/bmp, natural filename order)
  PATH/TO/DRIVE.mcap|.bag|.db3  a recorded drive (or a ROS 2 bag folder holding metadata.yaml)
  camera:N                      local camera number N (e.g. camera:0)
  /dev/videoN                   local camera by device path
  rtsp://HOST[:PORT]/PATH       RTSP stream (also rtsps://); http(s)://... for HTTP streams
  gst:PIPELINE                  GStreamer pipeline (needs an OpenCV built with GStreamer)
Files, folders and drives are replayed (every frame; pacing is up to the caller); cameras and
streams are live (only the newest frame is kept, stale frames are dropped and counted)."""


def describe_sources() -> str:
    """Help text listing every accepted source form (for ``--help``)."""
    return _SOURCE_FORMS


def parse_settings(text: str) -> dict[str, str]:
    """Parse ``key=value,key=value`` into a dict of strings (the source converts each to its type).

    ``""`` gives ``{}``. Raises ConfigError naming the malformed item.
    """
    settings: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"bad source setting {item!r}: expected key=value (e.g. synthetic:seed=3)")
        settings[key] = raw.strip()
    return settings


def _check_options(kind: str, cls: Callable[..., object], options: Mapping[str, object], reserved: set[str]) -> None:
    """Refuse options the source's constructor does not take (or that have their own factory argument)."""
    params = inspect.signature(cls).parameters
    allowed = sorted(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in reserved)
    for key in options:
        if key in reserved:
            raise ConfigError(f"source option {key!r} is set by its own argument, not through options")
        if key not in allowed:
            raise ConfigError(
                f"unknown option {key!r} for a {kind} source; allowed: {', '.join(allowed) or '(none)'}"
            )


def _refuse(kind: str, **given: object) -> None:
    """Raise ConfigError for arguments that mean nothing for this kind of source."""
    bad = [name for name, value in given.items() if value not in (None, False, 0, 0.0)]
    if bad:
        raise ConfigError(f"{', '.join(bad)} cannot be used with a {kind} source")


def open_source(
    spec: str,
    *,
    camera_id: str = "cam0",
    loop: bool = False,
    fps: float | None = None,
    start_s: float = 0.0,
    max_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    options: Mapping[str, object] = _EMPTY,
    reconnect: ReconnectPolicy | None = None,
    stall_timeout_s: float | None = None,
) -> Source:
    """Open the source that ``spec`` names (see :func:`describe_sources` for the forms).

    Args:
        spec: the source string.
        camera_id: id put in every frame's FrameMeta.
        loop: replay files/folders forever (not for live sources).
        fps: image folder: nominal rate (pts, pacing); video: overrides the container rate; camera:
            requested rate; synthetic: its rate. Not for streams or drives.
        start_s: start offset in seconds (files, folders with fps, drives).
        max_frames: stop after this many frames (synthetic: its ``num_frames``).
        width, height: requested size (camera, synthetic only).
        options: further keyword arguments of the chosen source class (e.g. ``open_timeout_s``
            for a stream); unknown ones are a ConfigError.
        reconnect: how a live source (camera, stream, GStreamer) reopens a lost input (None = the
            default: backoff up to 5 s, forever). Ignored by replayed inputs.
        stall_timeout_s: no frame for this long is a loss for a live source (None = its default).
            Ignored by replayed inputs.

    Raises:
        SourceError: the input does not exist or cannot be opened.
        ConfigError: an argument or option that does not apply to this kind of source.
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError("empty source string; `perception run --help` lists the accepted forms")
    live: dict[str, object] = {}
    if reconnect is not None:
        live["reconnect"] = reconnect
    if stall_timeout_s is not None:
        live["stall_timeout_s"] = stall_timeout_s
    r = _Request(
        spec=spec, camera_id=camera_id, loop=loop, fps=fps, start_s=start_s, max_frames=max_frames,
        width=width, height=height, options=dict(options), live=live,
    )
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return _open_synthetic(r)
    if spec.startswith("camera:") or spec.startswith("/dev/video"):
        return _open_camera(r)
    if spec.startswith("gst:"):
        return _open_gstreamer(r)
    if "://" in spec:
        return _open_stream(r)
    return _open_path(r)


@dataclass(frozen=True, slots=True)
class _Request:
    """The arguments of :func:`open_source` (``spec`` stripped, ``options`` a copy)."""

    spec: str
    camera_id: str
    loop: bool
    fps: float | None
    start_s: float
    max_frames: int | None
    width: int | None
    height: int | None
    options: dict[str, object]
    live: dict[str, object]
    """``reconnect`` / ``stall_timeout_s`` when given: passed to live sources only."""

    def live_options(self) -> dict[str, object]:
        """``options`` with the live settings added (an explicit option wins)."""
        return {**self.live, **self.options}


def _open_synthetic(r: _Request) -> Source:
    from perception.sources.synthetic import SyntheticSource

    _refuse("synthetic", start_s=r.start_s)
    kwargs: dict[str, object] = {"camera_id": r.camera_id}
    for key, value in (("width", r.width), ("height", r.height), ("fps", r.fps), ("num_frames", r.max_frames)):
        if value is not None:
            kwargs[key] = value
    if r.loop:
        kwargs["loop"] = True
    kwargs.update(parse_settings(r.spec.partition(":")[2]))
    kwargs.update(r.options)
    try:
        return SyntheticSource(**kwargs)
    except TypeError as exc:  # an unknown key=value from the user
        raise ConfigError(f"bad synthetic source setting: {exc}") from exc


def _open_camera(r: _Request) -> Source:
    from perception.sources.camera import CameraSource

    _refuse("camera", loop=r.loop, start_s=r.start_s)
    device: int | str
    if r.spec.startswith("camera:"):
        rest = r.spec.partition(":")[2].strip()
        if rest.isdigit():
            device = int(rest)
        elif rest.startswith("/dev/"):
            device = rest
        else:
            raise ConfigError(f"bad camera source {r.spec!r}: expected camera:N (N = 0, 1, ...) or /dev/videoN")
    else:
        device = r.spec
    reserved = {"camera_id", "width", "height", "fps", "max_frames"}
    _check_options("camera", CameraSource, r.options, reserved)
    return CameraSource(
        device, camera_id=r.camera_id, width=r.width, height=r.height, fps=r.fps, max_frames=r.max_frames,
        **r.live_options(),
    )


def _open_gstreamer(r: _Request) -> Source:
    from perception.sources.stream import StreamSource

    _refuse("GStreamer", loop=r.loop, start_s=r.start_s, fps=r.fps, width=r.width, height=r.height)
    reserved = {"camera_id", "max_frames", "gstreamer"}
    _check_options("GStreamer", StreamSource, r.options, reserved)
    return StreamSource(r.spec[4:], camera_id=r.camera_id, gstreamer=True, max_frames=r.max_frames,
                        **r.live_options())


def _open_stream(r: _Request) -> Source:
    from perception.sources.stream import URL_SCHEMES, StreamSource

    scheme = r.spec.split("://", 1)[0].lower()
    if scheme not in URL_SCHEMES:
        raise SourceError(
            f"unsupported URL scheme {scheme!r} in source {redact(r.spec)!r}; supported: {', '.join(URL_SCHEMES)}"
        )
    _refuse("stream", loop=r.loop, start_s=r.start_s, fps=r.fps, width=r.width, height=r.height)
    reserved = {"camera_id", "max_frames", "gstreamer"}
    _check_options("stream", StreamSource, r.options, reserved)
    return StreamSource(r.spec, camera_id=r.camera_id, max_frames=r.max_frames, **r.live_options())


def _open_path(r: _Request) -> Source:
    """A recorded drive, an image folder or a video file, by what the path holds."""
    path = Path(r.spec).expanduser()
    if not path.exists():
        raise SourceError(f"no such file or folder: {r.spec}")

    if path.suffix.lower() in DRIVE_SUFFIXES or (path.is_dir() and (path / "metadata.yaml").is_file()):
        return _open_drive(r)

    if path.is_dir():
        from perception.sources.images import ImageFolderSource

        _refuse("image folder", width=r.width, height=r.height)
        reserved = {"camera_id", "fps", "loop", "start_s", "max_frames"}
        _check_options("image folder", ImageFolderSource, r.options, reserved)
        return ImageFolderSource(
            path, camera_id=r.camera_id, fps=r.fps, loop=r.loop, start_s=r.start_s, max_frames=r.max_frames,
            **r.options,
        )

    from perception.sources.video import VideoFileSource

    _refuse("video file", width=r.width, height=r.height)
    reserved = {"camera_id", "fps", "loop", "start_s", "max_frames"}
    _check_options("video file", VideoFileSource, r.options, reserved)
    return VideoFileSource(
        path, camera_id=r.camera_id, loop=r.loop, start_s=r.start_s, max_frames=r.max_frames, fps=r.fps,
        **r.options,
    )


def _open_drive(r: _Request) -> Source:
    try:
        from perception.sources.drives.source import open_drive_source
    except ImportError as exc:
        raise SourceError(
            f"cannot replay recorded drive {r.spec}: drive support is not installed "
            f"(pip install 'perception[drives]'; {exc})"
        ) from exc
    _refuse("recorded drive", fps=r.fps, width=r.width, height=r.height)
    return open_drive_source(
        r.spec, camera_id=r.camera_id, loop=r.loop, start_s=r.start_s, max_frames=r.max_frames, **r.options
    )


def reconnect_policy(cfg: SourceConfig) -> ReconnectPolicy:
    """The :class:`~perception.sources.grabber.ReconnectPolicy` of a ``source.reconnect`` section."""
    from perception.sources.grabber import ReconnectPolicy

    rc = cfg.reconnect
    return ReconnectPolicy(initial_delay_s=rc.initial_delay_s, max_delay_s=rc.max_delay_s,
                           max_attempts=rc.max_attempts, jitter=rc.jitter)


def open_configured(cfg: SourceConfig) -> Source:
    """The source a ``source:`` configuration section describes (the one place that maps it).

    ``source.reconnect`` and ``source.stall_timeout_s`` reach live sources; ``source.topics`` a drive.
    """
    options = {**cfg.options, **({"topics": tuple(cfg.topics)} if cfg.topics else {})}
    return open_source(
        cfg.uri, camera_id=cfg.camera_id or "cam0", loop=cfg.loop, fps=cfg.fps, start_s=cfg.start_s,
        max_frames=cfg.max_frames, width=cfg.width, height=cfg.height, options=options,
        reconnect=reconnect_policy(cfg), stall_timeout_s=cfg.stall_timeout_s,
    )
