"""Small real media files written into a test's tmp_path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

STEP = 12
"""Frame ``i`` is a flat image of grey value ``STEP * i`` (so tests can tell frames apart)."""


def frame_value(i: int) -> int:
    return (STEP * i) % 240


def write_video(
    path: Path, *, frames: int = 20, width: int = 64, height: int = 48, fps: float = 10.0, fourcc: str = "mp4v"
) -> Path:
    """Write ``frames`` flat grey frames (value ``frame_value(i)``) with OpenCV's VideoWriter."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"this OpenCV cannot write {fourcc} to {path}")
    try:
        for i in range(frames):
            writer.write(np.full((height, width, 3), frame_value(i), np.uint8))
    finally:
        writer.release()
    return path


def write_image(path: Path, value: int, *, width: int = 32, height: int = 24, channels: int = 3) -> Path:
    """Write a flat image of grey ``value`` (lossless for png/bmp)."""
    shape = (height, width) if channels == 1 else (height, width, channels)
    image = np.full(shape, value, np.uint8)
    if not cv2.imwrite(str(path), image):
        raise RuntimeError(f"cannot write {path}")
    return path
