"""The overlay video as a sink: label colours blended over the frames, tracked ids drawn, per camera."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from perception.errors import ConfigError
from perception.outputs.base import Ending, RunContext, SinkConfig
from perception.types import ClassInfo, FrameResult

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv")


class OverlayWriter:
    """Writes label colours blended over the frames (and tracked IDs) to one video file (OpenCV, mp4v)."""

    def __init__(self, *, path: str | Path, size: tuple[int, int], fps: float,
                 classes: tuple[ClassInfo, ...], alpha: float, overwrite: bool = False) -> None:
        import cv2

        from perception import viz

        self.path = refuse_existing(Path(path), overwrite=overwrite, what="output.overlay")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
        if not self._writer.isOpened():
            raise ConfigError(f"output.overlay: cannot write a video to {self.path}")
        self.size = size
        self._lut = viz.palette(classes)
        self._classes = classes
        self._alpha = alpha
        self._buf = np.empty((size[1], size[0], 3), dtype=np.uint8)
        self.frames = 0

    def write(self, frame: np.ndarray, labels: np.ndarray, tracks=(), analytics=None) -> None:
        from perception import viz

        img = viz.overlay(frame, labels, self._lut, alpha=self._alpha, out=self._buf)
        if tracks:
            img = viz.draw_tracks(img, tracks, self._classes)
        if analytics is not None:
            img = viz.draw_analytics(img, analytics, self._classes, copy=False)
        self._writer.write(img)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def refuse_existing(path: Path, *, overwrite: bool, what: str, flag: str = "--force") -> Path:
    """``path`` unchanged; ConfigError when it exists and ``overwrite`` is False (or it is a folder)."""
    if path.is_dir():
        raise ConfigError(f"{what}: {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise ConfigError(f"{what}: {path} exists; pass {flag} to overwrite it (or choose another name)")
    return path


def check_writable(path: Path, *, what: str) -> Path:
    """``path`` unchanged; ConfigError when no file can be created there (checked by creating one).

    The nearest folder of ``path`` that exists must be a folder we may write to (the missing ones are
    created when the file is opened). Run before any process starts, so a wrong path is one line.
    """
    import tempfile

    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{what}: cannot write {path}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".perception-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{what}: cannot write {path}: {folder} is not writable ({reason}); choose another "
                          f"path") from None
    return path


def camera_path(path: Path, camera_id: str, *, first: bool) -> Path:
    """The first camera gets the configured name; each other one a suffixed one (``out_cam1.mp4``)."""
    if first:
        return path
    safe = "".join(c if c.isalnum() else "_" for c in camera_id).strip("_")
    return path.with_name(f"{path.stem}_{safe}{path.suffix}")


class OverlaySink:
    """One :class:`OverlayWriter` per camera, opened at the camera's first frame (its size known then)."""

    name = "overlay"

    def __init__(self, *, path: Path, alpha: float, overwrite: bool = False) -> None:
        self.path = path
        self.alpha = alpha
        self.overwrite = overwrite
        self._run: RunContext | None = None
        self._writers: dict[str, OverlayWriter] = {}

    def open(self, run: RunContext) -> None:
        self._run = run

    def _writer(self, result: FrameResult) -> OverlayWriter:
        cam = result.meta.camera_id
        w = self._writers.get(cam)
        if w is None:
            path = camera_path(self.path, cam, first=not self._writers)
            w = self._writers[cam] = OverlayWriter(
                path=path, size=(result.meta.width, result.meta.height), fps=self._run.fps_of(cam),
                classes=self._run.classes, alpha=self.alpha, overwrite=self.overwrite,
            )
            log.info("overlay of camera %s -> %s", cam, path)
        return w

    def write(self, result: FrameResult) -> bool:
        if result.frame is None or result.frame.ndim != 3:
            return False
        self._writer(result).write(result.frame, result.labels, result.tracks, result.analytics)
        return True

    def close(self, *, reason: Ending = "end") -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()


def make_sink(config: SinkConfig) -> OverlaySink | None:
    out = config.output
    if not out.overlay:
        return None
    path = Path(out.overlay)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"'output.overlay': expected a .mp4 file name, got {out.overlay!r}")
    refuse_existing(path, overwrite=out.overwrite, what="output.overlay")  # before any process starts
    check_writable(path, what="output.overlay")
    return OverlaySink(path=path, alpha=out.overlay_alpha, overwrite=out.overwrite)
