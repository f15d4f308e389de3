#!/usr/bin/env python
"""Issue 4's measurement: does boundary refinement beat plain upsampling on CamVid?

Runs the model at about half resolution (``--input-size``, default 256×192: the nearest size a
stride-32 model accepts to 240×180), brings its scores to the labels' 480×360 by (a) nearest,
(b) bilinear, (c) refine, and prints mIoU, road IoU, sidewalk IoU and the boundary F1 of road and
sidewalk (tolerance ``--tolerance`` px, Unlabelled ignored) for each, from counts summed over the split.

Examples::

    python tools/bench_refine_camvid.py                        # default model (engines/*.onnx), val
    python tools/bench_refine_camvid.py --split train --color-sigma 16   # tune on TRAIN only
    python tools/bench_refine_camvid.py --simulate --split train             # no model needed

``--simulate`` replaces the network by the ground truth seen through the same low-resolution grid
(area-averaged one-hot labels at stride 4 of the input size, blurred, with smooth noise, turned into
logits): a model that knows every class but only at its output resolution. It isolates what
upsampling can recover geometrically; use it on the train split while no trained model exists.
Tune only on ``--split train``; val is for reporting.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.eval.datasets import open_dataset  # noqa: E402
from perception.eval.metrics import (  # noqa: E402
    DEFAULT_BOUNDARY_TOLERANCE_PX,
    BoundaryCounts,
    boundary_counts,
    confusion_matrix,
    iou_from_confusion,
    mean_ignore_nan,
)
from perception.modelcard import CAMVID_CLASSES, CardInput, CardOutput, ModelCard, load_card  # noqa: E402
from perception.postprocess.upsample import METHODS, make_upsampler  # noqa: E402

CAMVID = REPO.parent / "shared" / "data" / "camvid"
IGNORE = 11


def _default_model() -> Path | None:
    found = sorted((REPO / "engines").glob("*.onnx"))
    return found[0] if found else None


def _simulated_card() -> ModelCard:
    return ModelCard(
        name="camvid-simulated",
        input=CardInput(height=192, width=256),
        outputs=(CardOutput(name="semantic_logits", kind="semantic_logits", channels=11, stride=4),),
        classes=CAMVID_CLASSES,
        ignore_index=IGNORE,
    )


def _simulated_logits(label: np.ndarray, grid: tuple[int, int], num_classes: int, *, soften: float,
                      noise: float, margin: float = 12.0, seed: int = 0) -> np.ndarray:
    """float32[C, h, w] logits of the truth area-averaged onto the ``grid`` (w, h) cells, blurred by
    ``soften`` cells, scaled to a log-odds ``margin`` inside regions, plus smooth random fields of
    amplitude ``noise`` (log-odds) that move boundaries by fractions of a cell, as a network does."""
    import cv2

    w, h = grid
    rng = np.random.default_rng(seed)
    planes = []
    for c in range(num_classes):
        p = cv2.resize((label == c).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        if soften > 0:
            p = cv2.GaussianBlur(p, (0, 0), soften)
        if noise > 0:
            field = cv2.GaussianBlur(rng.normal(0.0, 1.0, (h, w)).astype(np.float32), (0, 0), 2.0)
            p = p + noise / margin * field / (field.std() + 1e-6)
        planes.append(p)
    return (margin * np.stack(planes)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: first engines/*.onnx)")
    ap.add_argument("--data", type=Path, default=CAMVID, help="CamVid folder (default ../shared/data/camvid)")
    ap.add_argument("--split", default="val", help="val (report) or train (tune); default val")
    ap.add_argument("--input-size", default="256x192", help="network input WxH (default 256x192)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--tolerance", type=float, default=DEFAULT_BOUNDARY_TOLERANCE_PX,
                    help=f"boundary F1 tolerance in pixels (default {DEFAULT_BOUNDARY_TOLERANCE_PX})")
    ap.add_argument("--simulate", action="store_true", help="ground truth through the low-res grid, no model")
    ap.add_argument("--sim-soften", type=float, default=0.7, help="--simulate: blur of the scores (cells)")
    ap.add_argument("--sim-noise", type=float, default=3.0, help="--simulate: smooth score noise (log-odds)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of methods")
    for name, typ in (("band-px", int), ("color-weight", float), ("color-sigma", float), ("max-color-logodds", float),
                      ("confident-logodds", float), ("min-region-px", int), ("color-pool-blocks", int)):
        ap.add_argument(f"--{name}", type=typ, default=None, help="refine parameter override")
    args = ap.parse_args(argv)

    iw, ih = (int(v) for v in args.input_size.lower().split("x"))
    overrides = {k: getattr(args, k) for k in ("band_px", "color_weight", "color_sigma", "max_color_logodds",
                                               "confident_logodds", "min_region_px", "color_pool_blocks")
                 if getattr(args, k) is not None}
    methods = [m for m in args.methods.split(",") if m]

    segmenter = backend = None
    if args.simulate:
        card = _simulated_card()
        source = f"simulated (truth at the output grid, soften {args.sim_soften}, noise {args.sim_noise})"
    else:
        model = args.model or _default_model()
        if model is None:
            print("no model: pass --model PATH or --simulate (engines/*.onnx is empty)", file=sys.stderr)
            return 2
        from perception.backends.factory import open_backend
        from perception.inference import Segmenter

        card = load_card(model)
        backend = open_backend(model, threads=args.threads, input_size=(iw, ih))
        segmenter = Segmenter(backend=backend, input_size=(iw, ih))
        source = str(model)

    C = card.num_classes
    road = card.class_id("road")
    names = {c.name.lower() for c in card.classes}
    side = card.class_id("pavement" if "pavement" in names else "sidewalk")
    data = open_dataset(args.data, split=args.split, num_classes=C, ignore_index=IGNORE, limit=args.limit)

    ups: dict[str, object] = {}
    cms = {m: np.zeros((C, C), np.int64) for m in methods}
    bcs = {m: {road: BoundaryCounts(0, 0, 0, 0), side: BoundaryCounts(0, 0, 0, 0)} for m in methods}
    times = {m: [] for m in methods}
    n = 0
    try:
        for _, image, label in data:
            H, W = label.shape
            if args.simulate:
                logits = _simulated_logits(label, (iw // 4, ih // 4), C, soften=args.sim_soften,
                                           noise=args.sim_noise, seed=n)
            else:
                logits = np.array(segmenter(image).semantic_logits)  # copy: the backend reuses buffers
            for m in methods:
                if m not in ups:
                    ups[m] = make_upsampler(m, card=card, out_size=(W, H), **(overrides if m == "refine" else {}))
                t0 = time.perf_counter()
                pred = ups[m](logits, image)
                times[m].append((time.perf_counter() - t0) * 1e3)
                cms[m] += confusion_matrix(pred, label, C, IGNORE)
                ignore = label == IGNORE
                for cid in (road, side):
                    bcs[m][cid] = bcs[m][cid] + boundary_counts(pred, label, cid, args.tolerance, ignore)
            n += 1
    finally:
        if backend is not None:
            backend.close()

    print(f"CamVid {args.split}: {n} images, model {source}, input {iw}x{ih}, "
          f"output grid {iw // 4}x{ih // 4} -> 480x360; boundary F1 tolerance {args.tolerance:g} px")
    if overrides:
        print(f"refine overrides: {overrides}")
    print(f"{'method':<9} {'mIoU':>6} {'road':>6} {'sidew':>6} {'BF road':>8} {'BF side':>8} {'ms/img':>7}")
    for m in methods:
        iou = iou_from_confusion(cms[m])
        bf_r = bcs[m][road].scores()[2]
        bf_s = bcs[m][side].scores()[2]
        print(f"{m:<9} {100 * mean_ignore_nan(iou):6.2f} {100 * iou[road]:6.2f} {100 * iou[side]:6.2f} "
              f"{100 * bf_r:8.2f} {100 * bf_s:8.2f} {np.median(times[m]):7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
