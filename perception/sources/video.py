"""A video file read through OpenCV (``cv2.VideoCapture`` with the FFmpeg backend)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from perception.errors import ConfigError, SourceError
from perception.sources.base import Source, as_bgr, make_meta, quiet_opencv
from perception.sources.health import HealthTracker
from perception.types import FrameMeta

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0
"""Rate assumed for pts when the container declares none (and no ``fps`` was given). A wrong guess
only mis-paces a replay; it never drops or reorders frames."""

RESYNC_SLACK = 32
"""Failed reads tried past damage, beyond the frames the container still declares, before the file
is taken to end there. OpenCV's read stops at the first packet the decoder rejects; reading on
usually finds the next good frame a few packets later. More rides out longer damage where the
container declares no length; each try at the true end of a file costs next to nothing."""


class VideoFileSource(Source):
    """Frames of a video file, in order, each exactly once per pass (replay: nothing is dropped).

    Args:
        path: the video file (anything this OpenCV build's FFmpeg can decode: mp4, avi, mkv, ...).
        camera_id: id put in every frame's :class:`FrameMeta`.
        loop: start again from ``start_s`` at the end of the file, forever (``max_frames`` still
            applies). ``seq`` and ``pts_ns`` keep increasing across passes; ``frame_index`` restarts.
        start_s: skip to this position (seconds) before the first frame.
        max_frames: stop after delivering this many frames (None = until the end).
        fps: override the container's frame rate; pts is then ``frame_index / fps`` exactly.
            Without it pts is the container's timestamp of each frame.

    Raises:
        SourceError: the file is missing, cannot be decoded, has no frames, or ``start_s`` is past its end.
        ConfigError: a bad argument value.

    Damage: frames the decoder rejects (a corrupt part of the file) are skipped and counted in
    ``health().skipped``, and decoding goes on after the damage where the container allows it;
    ``frame_index`` of the frames after it jumps by the frames lost. A file that ends before the
    frames its container declares is reported (``health().truncated``, one warning).

    The yielded array is one buffer, overwritten by the next frame.
    """

    is_live = False
    dropped = 0
    """A replay never drops frames (kept for symmetry with live sources' counter)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        camera_id: str = "cam0",
        loop: bool = False,
        start_s: float = 0.0,
        max_frames: int | None = None,
        fps: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.camera_id = camera_id
        self.loop = loop
        self.max_frames = max_frames
        self._health = HealthTracker()
        self._position = 0  # frames of the file consumed so far (decoded or skipped)
        if start_s < 0 or not math.isfinite(start_s):
            raise ConfigError(f"start_s must be a finite number of seconds >= 0, got {start_s!r}")
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1 or None, got {max_frames!r}")
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ConfigError(f"fps must be a positive number or None, got {fps!r}")
        if not self.path.exists():
            raise SourceError(f"video file not found: {self.path}")
        if not self.path.is_file():
            raise SourceError(f"not a video file: {self.path} (a folder? use it as an image folder)")

        with quiet_opencv():
            cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot decode video file {self.path}: not a video, empty, corrupt or truncated, or a codec "
                f"this OpenCV build cannot read"
            )
        self._cap: cv2.VideoCapture | None = cap
        container_fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps_override = fps
        if fps is not None:
            self.fps: float | None = float(fps)
        elif container_fps > 0 and math.isfinite(container_fps):
            self.fps = float(container_fps)
        else:
            self.fps = None
            log.warning("%s declares no frame rate; assuming %.1f fps where one is needed", self.path, DEFAULT_FPS)
        self._period_ns = round(1e9 / (self.fps or DEFAULT_FPS))
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count: int | None = int(count) if count > 0 else None
        """Frames the container declares (None if unknown); decoding may deliver slightly fewer."""

        self._start_frame = round(start_s * (self.fps or DEFAULT_FPS))
        if self.frame_count is not None and self._start_frame >= self.frame_count:
            self.close()
            raise SourceError(
                f"start offset {start_s} s is past the end of {self.path} "
                f"({self.frame_count} frames at {self.fps or DEFAULT_FPS:g} fps)"
            )
        self._seek_start()

        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._position = self._start_frame
        first = self._read_raw(None)
        if first is None:
            self.close()
            where = f" at {start_s} s" if start_s else ""
            raise SourceError(f"video file {self.path} has no decodable frames{where} (empty or corrupt)")
        if width <= 0 or height <= 0:
            width, height = first.shape[1], first.shape[0]
        self.width = int(width)
        self.height = int(height)
        self._buffer = np.empty((self.height, self.width, 3), np.uint8)
        self._scratch = np.empty_like(self._buffer)
        self._pending: np.ndarray | None = as_bgr(first, width=self.width, height=self.height, out=self._scratch)
        self._pending_index = self._position - 1
        self._pending_pts_ns = self._pts_ns(self._pending_index)
        self._iterated = False

    # ------------------------------------------------------------------ internals
    def _seek_start(self) -> None:
        cap = self._cap
        if cap is None:
            raise SourceError(f"video file {self.path} was closed")
        if self._start_frame == 0 and cap.get(cv2.CAP_PROP_POS_FRAMES) == 0:
            return  # freshly opened: no seek needed
        if not cap.set(cv2.CAP_PROP_POS_FRAMES, self._start_frame):
            raise SourceError(f"cannot seek to frame {self._start_frame} in {self.path}")

    def _pts_ns(self, frame_index: int) -> int:
        """Position of the frame just read: container timestamp, or ``frame_index / fps``."""
        if self._fps_override is None and self._cap is not None:
            msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            if msec >= 0 and math.isfinite(msec) and (frame_index == 0 or msec > 0):
                return round(msec * 1e6)
        return frame_index * self._period_ns

    def _read_raw(self, out: np.ndarray | None) -> np.ndarray | None:
        """Next decodable frame (as decoded), skipping damage; None at the end. Advances ``_position``
        to just past the frame, counting the frames skipped on the way."""
        cap = self._cap
        if cap is None:  # closed while iterating: end quietly
            return None
        ok, image = cap.read(out) if out is not None else cap.read()
        if ok and image is not None:
            self._position += 1
            return image
        remaining = (self.frame_count - self._position) if self.frame_count is not None else 0
        for _ in range(max(remaining, 0) + RESYNC_SLACK):  # damage, or the end: read on to tell which
            if not cap.grab():
                continue
            ok, image = cap.retrieve(out) if out is not None else cap.retrieve()
            if ok and image is not None:
                self._resynced()
                return image
        return None

    def _resynced(self) -> None:
        """A frame was decoded after damage: count what was lost, from its position in the file."""
        lost = 1
        fps = self.fps or DEFAULT_FPS
        msec = self._cap.get(cv2.CAP_PROP_POS_MSEC) if self._cap is not None else -1.0
        if msec > 0 and math.isfinite(msec):
            lost = max(1, round(msec * fps / 1000) - self._position)
        self._health.skipped += lost
        self._health.last_error = f"{self.path}: {lost} damaged frame(s) skipped before frame {self._position + lost}"
        if self._health.skipped == lost:
            log.warning("%s: damaged data at frame %d: %d frame(s) skipped, decoding goes on (further damage is "
                        "counted)", self.path, self._position, lost)
        self._position += lost + 1

    def _read(self) -> np.ndarray | None:
        """Next frame of the file as ``uint8[H, W, 3]`` (a reused buffer), or None at the end or once closed."""
        image = self._read_raw(self._buffer)
        if image is None or image is self._buffer:
            return image
        return as_bgr(image, width=self.width, height=self.height, out=self._buffer)

    # ------------------------------------------------------------------ Source API
    def __iter__(self) -> Iterator[tuple[FrameMeta, np.ndarray]]:
        if self._iterated:
            raise SourceError(f"video source {self.path} can be iterated only once; open it again")
        self._iterated = True
        try:
            yield from self._passes()
        finally:
            self._health.end()

    def _passes(self) -> Iterator[tuple[FrameMeta, np.ndarray]]:
        seq = 0
        pass_offset_ns = 0  # added to pts on each loop pass so pts keeps increasing
        first_pts_ns = self._pending_pts_ns
        while True:
            frame_index = self._pending_index
            image = self._pending
            pts_ns = self._pending_pts_ns
            self._pending = None
            last_pts_ns = pts_ns
            while image is not None:
                self._health.frame_read()
                meta = make_meta(seq=seq, camera_id=self.camera_id, frame_index=frame_index,
                                 pts_ns=pass_offset_ns + pts_ns, width=self.width, height=self.height)
                yield meta, image
                self._health.frames += 1
                seq += 1
                if self.max_frames is not None and seq >= self.max_frames:
                    return
                image = self._read()
                if image is None:
                    break
                frame_index = self._position - 1
                new_pts = self._pts_ns(frame_index)
                # Keep pts strictly increasing even when a container reports a stale timestamp.
                pts_ns = new_pts if new_pts > last_pts_ns else last_pts_ns + self._period_ns
                last_pts_ns = pts_ns
            self._check_end(frame_index)
            if not self.loop or self._cap is None:
                return
            pass_offset_ns += last_pts_ns + self._period_ns - first_pts_ns
            self._seek_start()
            self._position = self._start_frame
            first = self._read()
            if first is None:
                raise SourceError(f"video file {self.path}: cannot read again after seeking back to loop")
            self._pending = first
            self._pending_index = self._position - 1
            self._pending_pts_ns = self._pts_ns(self._pending_index)

    def _check_end(self, last_index: int) -> None:
        """After a pass: say so (once) when decoding stopped well before the frames the container declares."""
        if self._cap is None or self.frame_count is None or last_index + 1 >= self.frame_count - 1:
            return
        lost = self.frame_count - (last_index + 1)
        self._health.skipped += lost
        self._health.last_error = (f"{self.path}: decoding stopped at frame {last_index + 1} of the "
                                   f"{self.frame_count} the container declares (truncated or damaged to the end)")
        if not self._health.truncated:
            self._health.truncated = True
            log.warning("%s: decoding stopped at frame %d of the %d the container declares (truncated file?); "
                        "%d delivered, %d skipped", self.path, last_index + 1, self.frame_count,
                        self._health.frames, self._health.skipped)

    def close(self) -> None:
        """Release the decoder. Idempotent."""
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def __repr__(self) -> str:
        return f"VideoFileSource({str(self.path)!r}, {self.width}x{self.height}, fps={self.fps})"
