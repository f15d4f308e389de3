#!/usr/bin/env python
"""Time label-map upsampling (nearest / bilinear / refine) at 1920×1080 and 3840×2160.

The input is a synthetic street scene (sky, buildings, road, sidewalks, cars, poles, trees) drawn
at full resolution: its image (class colours, shading and noise) is the guide, and its label layout,
area-averaged onto the network's output grid (11 CamVid classes at stride 4 of a 480×272 input:
120×68 cells) and softened, gives realistic low-resolution logits with smooth boundaries (log-odds margin 12 inside
regions, as trained networks give).

Prints, per size and method, the median and 90th percentile over ``--runs`` calls (ms per frame),
and the median of each sub-step (``Upsampler.last_timing_ms``). Target (issue 4): refine ≤ 8 ms at
1920×1080 on the 2-core CPU.

    python tools/bench_upsample.py [--runs 50] [--grid 120x68] [--sizes 1920x1080,3840x2160]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.modelcard import CAMVID_CLASSES  # noqa: E402
from perception.postprocess.upsample import METHODS, Upsampler  # noqa: E402

SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PED, BIKE = range(11)


def street_scene(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(image_bgr uint8[H, W, 3], labels uint8[H, W])`` of a synthetic street, drawn at full size."""
    rng = np.random.default_rng(seed)
    W, H = width, height
    lab = np.full((H, W), BUILDING, np.uint8)
    horizon = int(0.45 * H)
    lab[: int(0.25 * H)] = SKY
    # road trapezoid with sidewalks on both sides
    vx = W // 2 + int(0.05 * W)
    road = np.array([[vx - 0.02 * W, horizon], [vx + 0.02 * W, horizon], [1.05 * W, H], [-0.05 * W, H]], np.int32)
    side_l = np.array([[vx - 0.02 * W, horizon], [vx - 0.05 * W, horizon], [-0.45 * W, H], [-0.05 * W, H]], np.int32)
    side_r = np.array([[vx + 0.02 * W, horizon], [vx + 0.05 * W, horizon], [1.45 * W, H], [1.05 * W, H]], np.int32)
    lab[horizon:] = ROAD
    cv2.fillPoly(lab, [side_l, side_r], PAVEMENT)
    cv2.fillPoly(lab, [road], ROAD)
    for _ in range(4):  # trees
        c = (int(rng.uniform(0.05, 0.95) * W), int(rng.uniform(0.15, 0.35) * H))
        cv2.ellipse(lab, c, (int(0.06 * W), int(0.08 * H)), 0, 0, 360, TREE, -1)
    for _ in range(5):  # poles and signs
        x = int(rng.uniform(0.05, 0.95) * W)
        cv2.rectangle(lab, (x, int(0.2 * H)), (x + max(2, W // 200), int(0.6 * H)), POLE, -1)
        cv2.rectangle(lab, (x - W // 80, int(0.2 * H)), (x + W // 80, int(0.25 * H)), SIGN, -1)
    for _ in range(3):  # cars on the road
        cx = int(rng.uniform(0.25, 0.75) * W)
        cy = int(rng.uniform(0.55, 0.8) * H)
        s = (cy - horizon) / (H - horizon)
        cv2.rectangle(lab, (cx, cy - int(0.12 * H * s)), (cx + int(0.2 * W * s), cy), CAR, -1)
    cv2.rectangle(lab, (int(0.1 * W), int(0.5 * H)), (int(0.12 * W), int(0.7 * H)), PED, -1)
    cv2.line(lab, (0, int(0.55 * H)), (int(0.3 * W), int(0.5 * H)), FENCE, max(2, H // 100))

    colors_bgr = np.array([c.color[::-1] for c in CAMVID_CLASSES], np.float32)
    img = colors_bgr[lab]
    shade = np.linspace(0.8, 1.1, H, dtype=np.float32)[:, None, None]
    img = img * shade + rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def scene_logits(labels: np.ndarray, grid: tuple[int, int], num_classes: int = 11, soften: float = 0.7,
                 margin: float = 12.0) -> np.ndarray:
    """``float32[C, h, w]`` logits: full-resolution labels area-averaged onto the grid, blurred by
    ``soften`` cells (the network's uncertainty at boundaries), scaled so that a confident cell wins
    by ``margin`` (log-odds; trained cross-entropy networks are typically 5..15 inside regions)."""
    w, h = grid
    planes = []
    for c in range(num_classes):
        p = cv2.resize((labels == c).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        if soften > 0:
            p = cv2.GaussianBlur(p, (0, 0), soften)
        planes.append(p)
    return (margin * np.stack(planes)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--grid", default="120x68", help="low-resolution grid WxH (default 120x68 = 480x272 / 4)")
    ap.add_argument("--sizes", default="1920x1080,3840x2160")
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args(argv)
    gw, gh = (int(v) for v in args.grid.lower().split("x"))
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    print(f"grid {gw}x{gh}, 11 classes, {args.runs} runs each; ms per frame (median / p90); cv2 threads "
          f"{cv2.getNumThreads()}")
    for W, H in sizes:
        image, labels = street_scene(W, H)
        logits = scene_logits(labels, (gw, gh))
        for m in args.methods.split(","):
            up = Upsampler(method=m, out_size=(W, H), num_classes=11,
                           refine_classes=(ROAD, PAVEMENT) if m == "refine" else ())
            up(logits, image)  # warm-up: builds the pixel tables
            totals, steps = [], {}
            for _ in range(args.runs):
                t0 = time.perf_counter()
                up(logits, image)
                totals.append((time.perf_counter() - t0) * 1e3)
                for k, v in up.last_timing_ms.items():
                    steps.setdefault(k, []).append(v)
            sub = ", ".join(f"{k} {np.median(v):.2f}" for k, v in steps.items() if k != "total")
            print(f"{W}x{H} {m:<8} median {np.median(totals):6.2f}  p90 {np.percentile(totals, 90):6.2f}  "
                  f"min {np.min(totals):6.2f}   (medians: {sub})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
