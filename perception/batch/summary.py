"""A drive's summary (frames, per-class pixel shares, tracks, timing), the batch report and its table."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perception.types import FrameResult

REPORT = "report.json"


@dataclass
class DriveStats:
    """Accumulates one drive's results, frame by frame."""

    card: object
    input: str
    camera: str
    frames: int = 0
    per_camera: dict[str, int] = field(default_factory=dict)
    tracks: set = field(default_factory=set)
    pixels: np.ndarray | None = None
    decode_s: float = 0.0
    infer_wait_s: float = 0.0
    post_s: float = 0.0
    write_s: float = 0.0
    source_dropped: int = 0
    t_first_ns: int | None = None
    t_last_ns: int | None = None

    def add(self, result: FrameResult) -> None:
        meta = result.meta
        self.frames += 1
        self.per_camera[meta.camera_id] = self.per_camera.get(meta.camera_id, 0) + 1
        self.tracks.update((meta.camera_id, t.track_id) for t in result.tracks)
        n = len(self.card.classes)
        counts = np.bincount(result.labels.ravel(), minlength=n)[:n]
        self.pixels = counts if self.pixels is None else self.pixels + counts
        stamp = meta.t_rec_ns or meta.pts_ns
        self.t_first_ns = stamp if self.t_first_ns is None else self.t_first_ns
        self.t_last_ns = stamp

    def summary(self) -> dict:
        total = int(self.pixels.sum()) if self.pixels is not None else 0
        names = [c.name for c in self.card.classes]
        shares = {name: (int(c) / total if total else 0.0) for name, c in zip(names, self.pixels)} if total else {}
        busy = self.decode_s + self.post_s + self.write_s
        span = (self.t_last_ns - self.t_first_ns) / 1e9 if self.frames > 1 else 0.0
        return {
            "input": self.input,
            "status": "ok",
            "frames": self.frames,
            "frames_per_camera": self.per_camera,
            "recorded_seconds": span,
            "class_pixel_share": shares,
            "tracks": len(self.tracks),
            "tracks_per_camera": {cam: sum(1 for c, _ in self.tracks if c == cam) for cam in self.per_camera},
            "timing_s": {"decode": self.decode_s, "inference_wait": self.infer_wait_s, "post": self.post_s,
                         "write": self.write_s},
            "ms_per_frame": {"decode": _ms(self.decode_s, self.frames), "post": _ms(self.post_s, self.frames),
                             "write": _ms(self.write_s, self.frames), "task_cpu": _ms(busy, self.frames)},
            "errors": {"source_dropped_frames": self.source_dropped},
        }


def _ms(seconds: float, frames: int) -> float:
    return seconds / frames * 1e3 if frames else 0.0


# ---------------------------------------------------------------------------------- the report
def write_report(out: Path, results: list[dict], extra: dict) -> Path:
    """``DIR/report.json``: one entry per input (``input``, ``status``, ``frames``, ``error``, ...)."""
    entries = [{"input": r["input"], "status": "ok" if r["status"] == "skipped" else r["status"],
                "frames": r["frames"], "error": r["error"] or None, "skipped": r["status"] == "skipped",
                "output": r["out_dir"], "seconds": round(r["seconds"], 3)} for r in results]
    data = {**extra, "inputs": entries,
            "ok": sum(e["status"] == "ok" for e in entries), "failed": sum(e["status"] == "failed" for e in entries)}
    path = out / REPORT
    tmp = out / (REPORT + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def table(results: list[dict], width: int = 60) -> str:
    """The report as a table for the terminal."""
    rows = [("input", "status", "frames", "s", "error")]
    for r in results:
        name = r["input"] if len(r["input"]) <= width else "…" + r["input"][-(width - 1):]
        rows.append((name, r["status"], str(r["frames"]), f"{r['seconds']:.1f}", (r["error"] or "")[:100]))
    cols = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        lines.append("  ".join([row[0].ljust(cols[0]), row[1].ljust(cols[1]), row[2].rjust(cols[2]),
                                row[3].rjust(cols[3]), row[4]]).rstrip())
    return "\n".join(lines)
