#!/usr/bin/env python
"""Benchmark model inference alone (no capture, no post-processing): frames/s and ms p50/p90.

    .venv/bin/python tools/bench_backend.py                                  # default model, its default size
    .venv/bin/python tools/bench_backend.py --sizes 480x352,384x288,320x224  # other sizes (dynamic models)
    .venv/bin/python tools/bench_backend.py --backend tensorrt               # on a GPU

Uses ``perception.backends.factory.open_backend`` (the same path the pipeline uses), ONNX Runtime with
2 intra-op threads by default. The input is a fixed random normalised tensor; the first ``--warmup``
runs are discarded. Figures from a busy machine are indicative only: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.backends.factory import open_backend  # noqa: E402
from perception.modelcard import load_card  # noqa: E402


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        w, h = (int(v) for v in part.lower().split("x"))
        out.append((w, h))
    return out


def bench(model: Path, *, kind: str, threads: int, size: tuple[int, int] | None, runs: int, warmup: int) -> dict:
    with open_backend(model, kind=kind, threads=threads, input_size=size) as backend:
        (name,) = backend.inputs.keys()
        w, h = size or backend.card.input_size
        x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
        for _ in range(warmup):
            backend.infer({name: x})
        times = np.empty(runs)
        for i in range(runs):
            t = time.perf_counter()
            backend.infer({name: x})
            times[i] = time.perf_counter() - t
    ms = times * 1000.0
    return {
        "backend": backend.name,
        "size": f"{w}x{h}",
        "threads": threads,
        "runs": runs,
        "fps": round(1000.0 / float(np.mean(ms)), 1),
        "ms_p50": round(float(np.percentile(ms, 50)), 2),
        "ms_p90": round(float(np.percentile(ms, 90)), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / "engines" / "camvid_lite0_panoptic.onnx")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "auto"])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (ONNX Runtime)")
    p.add_argument("--sizes", type=_sizes, default=None, help="comma-separated WxH list (default: the card's size)")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print one JSON object per size")
    args = p.parse_args(argv)

    card = load_card(args.model)
    sizes = args.sizes or [card.input_size]
    for size in sizes:
        r = bench(args.model, kind=args.backend, threads=args.threads, size=size, runs=args.runs, warmup=args.warmup)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{args.model.name} {r['backend']} {r['size']} threads={r['threads']}: {r['fps']:.1f} frames/s, "
                  f"p50 {r['ms_p50']:.1f} ms, p90 {r['ms_p90']:.1f} ms ({r['runs']} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
