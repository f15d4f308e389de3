"""Detections and frame metadata for the tracker tests."""

from __future__ import annotations

from perception.types import FrameMeta, Instance

FPS = 15.0


def meta(i: int, t_s: float | None = None) -> FrameMeta:
    """Frame ``i`` of a 640x480 stream at ``FPS`` (or captured at ``t_s`` seconds)."""
    t = round((i / FPS if t_s is None else t_s) * 1e9)
    return FrameMeta(seq=i, camera_id="test", frame_index=i, t_mono_ns=t, t_wall_ns=t, pts_ns=t, width=640, height=480)


def inst(index: int, box, *, cls: int = 8, score: float = 0.9) -> Instance:
    """A detection filling its box ``(x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = box
    return Instance(
        index=index,
        class_id=cls,
        score=score,
        box=(float(x0), float(y0), float(x1), float(y1)),
        area=int((x1 - x0) * (y1 - y0)),
        centroid=((x0 + x1) / 2, (y0 + y1) / 2),
    )
