#!/usr/bin/env python3
"""Run a fixed-camera video through a configuration in one process and report who was tracked, for how long.

The same components as ``perception run`` (backend → :class:`perception.runtime.post.PostProcessor` with
the configuration's ``postprocess``, ``tracking`` and ``analytics`` sections), minus the processes and
the transport, so that every frame is processed and the figures are repeatable. Prints every track
(class, first and last frame, frames matched), the tracks of each class that lived at least
``--min-frames`` frames, the **suspected id switches** (a track born within ``--switch-window`` frames
of a same-class track being lost, its first box within 1.5 box sizes of that track's last one: check
those in the video), the counts, and the mean per-stage times. Writes the overlay video (frame numbers
top-left) and, with ``--frames-dir``, the frames listed in ``--save`` as PNG to look at.

    python tools/surveillance_check.py --video vtest.avi [--config configs/surveillance.yaml] [--frames 200]
        [--out out/surveillance.mp4] [--frames-dir out/surv_frames --save 30,60,90] [--set KEY=VALUE ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True, type=Path)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "surveillance.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="configuration override")
    ap.add_argument("--model", type=Path, default=None, help="model (default: the configuration's)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="overlay video")
    ap.add_argument("--frames-dir", type=Path, default=None)
    ap.add_argument("--save", default="", help="comma-separated frame numbers to write to --frames-dir")
    ap.add_argument("--min-frames", type=int, default=20)
    ap.add_argument("--switch-window", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    return ap.parse_args()


class _Tracks:
    """First/last frame, frames matched and boxes of every reported track."""

    def __init__(self) -> None:
        self.info: dict[int, dict] = {}

    def add(self, i: int, tracks) -> None:
        for t in tracks:
            d = self.info.setdefault(t.track_id, {"id": t.track_id, "cls": t.class_id, "first": i, "hits": 0,
                                                  "first_box": t.box})
            d["last"] = i
            if t.instance_index:
                d["hits"] += 1
                d["last_box"] = t.box

    def switches(self, window: int) -> list[tuple[int, int, int]]:
        """(old id, new id, frame) pairs that look like one object changing id."""
        out = []
        tr = sorted(self.info.values(), key=lambda d: d["first"])
        for new in tr:
            for old in tr:
                if old is new or old["cls"] != new["cls"] or "last_box" not in old:
                    continue
                if not (old["last"] - 3 <= new["first"] <= old["last"] + window):
                    continue
                a, b = np.array(old["last_box"]), np.array(new["first_box"])
                size = max(a[2] - a[0], a[3] - a[1], 1.0)
                if np.hypot(*((a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2)) <= 1.5 * size:
                    out.append((old["id"], new["id"], new["first"]))
        return out


def main() -> int:
    args = _args()
    from perception import viz
    from perception.backends.factory import open_backend
    from perception.config import load_config
    from perception.inference import Segmenter
    from perception.runtime.post import PostProcessor
    from perception.types import FrameMeta

    cfg = load_config(args.config, args.set)
    model = args.model or cfg.model.resolved_path()
    backend = open_backend(model, kind="onnxruntime", threads=args.threads, input_size=cfg.model.input_size)
    seg = Segmenter(backend=backend)
    card = backend.card
    post = PostProcessor(card=card, postprocess=cfg.postprocess, tracking=cfg.tracking, analytics=cfg.analytics)
    cap = cv2.VideoCapture(str(args.video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    save = {int(v) for v in args.save.split(",") if v.strip()}
    writer, lut, classes = None, viz.palette(card.class_infos()), card.class_infos()
    tracks, sums, analytics = _Tracks(), {}, None
    for i in range(args.frames):
        ok, frame = cap.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        t0 = time.perf_counter()
        out = seg(frame)
        timings = {"inference": (time.perf_counter() - t0) * 1e3}
        meta = FrameMeta(seq=i, camera_id="cam0", frame_index=i, t_mono_ns=int(i * 1e9 / fps),
                         t_wall_ns=int(i * 1e9 / fps), pts_ns=int(i * 1e9 / fps), width=w, height=h)
        res = post.process(meta=meta, frame=frame, outputs={"semantic_logits": out.semantic_logits,
                           "center_heatmap": out.center_heatmap, "center_offsets": out.center_offsets},
                           timings_ms=timings)
        for k, v in timings.items():
            sums[k] = sums.get(k, 0.0) + v
        tracks.add(i, res.tracks)
        analytics = res.analytics
        if args.out or i in save:
            img = viz.overlay(frame, res.labels, lut, alpha=0.4)
            img = viz.draw_tracks(img, res.tracks, classes, copy=False)
            img = viz.draw_analytics(img, res.analytics, classes, copy=False)
            img = viz.draw_hud(img, [f"frame {i}"], copy=False)
            if args.out:
                if writer is None:
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    writer = cv2.VideoWriter(str(args.out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writer.write(img)
            if i in save and args.frames_dir:
                args.frames_dir.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(args.frames_dir / f"frame_{i:04d}.png"), img)
    n = i + 1
    if writer is not None:
        writer.release()
    return _report(args, card, tracks, {k: v / n for k, v in sums.items()}, analytics, n)


def _report(args, card, tracks: _Tracks, means: dict, analytics, n: int) -> int:
    from perception.analytics.counting import counts_lines

    names = {c.id: c.name for c in card.class_infos()}
    long = {}
    for d in tracks.info.values():
        if d["last"] - d["first"] + 1 >= args.min_frames:
            long.setdefault(names[d["cls"]], []).append(d["id"])
    switches = tracks.switches(args.switch_window)
    report = {
        "frames": n,
        "tracks": len(tracks.info),
        f"tracked_{args.min_frames}_frames_by_class": {k: len(v) for k, v in long.items()},
        "suspected_switches": [{"old": a, "new": b, "frame": f} for a, b, f in switches],
        "mean_ms": {k: round(v, 2) for k, v in means.items()},
        "counts": counts_lines(analytics, card.class_infos()) if analytics is not None else [],
    }
    if args.json:
        print(json.dumps(report))
        return 0
    for d in sorted(tracks.info.values(), key=lambda d: d["first"]):
        print(f"track {d['id']:4d} {names[d['cls']]:<11} frames {d['first']:4d}-{d['last']:4d} "
              f"matched {d['hits']:4d}  first box {[round(v) for v in d['first_box']]}")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
