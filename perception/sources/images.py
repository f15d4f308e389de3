"""A folder of still images (png, jpg, jpeg, bmp), in natural filename order."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from perception.errors import ConfigError, SourceError
from perception.sources.base import Source, as_bgr, make_meta, natural_key
from perception.sources.health import HealthTracker
from perception.types import FrameMeta

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
"""File suffixes read as frames (case-insensitive); other files in the folder are ignored."""


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder``, sorted naturally (``2.png`` before ``10.png``).

    Hidden files and sub-folders are skipped. Raises SourceError if the folder is missing or holds none.
    """
    root = Path(folder)
    if not root.is_dir():
        raise SourceError(f"image folder not found: {root}")
    files = [
        p
        for p in root.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    if not files:
        raise SourceError(
            f"image folder {root} holds no images ({', '.join(sorted(s[1:] for s in IMAGE_SUFFIXES))})"
        )
    files.sort(key=lambda p: natural_key(p.name))
    return files


class ImageFolderSource(Source):
    """Every image of a folder as one frame, in natural filename order.

    Args:
        folder: the folder; only its direct png/jpg/jpeg/bmp files are read.
        camera_id: id put in every frame's :class:`FrameMeta`.
        fps: nominal rate for ``pts_ns = frame_index / fps`` (and so for pacing). Without it pts is
            the time since the folder was opened, so a pacer releases frames as they are read.
        loop: start again from the first image at the end, forever.
        start_s: skip the first ``start_s * fps`` images (needs ``fps``).
        max_frames: stop after delivering this many frames (None = until the end).

    The frame size is the first image's; an image of another size is resized to it (a warning is
    logged once). An image that cannot be decoded (truncated, corrupt, not an image) is skipped and
    counted (``health().skipped``; a warning names the first, a summary the rest); only a folder with
    no decodable image at all is a SourceError.

    The yielded array may be reused for the next frame.
    """

    is_live = False
    dropped = 0
    """A replay never drops frames (kept for symmetry with live sources' counter)."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        camera_id: str = "cam0",
        fps: float | None = None,
        loop: bool = False,
        start_s: float = 0.0,
        max_frames: int | None = None,
    ) -> None:
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ConfigError(f"fps must be a positive number or None, got {fps!r}")
        if start_s < 0 or not math.isfinite(start_s):
            raise ConfigError(f"start_s must be a finite number of seconds >= 0, got {start_s!r}")
        if start_s > 0 and fps is None:
            raise ConfigError("start_s on an image folder needs fps (to know how many images to skip)")
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1 or None, got {max_frames!r}")
        self.folder = Path(folder)
        self.camera_id = camera_id
        self.fps = float(fps) if fps is not None else None
        self.loop = loop
        self.max_frames = max_frames
        self.files = list_images(self.folder)
        self._start = round(start_s * fps) if fps is not None else 0
        if self._start >= len(self.files):
            raise SourceError(
                f"start offset {start_s} s skips all {len(self.files)} images of {self.folder} at {fps:g} fps"
            )
        self._health = HealthTracker()
        first = None
        for position in range(self._start, len(self.files)):
            first = self._decode(self.files[position])
            if first is not None:
                break
            self._skip(self.files[position])
        if first is None:
            raise SourceError(f"no image of {self.folder} can be decoded (all {len(self.files) - self._start} "
                              f"are corrupt, truncated or not images)")
        self._first_position = position
        self.height, self.width = int(first.shape[0]), int(first.shape[1])
        self._buffer = np.empty((self.height, self.width, 3), np.uint8)
        self._first: np.ndarray | None = as_bgr(first, width=self.width, height=self.height, out=self._buffer)
        self._warned_size = False
        self._open_mono_ns = time.monotonic_ns()
        self._iterated = False
        self._closed = False

    @staticmethod
    def _decode(path: Path) -> np.ndarray | None:
        """The decoded image, or None when it cannot be read (corrupt, truncated, not an image, gone)."""
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return image if image is not None and image.size else None

    def _skip(self, path: Path) -> None:
        self._health.skip(f"cannot decode image {path} (corrupt, truncated or not an image)")
        if self._health.skipped == 1:
            log.warning("skipping image %s: cannot decode it (corrupt, truncated or not an image); further "
                        "ones are counted", path)
        else:
            log.debug("skipping image %s: cannot decode it", path)

    def _load(self, path: Path) -> np.ndarray | None:
        image = self._decode(path)
        if image is None:
            self._skip(path)
            return None
        if (image.shape[1], image.shape[0]) != (self.width, self.height) and not self._warned_size:
            self._warned_size = True
            log.warning(
                "%s is %dx%d but the folder's first image is %dx%d: resizing it (and any other such "
                "image, without further warnings)",
                path,
                image.shape[1],
                image.shape[0],
                self.width,
                self.height,
            )
        return as_bgr(image, width=self.width, height=self.height, out=self._buffer)

    def __iter__(self) -> Iterator[tuple[FrameMeta, np.ndarray]]:
        if self._iterated:
            raise SourceError(f"image folder source {self.folder} can be iterated only once; open it again")
        self._iterated = True
        try:
            yield from self._frames()
        finally:
            self._health.end()
            if self._health.skipped:
                log.warning("%s: %d image(s) skipped as undecodable, %d delivered", self.folder,
                            self._health.skipped, self._health.frames)

    def _frames(self) -> Iterator[tuple[FrameMeta, np.ndarray]]:
        seq = 0
        period_ns = round(1e9 / self.fps) if self.fps else 0
        while True:
            for position in range(self._start, len(self.files)):
                if self._closed:
                    return
                if self._first is not None:
                    if position < self._first_position:
                        continue  # skipped (and counted) when the source was opened
                    image, self._first = self._first, None
                else:
                    image = self._load(self.files[position])
                    if image is None:
                        continue
                now_mono = time.monotonic_ns()
                self._health.frame_read(now_mono)
                pts_ns = seq * period_ns + self._start * period_ns if self.fps else now_mono - self._open_mono_ns
                yield (
                    make_meta(seq=seq, camera_id=self.camera_id, frame_index=position, pts_ns=pts_ns,
                              width=self.width, height=self.height, t_mono_ns=now_mono),
                    image,
                )
                self._health.frames += 1
                seq += 1
                if self.max_frames is not None and seq >= self.max_frames:
                    return
            if not self.loop:
                return

    def close(self) -> None:
        """Nothing stays open between frames; marks the source closed. Idempotent."""
        self._closed = True

    def __repr__(self) -> str:
        return f"ImageFolderSource({str(self.folder)!r}, {len(self.files)} images, {self.width}x{self.height})"
