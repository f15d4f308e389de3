#!/usr/bin/env python3
"""Pipeline benchmark (issue 2): figures and same-run ratios, printed as a table.

In one run, on this machine, with the default model (or --model):

1. backend alone: preprocess + ONNX Runtime inference on one frame, frames/s;
2. baseline: a plain single-process loop  read → infer → argmax → resize → publish (ZeroMQ, raw);
3. the pipeline (three processes, shared memory), every frame as fast as possible: frames/s and the
   ratio pipeline / baseline, once doing the same work as the baseline (nearest, no instances, no
   preview, raw) and once with everything on (refine, panoptic, tracking, JPEG preview, lz4);
4. the pipeline paced at the recorded rate: capture → subscriber latency p50 / p99, measured by a
   subscriber in this (separate) process with the host's monotonic clock.

Input: ../shared/data/video/solidWhiteRight.mp4 (real dash-cam, 960×540) when present, else a
generated video of the same size.

    python tools/bench_pipeline.py [--model engines/camvid_lite0_panoptic.onnx] [--frames 200]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.backends.factory import open_backend  # noqa: E402
from perception.config import default_model_path  # noqa: E402
from perception.inference import Segmenter  # noqa: E402
from perception.transport.publisher import Publisher  # noqa: E402
from perception.transport.subscriber import Subscriber  # noqa: E402
from perception.types import FrameMeta, FrameResult  # noqa: E402

DASHCAM = REPO.parent / "shared" / "data" / "video" / "solidWhiteRight.mp4"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _input_video(tmp: Path) -> tuple[Path, str]:
    if DASHCAM.is_file():
        return DASHCAM, "solidWhiteRight.mp4 (real dash-cam, 960x540, 25 fps)"
    from perception.sources.synthetic import SyntheticSource

    path = tmp / "synthetic.mp4"
    with SyntheticSource(width=960, height=540, fps=25.0, num_frames=221) as src:
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (960, 540))
        for _, img in src:
            vw.write(img)
        vw.release()
    return path, "generated street scene (960x540, 25 fps)"


def bench_backend(model: Path, frame: np.ndarray, n: int, threads: int) -> dict:
    with open_backend(model, threads=threads) as b:
        seg = Segmenter(backend=b)
        for _ in range(5):
            seg(frame)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            seg(frame)
            times.append(time.perf_counter() - t0)
    t = np.asarray(times) * 1e3
    return {"fps": 1e3 / t.mean(), "p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "input": f"{seg.input_size[0]}x{seg.input_size[1]}"}


def bench_baseline(model: Path, video: Path, n: int, threads: int) -> dict:
    """read → infer → argmax → resize → publish, one process, one frame at a time."""
    port = _port()
    cap = cv2.VideoCapture(str(video))
    with open_backend(model, threads=threads) as b, Publisher(address=f"tcp://127.0.0.1:{port}",
                                                               classes=b.card.class_infos(), preview="none") as pub:
        seg = Segmenter(backend=b)
        count = 0
        t0 = None
        while count < n:
            ok, frame = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            t_cap = time.monotonic_ns()
            out = seg(frame)
            low = out.semantic_logits.argmax(axis=0).astype(np.uint8)
            labels = cv2.resize(low, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
            meta = FrameMeta(seq=count, camera_id="cam0", frame_index=count, t_mono_ns=t_cap, t_wall_ns=time.time_ns(),
                             pts_ns=0, width=frame.shape[1], height=frame.shape[0])
            pub.publish(FrameResult(meta=meta, labels=labels))
            count += 1
            if count == 5:
                t0 = time.perf_counter()
        elapsed = time.perf_counter() - t0
    cap.release()
    return {"fps": (n - 5) / elapsed}


SAME_WORK_AS_BASELINE = ("postprocess.upsample=nearest", "postprocess.panoptic=false", "tracking.enabled=false",
                         "publish.preview=none", "publish.encoding=raw")


def run_pipeline(model: Path, video: Path, n: int, *, speed: float, threads: int, upsample: str,
                 extra: tuple[str, ...] = ()) -> dict:
    """Runs `perception run` in a subprocess; this process subscribes and measures latency."""
    port = _port()
    cmd = [sys.executable, "-m", "perception.cli", "run", "--source", str(video), "--max-frames", str(n),
           "--publish", f"tcp://127.0.0.1:{port}", "--speed", str(speed), "--json",
           "--set", f"model.path={model}", "--set", f"model.threads={threads}",
           "--set", "publish.wait_for_subscribers=1", "--set", "runtime.progress=false",
           "--set", f"postprocess.upsample={upsample}"]
    for kv in extra:
        cmd += ["--set", kv]
    lat = []
    with Subscriber(address=f"tcp://127.0.0.1:{port}", rcvhwm=1000) as sub:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while True:
            msg = sub.recv(timeout_s=1.0)
            if msg is None:
                if proc.poll() is not None:
                    break
                continue
            lat.append((time.monotonic_ns() - msg.t_capture_mono_ns) / 1e6)
        out, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise SystemExit(f"pipeline failed ({proc.returncode}): {err}")
    summary = json.loads(out.strip().splitlines()[-1])
    la = np.asarray(lat)
    summary["sub_latency_p50_ms"] = float(np.percentile(la, 50)) if la.size else float("nan")
    summary["sub_latency_p99_ms"] = float(np.percentile(la, 99)) if la.size else float("nan")
    summary["received"] = len(lat)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2 = this CPU)")
    ap.add_argument("--upsample", default="refine", choices=("nearest", "bilinear", "refine"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video, what = _input_video(Path(tmp))
        cap = cv2.VideoCapture(str(video))
        _ok, frame = cap.read()
        cap.release()
        print(f"input: {what}; model: {args.model.name}; CPU threads for inference: {args.threads}")
        be = bench_backend(args.model, frame, args.frames, args.threads)
        base = bench_baseline(args.model, video, args.frames, args.threads)
        same = run_pipeline(args.model, video, args.frames, speed=0, threads=args.threads, upsample="nearest",
                            extra=SAME_WORK_AS_BASELINE)
        fast = run_pipeline(args.model, video, args.frames, speed=0, threads=args.threads, upsample=args.upsample,
                            extra=("publish.encoding=lz4",))
        paced = run_pipeline(args.model, video, args.frames, speed=1.0, threads=args.threads, upsample=args.upsample,
                             extra=("publish.encoding=lz4",))
    rows = [
        ("backend alone (preprocess + inference)", f"{be['fps']:.1f} frames/s",
         f"p50 {be['p50_ms']:.1f} ms, p90 {be['p90_ms']:.1f} ms at {be['input']}"),
        ("baseline: 1 process, read->infer->argmax->resize->publish", f"{base['fps']:.1f} frames/s", "nearest labels"),
        ("pipeline, 3 processes, every frame, unpaced, same work as baseline", f"{same['fps']:.1f} frames/s",
         f"ratio pipeline/baseline {same['fps'] / base['fps']:.2f}"),
        (f"pipeline, full: {args.upsample}, panoptic, tracking, JPEG preview, lz4", f"{fast['fps']:.1f} frames/s",
         f"ratio full pipeline/baseline {fast['fps'] / base['fps']:.2f}"),
        ("pipeline paced at the recorded rate", f"{paced['fps']:.1f} frames/s",
         f"capture->subscriber latency p50 {paced['sub_latency_p50_ms']:.1f} ms, "
         f"p99 {paced['sub_latency_p99_ms']:.1f} ms ({paced['received']} msgs)"),
    ]
    w = max(len(r[0]) for r in rows)
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:>16}  {r[2]}")
    print("pipeline stage means (ms):", json.dumps({k: round(v, 2) for k, v in fast["stage_ms"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
