#!/usr/bin/env python3
"""Track instances through the CamVid val drive and write an overlay video with track ids.

The CamVid val images (``0016E5_07959.png`` ... ``0016E5_08159.png``) are every second frame of a
30 Hz drive: a real 15 Hz sequence. Capture times are taken from the frame numbers in the file names
(``t = n / 30 s``), so a missing file would simply be a longer time step.

Per frame: :class:`perception.inference.Segmenter` runs the model; the class scores are upsampled to
the full frame (:func:`perception.postprocess.upsample.upsample_bilinear`); instances are grouped
(:class:`perception.postprocess.panoptic.PanopticGrouper`) and tracked
(:class:`perception.tracking.Tracker`). The video shows the semantic overlay, each tracked instance's
mask in a colour derived from its track id, and boxes labelled ``#id class score``.

Counting id switches without instance ground truth: the script prints every track (class, first and
last frame, frames matched) and the **suspected switches**: a confirmed track born within
``--switch-window`` frames of another track of the same class having been lost (or up to 3 frames
before it ends, a duplicate taking over), with its first box
within ``--switch-distance`` box sizes of where that lost track was last seen. Those are the places
where one object probably changed id; check them in the video (frame numbers are drawn top-left).

    python tools/track_camvid.py [--data ../shared/data/camvid/val] [--model engines/camvid_lite0_panoptic.onnx]
                                 [--out out/track_camvid.mp4] [--frames-dir out/track_camvid_frames]
                                 [--tracker KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per id (golden-ratio hue steps)."""
    hue = int((track_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 220, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "camvid" / "val")
    ap.add_argument("--model", type=Path, default=REPO / "engines" / "camvid_lite0_panoptic.onnx")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "track_camvid.mp4")
    ap.add_argument("--frames-dir", type=Path, default=None, help="also write every frame as PNG here")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--center-threshold", type=float, default=0.1)
    ap.add_argument("--min-area", type=int, default=4, help="grouping: minimum instance area, output pixels")
    ap.add_argument("--high-score", type=float, default=0.15,
                    help="tracker: instances at/above start tracks (this model's scores peak lower than 1)")
    ap.add_argument("--low-score", type=float, default=0.05, help="tracker: second-stage minimum score")
    ap.add_argument("--tracker", action="append", default=[], metavar="KEY=VALUE",
                    help="any other Tracker keyword, value read as YAML (repeatable)")
    ap.add_argument("--switch-window", type=int, default=15, help="frames: suspected-switch look-back")
    ap.add_argument("--switch-distance", type=float, default=2.0, help="box sizes: suspected-switch reach")
    a = ap.parse_args()

    from perception.backends.factory import open_backend
    from perception.cli.eval_tracking import parse_tracker_options
    from perception.errors import ConfigError
    from perception.eval.tracking_sim import build_tracker
    from perception.inference import Segmenter
    from perception.postprocess.panoptic import PanopticGrouper
    from perception.postprocess.upsample import upsample_bilinear
    from perception.tracking import relabel_instance_map
    from perception.tracking.matching import normalized_center_distance
    from perception.types import FrameMeta
    from perception.viz import draw_hud, draw_tracks, overlay, palette

    try:
        kwargs = {"high_score": a.high_score, "low_score": min(a.low_score, a.high_score)}
        kwargs.update(parse_tracker_options(a.tracker))
        tracker = build_tracker(kwargs)
    except ConfigError as exc:
        print(f"track_camvid: {exc}", file=sys.stderr)
        return 2
    files = sorted(p for p in a.data.iterdir() if p.suffix.lower() == ".png")
    if not files:
        print(f"no PNG images in {a.data}", file=sys.stderr)
        return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if a.frames_dir is not None:
        a.frames_dir.mkdir(parents=True, exist_ok=True)

    backend = open_backend(a.model, kind="onnxruntime", threads=a.threads)
    try:
        seg = Segmenter(backend=backend)
        card = backend.card
        classes = card.class_infos()
        lut = palette(classes)
        names = {c.id: c.name for c in classes}
        grouper = PanopticGrouper(
            thing_ids=card.thing_ids(), center_threshold=a.center_threshold, min_area=a.min_area
        )
        writer = None
        # per track: class, first frame, last frame, hits, first box, last box
        info: dict[int, dict] = {}
        t_model = t_group = t_track = 0.0
        for i, path in enumerate(files):
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                print(f"cannot read {path}", file=sys.stderr)
                return 2
            h, w = img.shape[:2]
            m = re.search(r"_(\d+)\.png$", path.name)
            t_ns = int(round(int(m.group(1)) / 30.0 * 1e9)) if m else int(round(i / 15.0 * 1e9))
            meta = FrameMeta(seq=i, camera_id="camvid", frame_index=i, t_mono_ns=t_ns, t_wall_ns=t_ns,
                             pts_ns=t_ns, width=w, height=h)
            t0 = time.perf_counter()
            out = seg(img)
            t1 = time.perf_counter()
            labels = upsample_bilinear(out.semantic_logits, (w, h))
            imap, instances = grouper(out.semantic_logits, out.center_heatmap, out.center_offsets, labels)
            t2 = time.perf_counter()
            tracks = tracker.update(instances, meta, imap, img)
            t3 = time.perf_counter()
            t_model, t_group, t_track = t_model + t1 - t0, t_group + t2 - t1, t_track + t3 - t2

            for tr in tracks:
                d = info.setdefault(tr.track_id, {"cls": tr.class_id, "first": i, "hits": 0, "first_box": tr.box})
                d["last"], d["last_box"] = i, tr.box
                d["hits"] += 1

            vis = overlay(img, labels, lut, alpha=0.35)
            tmap = relabel_instance_map(imap, tracks)
            for tr in tracks:  # tint each tracked mask with its id colour (a handful per frame)
                mask = tmap == ((tr.track_id - 1) % 65535 + 1)
                vis[mask] = (0.45 * vis[mask] + 0.55 * np.array(track_colour(tr.track_id))).astype(np.uint8)
            vis = draw_tracks(vis, tracks, classes, copy=False)
            vis = draw_hud(vis, [f"{path.stem}  frame {i}", f"{len(instances)} instances, {len(tracks)} tracks"],
                           copy=False)
            if writer is None:
                writer = cv2.VideoWriter(str(a.out), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (w, h))
                if not writer.isOpened():
                    print(f"cannot open a video writer for {a.out}", file=sys.stderr)
                    return 2
            writer.write(vis)
            if a.frames_dir is not None:
                cv2.imwrite(str(a.frames_dir / f"{i:03d}_{path.stem}.png"), vis)
        if writer is not None:
            writer.release()
    finally:
        backend.close()

    n = len(files)
    print(f"{n} frames -> {a.out}")
    print(f"per frame: model {1e3 * t_model / n:.1f} ms, upsample+grouping {1e3 * t_group / n:.1f} ms, "
          f"tracker {1e3 * t_track / n:.2f} ms")
    print(f"{len(info)} reported tracks:")
    print(f"  {'id':>4} {'class':<11} {'first':>5} {'last':>5} {'hits':>5}")
    for tid, d in sorted(info.items()):
        print(f"  {tid:>4} {names.get(d['cls'], d['cls']):<11} {d['first']:>5} {d['last']:>5} {d['hits']:>5}")
    suspects = []
    for tid, d in info.items():
        for oid, o in info.items():
            # born after the other one, and at most `window` frames after it was last reported (or up
            # to 3 frames before, while the old track was still alive: a duplicate taking over)
            if oid == tid or o["cls"] != d["cls"] or d["first"] <= o["first"]:
                continue
            if not (-3 <= d["first"] - o["last"] <= a.switch_window):
                continue
            dist = normalized_center_distance(np.array([o["last_box"]]), np.array([d["first_box"]]))[0, 0]
            if dist <= a.switch_distance:
                suspects.append((d["first"], oid, tid, names.get(d["cls"], d["cls"]), dist))
    print("suspected id switches (a new track near a recently lost or just-ending one of the same class): "
          f"{len(suspects)}")
    for f, oid, tid, cname, dist in sorted(suspects):
        print(f"  frame {f}: {cname} #{oid} -> #{tid} (centre {dist:.2f} box sizes from where #{oid} was last seen)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
