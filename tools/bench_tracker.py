#!/usr/bin/env python3
"""Benchmark: tracker update time per frame with many instances.

Generates ``--objects`` boxes moving at constant, different velocities in a ``--width`` x ``--height``
frame (with 10 % of detections missed and small jitter, so every association stage runs), and times
``Tracker.update`` only (detections, instance maps and images are prepared before timing). Three runs
in the same process: boxes only; with the instance map (mask IoU + mask memory); and with the instance
map and the image (the default in the pipeline: mask IoU plus colour appearance). Every object has its
own colour, drawn over a noisy grey background. A fourth run adds learned re-id embeddings
(computed before timing), and the re-id embedder itself (:class:`perception.tracking.reid.ReIdEmbedder`,
bundled model, crops + ONNX Runtime on ``--reid-threads`` threads) is timed on the same frames.

    python tools/bench_tracker.py [--objects 50] [--frames 600] [--width 960] [--height 540] [--reid-threads 1]

Prints median and p99 milliseconds per update for each, and their ratios to the boxes-only update.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from perception.tracking import Tracker
from perception.types import FrameMeta, Instance


def make_frames(n_obj: int, n_frames: int, width: int, height: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.uniform(20, 60, n_obj)
    h = rng.uniform(20, 60, n_obj)
    x = rng.uniform(0, width - 60, n_obj)
    y = rng.uniform(0, height - 60, n_obj)
    vx = rng.uniform(-40, 40, n_obj)
    vy = rng.uniform(-20, 20, n_obj)
    colours = rng.integers(20, 236, (n_obj, 3)).astype(np.uint8)
    background = np.clip(rng.normal(110, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    frames = []
    for i in range(n_frames):
        t = i / 15.0
        xs = np.mod(x + vx * t, width - 60)
        ys = np.mod(y + vy * t, height - 60)
        keep = rng.random(n_obj) > 0.1
        insts = []
        imap = np.zeros((height, width), np.uint16)
        image = background.copy()
        for k, j in enumerate(np.flatnonzero(keep), start=1):
            jx, jy = rng.normal(0, 1.0, 2)
            x0, y0 = float(xs[j] + jx), float(ys[j] + jy)
            box = (x0, y0, x0 + w[j], y0 + h[j])
            ix0, iy0, ix1, iy1 = (round(v) for v in box)
            imap[iy0:iy1, ix0:ix1] = k
            image[iy0:iy1, ix0:ix1] = colours[j]
            insts.append(
                Instance(index=k, class_id=8, score=float(rng.uniform(0.3, 1.0)), box=box,
                         area=int((ix1 - ix0) * (iy1 - iy0)), centroid=(x0 + w[j] / 2, y0 + h[j] / 2))
            )
        tn = int(t * 1e9)
        meta = FrameMeta(seq=i, camera_id="bench", frame_index=i, t_mono_ns=tn, t_wall_ns=tn, pts_ns=tn,
                         width=width, height=height)
        frames.append((insts, meta, imap, image))
    return frames




def run(frames, use_masks: bool, use_image: bool, embeddings=None) -> np.ndarray:
    tr = Tracker(use_mask_iou=use_masks)
    times = []
    n_tracks = []
    for k, (insts, meta, imap, image) in enumerate(frames):
        emb = None if embeddings is None else embeddings[k]
        t0 = time.perf_counter()
        out = tr.update(insts, meta, imap if use_masks else None, image if use_image else None, embeddings=emb)
        times.append(time.perf_counter() - t0)
        n_tracks.append(len(out))
    return np.array(times[20:]) * 1e3, float(np.mean(n_tracks[20:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=50)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--height", type=int, default=540)
    ap.add_argument("--reid-threads", type=int, default=1, help="ONNX Runtime threads of the re-id embedder")
    a = ap.parse_args()
    frames = make_frames(a.objects, a.frames, a.width, a.height)
    print(f"tracker update, {a.objects} objects (10 % missed per frame), {a.frames} frames, {a.width}x{a.height}")
    from perception.tracking.reid import ReIdEmbedder

    embedder = ReIdEmbedder(threads=a.reid_threads)
    embeddings, reid_ms = [], []
    for insts, _, imap, image in frames:
        t0 = time.perf_counter()
        embeddings.append(embedder(image, imap, insts))
        reid_ms.append((time.perf_counter() - t0) * 1e3)
    res = {}
    runs = (
        ("boxes only", False, False, None),
        ("boxes + mask IoU", True, False, None),
        ("+ colour appearance", True, True, None),
        ("+ re-id embeddings", True, True, embeddings),
    )
    for name, masks, image, emb in runs:
        ms, reported = run(frames, masks, image, emb)
        res[name] = ms
        print(
            f"  {name:18s} median {np.median(ms):6.3f} ms   p99 {np.percentile(ms, 99):6.3f} ms   "
            f"max {ms.max():6.3f} ms   ({reported:.1f} tracks reported per frame)"
        )
    rm = np.array(reid_ms[20:])
    print(
        f"  re-id embedder ({embedder.model.name}, {a.reid_threads} thread(s), not part of the update): "
        f"median {np.median(rm):6.3f} ms   p99 {np.percentile(rm, 99):6.3f} ms per frame"
    )
    base = np.median(res["boxes only"])
    print(
        f"  ratios to boxes only (same frames, same run): mask IoU {np.median(res['boxes + mask IoU']) / base:.2f}x, "
        f"mask IoU + appearance {np.median(res['+ colour appearance']) / base:.2f}x, "
        f"+ re-id embeddings {np.median(res['+ re-id embeddings']) / base:.2f}x"
    )


if __name__ == "__main__":
    main()
