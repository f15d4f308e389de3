"""A local camera (``camera:N`` or ``/dev/videoN``) through OpenCV, newest frame first."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import cv2

from perception.errors import ConfigError, SourceError
from perception.sources.base import quiet_opencv
from perception.sources.grabber import GrabbedSource, LatestFrameGrabber, LiveTimeouts, ReconnectPolicy
from perception.sources.health import HealthTracker

log = logging.getLogger(__name__)

_API = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
"""Video4Linux2 on Linux (a device path needs it: FFmpeg would treat it as a file); OpenCV's choice elsewhere."""


class CameraSource(GrabbedSource):
    """Frames of a local camera; a background thread keeps only the newest (live: stale frames drop).

    Args:
        device: camera index (``0`` for ``camera:0``) or device path (``/dev/video0``).
        camera_id: id put in every frame's :class:`FrameMeta`.
        width, height, fps: requested capture mode; the camera picks the nearest one it supports
            (a warning is logged when it differs). None keeps the camera's default.
        max_frames: stop after delivering this many frames (None = until closed).
        first_frame_timeout_s: see :class:`LiveTimeouts` ``first_frame_s``.
        stall_timeout_s: see :class:`LiveTimeouts` ``stall_s``; a camera silent this long is lost
            and reopened.
        reconnect: how a lost camera is reopened (None = the default :class:`ReconnectPolicy`:
            backoff from 0.5 s up to 5 s, forever: a camera unplugged and plugged back streams again).

    ``health()`` reports state and counters; ``dropped`` (frames replaced before the consumer took
    them) and ``reconnects`` are two of them. The yielded array is reused once the next frame is
    requested.

    Raises:
        SourceError: the camera cannot be opened, delivers no first frame in time, or is lost and the
            reconnect policy gives up.
    """

    is_live = True

    def __init__(
        self,
        device: int | str | os.PathLike[str],
        *,
        camera_id: str = "cam0",
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        first_frame_timeout_s: float = 5.0,
        stall_timeout_s: float = 5.0,
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        for key, value in (("width", width), ("height", height)):
            if value is not None and value < 1:
                raise ConfigError(f"camera {key} must be a positive number of pixels or None, got {value!r}")
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ConfigError(f"camera fps must be a positive number or None, got {fps!r}")
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1 or None, got {max_frames!r}")
        if isinstance(device, int):
            if device < 0:
                raise ConfigError(f"camera index must be >= 0, got {device}")
            self.device: int | str = device
            self.name = f"camera {device} (camera:{device})"
        else:
            self.device = str(device)
            self.name = f"camera {self.device}"
        self.camera_id = camera_id
        self._requested = (width, height, fps)
        self.fps: float | None = fps
        timeouts = LiveTimeouts(first_frame_s=first_frame_timeout_s, stall_s=stall_timeout_s,
                                reconnect=reconnect or ReconnectPolicy())
        self._health = HealthTracker()
        self._grabber = LatestFrameGrabber(
            name=self.name, open_fn=self._open, camera_id=camera_id, timeouts=timeouts, max_frames=max_frames,
            health=self._health,
        )
        self.width = self._grabber.width
        self.height = self._grabber.height

    def _open(self) -> cv2.VideoCapture:
        if isinstance(self.device, str) and not Path(self.device).exists():
            raise SourceError(f"cannot open {self.name}: no such device")
        with quiet_opencv():
            cap = cv2.VideoCapture(self.device, _API)
        if not cap.isOpened():
            cap.release()
            hint = f"/dev/video{self.device}" if isinstance(self.device, int) else self.device
            raise SourceError(
                f"cannot open {self.name}: no such device, or it is busy or not permitted (check {hint} "
                f"exists and is readable)"
            )
        width, height, fps = self._requested
        if width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps is not None:
            cap.set(cv2.CAP_PROP_FPS, fps)
        got = (
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            cap.get(cv2.CAP_PROP_FPS),
        )
        for key, want, have in zip(("width", "height", "fps"), self._requested, got):
            if want is not None and have > 0 and abs(have - want) > 1e-3:
                log.warning("%s: requested %s %s, the camera gives %s", self.name, key, want, have)
        if got[2] > 0 and math.isfinite(got[2]):
            self.fps = float(got[2])
        return cap

    def __repr__(self) -> str:
        return f"CameraSource({self.device!r}, {self.width}x{self.height}, fps={self.fps})"
