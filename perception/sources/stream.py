"""Network streams (``rtsp://``, ``http(s)://``) and GStreamer pipelines (``gst:...``) through OpenCV.

Both are live: a background thread keeps only the newest frame, and a stream that stops delivering
(or delivers nothing for ``stall_timeout_s``) is reopened with backoff, by default for as long as the
source is open (:class:`~perception.sources.grabber.ReconnectPolicy`). An unreachable URL fails at
once: OpenCV's open and read timeouts are set, and the first open is not retried. Credentials in the
URL never appear in a log line or an error (:func:`perception.redact.redact`).
"""

from __future__ import annotations

import logging
import math

import cv2

from perception.errors import ConfigError, SourceError
from perception.redact import redact
from perception.sources.base import quiet_opencv
from perception.sources.grabber import GrabbedSource, LatestFrameGrabber, LiveTimeouts, ReconnectPolicy
from perception.sources.health import HealthTracker

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
"""URL schemes opened with OpenCV's FFmpeg backend."""

APPSINK_TAIL = " ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
"""Appended to a ``gst:`` pipeline that does not end in an ``appsink`` of its own."""


def gstreamer_available() -> bool:
    """Whether this OpenCV build can open GStreamer pipelines."""
    return bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))


class StreamSource(GrabbedSource):
    """Frames of a network stream or GStreamer pipeline, newest first (live: stale frames drop).

    Args:
        url: ``rtsp://``/``rtsps://``/``http://``/``https://`` URL, or with ``gstreamer=True`` a
            GStreamer pipeline (an ``appsink`` tail converting to BGR is added when it has none).
        camera_id: id put in every frame's :class:`FrameMeta`.
        gstreamer: open ``url`` as a GStreamer pipeline (needs an OpenCV built with GStreamer).
        max_frames: stop after delivering this many frames (None = until closed).
        open_timeout_s: OpenCV/FFmpeg connect timeout (also of each reconnect attempt). Short fails
            fast on a dead host; too short fails on a slow RTSP handshake.
        read_timeout_s: OpenCV/FFmpeg read timeout; a read blocked longer counts as a lost stream.
            None = ``stall_timeout_s``, so a silent server is noticed within the stall timeout.
        first_frame_timeout_s: see :class:`LiveTimeouts` (streams buffer, so longer than for cameras).
        stall_timeout_s: no new frame for this long counts as a loss: the stream is reopened.
        reconnect: how a lost stream is reopened (None = the default :class:`ReconnectPolicy`:
            backoff from 0.5 s up to 5 s, forever).

    ``health()`` reports state and counters; ``dropped`` and ``reconnects`` are two of them. The
    yielded array is reused once the next frame is requested.
    """

    is_live = True

    def __init__(
        self,
        url: str,
        *,
        camera_id: str = "cam0",
        gstreamer: bool = False,
        max_frames: int | None = None,
        open_timeout_s: float = 5.0,
        read_timeout_s: float | None = None,
        first_frame_timeout_s: float = 10.0,
        stall_timeout_s: float = 5.0,
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1 or None, got {max_frames!r}")
        if read_timeout_s is None:
            read_timeout_s = stall_timeout_s
        for key, value in (("open_timeout_s", open_timeout_s), ("read_timeout_s", read_timeout_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{key} must be a positive number of seconds, got {value!r}")
        timeouts = LiveTimeouts(first_frame_s=first_frame_timeout_s, stall_s=stall_timeout_s,
                                reconnect=reconnect or ReconnectPolicy())
        self._health = HealthTracker()
        self.camera_id = camera_id
        self.gstreamer = gstreamer
        self.fps: float | None = None
        if gstreamer:
            pipeline = url.strip()
            if not pipeline:
                raise ConfigError("gst: needs a GStreamer pipeline, e.g. gst:videotestsrc ! videoconvert ! appsink")
            if not gstreamer_available():
                raise SourceError(
                    "cannot open GStreamer pipeline: this OpenCV build has no GStreamer support "
                    "(pip's opencv-python wheels are built without it; install an OpenCV built with "
                    "GStreamer, or use an rtsp:// or http:// URL)"
                )
            if "appsink" not in pipeline:
                pipeline += APPSINK_TAIL
            self.url = pipeline
            self.name = f"GStreamer pipeline '{pipeline}'"
        else:
            scheme = url.split("://", 1)[0].lower() if "://" in url else ""
            if scheme not in URL_SCHEMES:
                raise ConfigError(f"unsupported stream URL {redact(url)!r}: the scheme must be one of "
                                  f"{', '.join(URL_SCHEMES)}")
            self.url = url
            self.name = f"stream {redact(url)}"
        self._open_timeout_ms = round(open_timeout_s * 1000)
        self._read_timeout_ms = round(read_timeout_s * 1000)
        self._grabber = LatestFrameGrabber(
            name=self.name, open_fn=self._open, camera_id=camera_id, timeouts=timeouts, max_frames=max_frames,
            health=self._health,
        )
        self.width = self._grabber.width
        self.height = self._grabber.height

    def _open(self) -> cv2.VideoCapture:
        if self.gstreamer:
            with quiet_opencv():
                cap = cv2.VideoCapture(self.url, cv2.CAP_GSTREAMER)
            what = "the pipeline does not start (check it with gst-launch-1.0)"
        else:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                self._open_timeout_ms,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                self._read_timeout_ms,
            ]
            with quiet_opencv():
                cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
            what = (
                f"unreachable, refused, or not a video stream (gave up after at most "
                f"{self._open_timeout_ms / 1000:g} s)"
            )
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.name}: {what}")
        fps = cap.get(cv2.CAP_PROP_FPS)
        if fps > 0 and math.isfinite(fps) and fps < 1000:
            self.fps = float(fps)
        return cap

    def __repr__(self) -> str:
        return f"StreamSource({self.name!r}, {self.width}x{self.height}, fps={self.fps})"
