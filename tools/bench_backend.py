#!/usr/bin/env python
"""Benchmark model inference alone (no capture, no post-processing): frames/s and ms p50/p90.

    .venv/bin/python tools/bench_backend.py                                  # default model, its default size
    .venv/bin/python tools/bench_backend.py --sizes 480x352,384x288,320x224  # other sizes (dynamic models)
    .venv/bin/python tools/bench_backend.py --backend tensorrt               # on a GPU
    .venv/bin/python tools/bench_backend.py --model OLD.onnx --model NEW.onnx  # side by side, one run

With several ``--model``, every model is open at once and the timed runs alternate between them in
``--rounds`` rounds (so drift in the machine's load hits each alike); the ratios to the first model
are printed after the table.

Uses ``perception.backends.factory.open_backend`` (the same path the pipeline uses), ONNX Runtime with
2 intra-op threads by default. The input is a fixed random normalised tensor; the first ``--warmup``
runs are discarded. Figures from a busy machine are indicative only: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import contextlib
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


def bench(models: list[Path], *, kind: str, threads: int, size: tuple[int, int] | None, runs: int, warmup: int,
          rounds: int = 1, batch: int = 1) -> list[dict]:
    """One result per model; with several, the timed runs alternate between them in ``rounds`` rounds."""
    with contextlib.ExitStack() as stack:
        backends = [stack.enter_context(open_backend(m, kind=kind, threads=threads, input_size=size)) for m in models]
        inputs = []
        for backend in backends:
            (name,) = backend.inputs.keys()
            w, h = size or backend.card.input_size
            x = np.random.default_rng(0).standard_normal((batch, 3, h, w)).astype(np.float32)
            inputs.append({name: x})
            for _ in range(warmup):
                backend.infer(inputs[-1])
        times = [[] for _ in models]
        per_round = max(1, runs // rounds)
        for _ in range(rounds):
            for i, backend in enumerate(backends):
                for _ in range(per_round):
                    t = time.perf_counter()
                    backend.infer(inputs[i])
                    times[i].append(time.perf_counter() - t)
    out = []
    for model, backend, feed, ts in zip(models, backends, inputs, times):
        ms = np.asarray(ts) * 1000.0
        (x,) = feed.values()
        out.append({
            "model": model.name,
            "backend": backend.name,
            "size": f"{x.shape[3]}x{x.shape[2]}",
            "threads": threads,
            "runs": len(ts),
            "batch": batch,
            "ms_per_frame_p50": round(float(np.percentile(ms, 50)) / batch, 2),
            "fps": round(1000.0 * batch / float(np.mean(ms)), 1),
            "ms_p50": round(float(np.percentile(ms, 50)), 2),
            "ms_p90": round(float(np.percentile(ms, 90)), 2),
        })
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, action="append", default=None,
                   help="model to time; repeat to time several side by side (default: the bundled model)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "auto"])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (ONNX Runtime)")
    p.add_argument("--sizes", type=_sizes, default=None, help="comma-separated WxH list (default: the card's size)")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5, help="with several models: alternate in this many rounds")
    p.add_argument("--batches", default="1", help="comma-separated batch sizes (dynamic-batch models), e.g. 1,2,4: "
                   "ms per frame for each")
    p.add_argument("--json", action="store_true", help="print one JSON object per size")
    args = p.parse_args(argv)

    models = args.model or [REPO / "engines" / "camvid_lite0_panoptic.onnx"]
    sizes = args.sizes or [load_card(models[0]).input_size]
    rounds = args.rounds if len(models) > 1 else 1
    for size, batch in [(s, int(b)) for s in sizes for b in args.batches.split(",")]:
        results = bench(models, kind=args.backend, threads=args.threads, size=size, runs=args.runs,
                        warmup=args.warmup, rounds=rounds, batch=batch)
        for r in results:
            if args.json:
                print(json.dumps(r))
            else:
                print(f"{r['model']} {r['backend']} {r['size']} batch {batch} threads={r['threads']}: "
                      f"{r['fps']:.1f} frames/s, p50 {r['ms_p50']:.1f} ms per batch ({r['ms_per_frame_p50']:.1f} per "
                      f"frame), p90 {r['ms_p90']:.1f} ms ({r['runs']} runs)")
        if len(results) > 1 and not args.json:
            base = results[0]
            for r in results[1:]:
                print(f"  {r['model']} / {base['model']}: p50 {r['ms_p50'] / base['ms_p50']:.3f}x, "
                      f"frames/s {r['fps'] / base['fps']:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
