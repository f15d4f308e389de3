#!/usr/bin/env python
"""Cross-validation by recording: train once per CamVid sequence left out, score on that sequence.

    .venv/bin/python tools/crossval.py --config configs/training/crossval.yaml
    .venv/bin/python tools/crossval.py --config configs/training/crossval.yaml --report   # tables only

CamVid's labelled images come from three recordings (0001TP, 0006R0, 0016E5, named in each file name);
images of one recording are near-duplicates of each other, so a model scored on frames of a drive it
was trained on says little about streets it has never seen. Each fold runs ``tools/train.py --config
CONFIG --holdout-sequence SEQ --out OUT/SEQ`` in its own process (train + val minus SEQ, evaluated on
SEQ) and keeps the fold's *last* evaluation: a fixed schedule, no checkpoint picked on the fold it is
scored on. The folds' confusion matrices are pooled into one per-class IoU and mIoU (every held-out
pixel counts once), printed beside each fold's, and written to ``OUT/crossval.json``.

A fold whose ``OUT/SEQ/log.jsonl`` already holds a final evaluation is not trained again (``--retrain``
forces it), so an interrupted cross-validation continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.modelcard import CAMVID_CLASSES  # noqa: E402
from perception.models.training import scores_from_confusion  # noqa: E402

SEQUENCES = ("0001TP", "0006R0", "0016E5")
CLASS_NAMES = tuple(c.name for c in CAMVID_CLASSES[:11])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="tools/train.py config of the recipe under test")
    p.add_argument("--out", type=Path, default=REPO / "checkpoints" / "crossval")
    p.add_argument("--sequences", nargs="+", default=list(SEQUENCES), help="the folds: one left-out sequence each")
    p.add_argument("--report", action="store_true", help="only pool and print the folds already trained")
    p.add_argument("--retrain", action="store_true", help="train folds again even where a result exists")
    p.add_argument("train_args", nargs=argparse.REMAINDER,
                   help="after --: more tools/train.py options for every fold (e.g. -- --time-budget-min 15)")
    args = p.parse_args(argv)
    args.train_args = [a for a in args.train_args if a != "--"]
    return args


def fold_result(fold_dir: Path) -> dict | None:
    """The last evaluation in ``fold_dir/log.jsonl`` (None before the fold's first one)."""
    log = fold_dir / "log.jsonl"
    if not log.is_file():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "val_confusion" in r]
    return rows[-1] if rows else None


def fold_finished(fold_dir: Path) -> bool:
    return (fold_dir / "done").is_file() and fold_result(fold_dir) is not None


def _rounded(conf: np.ndarray) -> dict:
    scores = scores_from_confusion(conf)
    return {
        "miou": round(scores["miou"], 4),
        "pixel_accuracy": round(scores["pixel_accuracy"], 4),
        "per_class_iou": {c: round(v, 4) for c, v in zip(CLASS_NAMES, scores["per_class_iou"])},
    }


def pool(results: dict[str, dict]) -> dict:
    """Per-fold and pooled scores from each fold's last evaluation row."""
    confs = {seq: np.asarray(row["val_confusion"], dtype=np.int64) for seq, row in results.items()}
    folds = {
        seq: _rounded(conf) | {"epoch": results[seq]["epoch"], "minutes": results[seq]["minutes"],
                               "labelled_pixels": int(conf.sum())}
        for seq, conf in confs.items()
    }
    return {
        "folds": folds,
        "pooled": _rounded(sum(confs.values())),
        "mean_of_fold_mious": round(float(np.mean([f["miou"] for f in folds.values()])), 4),
    }


def table(report: dict) -> str:
    cols = [*report["folds"], "pooled"]
    rows = {**report["folds"], "pooled": report["pooled"]}
    lines = ["| class | " + " | ".join(f"held out {c}" if c != "pooled" else "pooled" for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for name in CLASS_NAMES:
        lines.append(f"| {name} | " + " | ".join(f"{100 * rows[c]['per_class_iou'][name]:.1f}" for c in cols) + " |")
    lines.append("| **mIoU** | " + " | ".join(f"**{100 * rows[c]['miou']:.1f}**" for c in cols) + " |")
    lines.append("| pixel accuracy | " + " | ".join(f"{100 * rows[c]['pixel_accuracy']:.1f}" for c in cols) + " |")
    return "\n".join(lines)


def run_fold(args: argparse.Namespace, seq: str) -> int:
    fold_dir = args.out / seq
    fold_dir.mkdir(parents=True, exist_ok=True)
    (fold_dir / "done").unlink(missing_ok=True)
    (fold_dir / "log.jsonl").unlink(missing_ok=True)  # a fresh fold: no rows of an earlier run
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), "--config", str(args.config),
           "--holdout-sequence", seq, "--out", str(fold_dir), *args.train_args]
    print(f"fold {seq}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    code = subprocess.call(cmd)
    if code == 0 and fold_result(fold_dir) is not None:
        (fold_dir / "done").write_text(f"{time.perf_counter() - t0:.0f} s\n")
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.config.is_file():
        print(f"crossval.py: --config {args.config} does not exist", file=sys.stderr)
        return 2
    for seq in args.sequences:
        if args.report or (fold_finished(args.out / seq) and not args.retrain):
            continue
        code = run_fold(args, seq)
        if code != 0:
            print(f"crossval.py: fold {seq} failed (exit {code}); see the output above", file=sys.stderr)
            return code
    results = {seq: fold_result(args.out / seq) for seq in args.sequences}
    missing = [seq for seq, row in results.items() if row is None]
    if missing:
        print(f"crossval.py: no evaluation yet for the folds {missing} under {args.out}", file=sys.stderr)
        return 2
    report = pool(results)
    report["config"] = str(args.config)
    report["train_args"] = args.train_args
    (args.out / "crossval.json").write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    print(f"pooled mIoU {100 * report['pooled']['miou']:.1f} (mean of the folds "
          f"{100 * report['mean_of_fold_mious']:.1f}); written to {args.out / 'crossval.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
