#!/usr/bin/env python3
"""Train the re-identification network on generated sequences and export it to ONNX.

    python tools/train_reid.py [--seeds 1000-1059] [--epochs 8] [--out engines/sim_reid.onnx]

Generates the crops of every detection of seeds ``--seeds`` (the detector simulator's masks: partial
and jittered views), trains :class:`perception.models.reid.ReIdNet` on their identities, exports it
and prints the largest difference between the PyTorch and ONNX Runtime embeddings. The evaluation
(``perception eval-tracking``) uses seeds 0-319 (0-159 for tuning, 160-319 held out): keep the training
seeds clear of them. The bundled ``engines/sim_reid.onnx`` was made by the defaults (about 1 min of
generation and 7 min of training on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    from tqdm import tqdm

    from perception.models.reid import (
        ReIdTrainConfig,
        embedding_agreement,
        export_reid_onnx,
        generate_crops,
        seeds_arg,
        train_reid,
    )

    d = ReIdTrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=seeds_arg, default=d.seeds, help="training seeds, e.g. 1000-1059 (default)")
    ap.add_argument("--frames", type=int, default=d.frames, help=f"frames per sequence (default {d.frames})")
    ap.add_argument("--step", type=int, default=d.step, help=f"crops from every step-th frame (default {d.step})")
    ap.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    ap.add_argument("--dim", type=int, default=d.dim, help=f"embedding size (default {d.dim})")
    ap.add_argument("--threads", type=int, default=d.threads, help=f"PyTorch threads (default {d.threads})")
    ap.add_argument("--jobs", type=int, default=d.threads, help="processes rendering sequences (default: --threads)")
    ap.add_argument("--out", type=Path, default=REPO / "engines" / "sim_reid.onnx")
    args = ap.parse_args()
    if min(args.seeds) < 160:
        print(f"train_reid: seeds below 160 are the evaluation's (got {min(args.seeds)})", file=sys.stderr)
        return 2
    cfg = ReIdTrainConfig(
        seeds=tuple(args.seeds), frames=args.frames, step=args.step, epochs=args.epochs, dim=args.dim,
        threads=args.threads,
    )
    t0 = time.perf_counter()
    with tqdm(total=len(cfg.seeds), unit="seq", desc="crops", file=sys.stderr, disable=None) as bar:
        crops, labels = generate_crops(cfg, jobs=args.jobs, progress=bar.update)
    print(f"{len(labels)} crops of {len(set(labels.tolist()))} identities in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    steps = cfg.epochs * (len(labels) // min(cfg.batch, len(labels)))
    with tqdm(total=steps, unit="step", desc="train", file=sys.stderr, disable=None, mininterval=1.0) as bar:

        def step(n: int, loss: float) -> None:
            bar.update(n)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

        net = train_reid(crops, labels, cfg, progress=step)
    print(f"trained {cfg.epochs} epochs ({steps} steps) in {time.perf_counter() - t0:.0f} s")
    path = export_reid_onnx(net, args.out, size=cfg.size)
    diff = embedding_agreement(net, path, crops[:256])
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB); ONNX Runtime vs PyTorch: max |diff| {diff:.2e}")
    return 0 if diff < 1e-3 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
