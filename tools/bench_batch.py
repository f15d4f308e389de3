#!/usr/bin/env python3
"""``perception batch`` on this machine against ``perception run --speed 0`` on each drive in turn.

Eight drives (copies of the bundled dash-cam clip, 960x540, each cut to ``--frames`` frames with
``source.max_frames``), the default configuration (the bundled model on ONNX Runtime, refined labels,
panoptic grouping, tracking) and a Foxglove recording per drive in both modes. Prints drives per hour
and frames per second of both, the per-frame costs a drive's summary reports (decode, post-processing,
writing) and the model's own cost per frame (one ``Segmenter`` call, measured here), which
docs/batch.md scales to a fleet.

Usage: ``python tools/bench_batch.py [--drives 8] [--frames 40] [--num-cpus 2] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run([sys.executable, "-m", "perception.cli", *args], capture_output=True, text=True,
                       env=env, cwd=ROOT, check=False)
    if r.returncode != 0:
        sys.exit(f"perception {args[0]} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def _model_ms(frames: int, threads: int) -> float:
    """Median ms of one Segmenter call on a 960x540 frame (the bundled model, ONNX Runtime)."""
    import numpy as np

    from perception.config import load_config
    from perception.runtime.infer import InferenceSettings, open_segmenter

    cfg = load_config(None, [f"model.threads={threads}"])
    backend, seg = open_segmenter(InferenceSettings(model=cfg.model, model_path=str(cfg.model.resolved_path()),
                                                    batch=cfg.batch))
    frame = np.random.default_rng(0).integers(0, 256, (540, 960, 3), dtype=np.uint8)
    seg(frame)
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        seg(frame)
        times.append((time.perf_counter() - t0) * 1e3)
    backend.close()
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drives", type=int, default=8)
    ap.add_argument("--frames", type=int, default=40, help="frames per drive (source.max_frames)")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--clip", default=None, help="video to copy (default: the bundled dash-cam clip, else "
                                                 "../shared/data/video/solidWhiteRight.mp4)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from perception.paths import bundled

    clip = Path(args.clip or bundled("media/solidWhiteRight.mp4"))
    if not clip.is_file():
        clip = ROOT.parent / "shared" / "data" / "video" / "solidWhiteRight.mp4"
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        drives = []
        for i in range(args.drives):
            drives.append(work / f"drive{i}.mp4")
            shutil.copyfile(clip, drives[-1])
        common = ["--set", f"source.max_frames={args.frames}", "--set", "runtime.progress=false"]
        t0 = time.perf_counter()
        for i, d in enumerate(drives):
            _cli("run", "--source", str(d), "--speed", "0", "--record", str(work / f"run{i}.mcap"),
                 "--publish", "tcp://127.0.0.1:0", *common)
        t_run = time.perf_counter() - t0
        t0 = time.perf_counter()
        _cli("batch", *map(str, drives), "--out", str(work / "out"), "--num-cpus", str(args.num_cpus),
             "--no-progress", *common)
        t_batch = time.perf_counter() - t0
        report = json.loads((work / "out" / "report.json").read_text())
        frames = sum(e["frames"] for e in report["inputs"])
        summaries = [json.loads((Path(e["output"]) / "summary.json").read_text()) for e in report["inputs"]]
        per_frame = {k: sum(s["ms_per_frame"][k] for s in summaries) / len(summaries)
                     for k in ("decode", "post", "write", "task_cpu")}
        result = {
            "drives": args.drives, "frames": frames, "num_cpus": args.num_cpus,
            "run_sequential": {"seconds": t_run, "drives_per_hour": args.drives / t_run * 3600,
                               "frames_per_s": frames / t_run},
            "batch_ray": {"seconds": t_batch, "drives_per_hour": args.drives / t_batch * 3600,
                          "frames_per_s": frames / t_batch},
            "drive_task_ms_per_frame": per_frame,
            "model_ms_per_frame": {"threads_1": _model_ms(10, 1), "threads_2": _model_ms(10, 2)},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for name in ("run_sequential", "batch_ray"):
        r = result[name]
        print(f"{name:15s} {r['seconds']:7.1f} s  {r['drives_per_hour']:8.1f} drives/h  "
              f"{r['frames_per_s']:6.2f} frames/s")
    print("drive task, ms per frame: " + ", ".join(f"{k} {v:.1f}" for k, v in per_frame.items()))
    print("model, ms per frame: " + ", ".join(f"{k} {v:.1f}" for k, v in result["model_ms_per_frame"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
