"""Recording size per minute and cost per frame: Foxglove (SDK, protobuf) and ROS 2 bags against the
hand-written Foxglove JSON recorder they replace, on the same frames, in one run.

The pipeline runs once on the clip (default: the bundled dash-cam clip) and every published label
message is kept; each recorder then writes all of them, timed per frame:

* ``perception record`` path: label messages (the preview frame as input) -> JSON (the retired
  recorder, loaded from git), Foxglove SDK, ROS 2 bag;
* post-processing stage path: the same frames as FrameResults with the full-resolution frame ->
  the Foxglove sink, the ROS 2 sink, and the live server with no client connected.

    python tools/bench_recording.py [--source media/solidWhiteRight.mp4] [--baseline-rev 989c8f1]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def collect(source: str, frames: int | None) -> tuple[list, tuple]:
    """Run the pipeline on ``source`` at full speed; return every label message and the class table."""
    from perception.transport.subscriber import Subscriber
    from tests.runtime.helpers import free_port

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "perception.cli", "run", "--source", source, "--speed", "0", "--publish", address,
           "--set", "publish.hwm=1024", "--set", "publish.wait_for_subscribers=1", "--set", "runtime.progress=false"]
    if frames:
        cmd += ["--max-frames", str(frames)]
    msgs = []
    with Subscriber(address=address, rcvhwm=1024) as sub:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while True:
                msg = sub.recv(timeout_s=1.0)
                if msg is not None:
                    msgs.append(msg)
                elif sub.end is not None or proc.poll() is not None:
                    break
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
        classes = sub.classes
    return msgs, tuple(classes)


def old_recorder(rev: str):
    """The JSON recorder as it was at ``rev`` (perception/outputs/recorder.py), as a module."""
    text = subprocess.run(["git", "show", f"{rev}:perception/outputs/recorder.py"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "json_recorder.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("json_recorder", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["json_recorder"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def timed(items, write) -> list[float]:
    times = []
    for item in items:
        t0 = time.perf_counter()
        write(item)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


PASSES = 2
"""Each writer runs this many times over all frames and the fastest pass is reported: on a shared
machine a pass can lose the CPU to something else; the sizes are the same every pass."""


def best_of(make, items, write_one) -> tuple[list[float], object]:
    """``make()`` -> a writer; ``write_one(writer, item)``; the closed writer of the fastest pass."""
    best = None
    for _ in range(PASSES):
        w = make()
        times = timed(items, lambda item, w=w: write_one(w, item))
        w.close()
        if best is None or statistics.median(times) < statistics.median(best[0]):
            best = (times, w)
    return best


def results_of(msgs, video: str) -> list:
    """The messages as FrameResults with the full-resolution frame of the clip (the post stage's view)."""
    from perception.types import FrameResult

    cap = cv2.VideoCapture(video)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    return [FrameResult(meta=m.frame_meta(), labels=m.labels, instance_map=m.instances, tracks=m.tracks,
                        latencies_ms=m.latencies_ms, frame=frames[m.frame_index % len(frames)]) for m in msgs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(REPO / "media" / "solidWhiteRight.mp4"))
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--baseline-rev", default="989c8f1", help="git revision holding the JSON recorder")
    ap.add_argument("--fps", type=float, default=25.0, help="the input's frame rate, for MB per minute")
    args = ap.parse_args()

    from perception.outputs.base import RunContext
    from perception.outputs.foxglove_sink import FoxgloveSession, FoxgloveSink
    from perception.outputs.frames import OutputFrame
    from perception.outputs.recorder import open_recorder
    from perception.outputs.ros2 import Ros2BagSink

    msgs, classes = collect(args.source, args.frames)
    n = len(msgs)
    h, w = msgs[0].labels.shape
    ph, pw = msgs[0].preview.shape[:2]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    print(f"{n} frames of {args.source} ({w}x{h}; preview {pw}x{ph}); CPU: {cpu}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_rec_"))
    rows = []

    def report(name: str, path: Path | None, times: list[float]) -> None:
        size = size_of(path) if path is not None else 0
        per_min = size / n * args.fps * 60 / 1e6
        rows.append((name, statistics.median(times), statistics.fmean(times), size / 1e6, per_min))
        print(f"  {name:<46} {statistics.median(times):6.2f} ms median {statistics.fmean(times):6.2f} ms mean "
              f"{size / 1e6:8.1f} MB {per_min:8.1f} MB/min", flush=True)

    print("perception record (label messages, preview as input):")
    json_mod = old_recorder(args.baseline_rev)
    times, _ = best_of(lambda: json_mod.McapRecorder(tmp / "json.mcap", with_input=True), msgs,
                       lambda r, m: r.write(m, classes))
    report("JSON + base64 (retired, mcap writer)", tmp / "json.mcap", times)
    for fmt, out in (("foxglove", tmp / "fox.mcap"), ("ros2", tmp / "bag.mcap")):
        times, r = best_of(lambda fmt=fmt, out=out: open_recorder(out, fmt=fmt, with_input=True, overwrite=True),
                           msgs, lambda r, m: r.write(OutputFrame.from_message(m), classes))
        report(f"{fmt} ({'Foxglove SDK, protobuf' if fmt == 'foxglove' else 'rosbags, CDR'})", r.path, times)

    print("post-processing stage sinks (FrameResults, full-resolution frame):")
    results = results_of(msgs, args.source)
    run = RunContext(classes=classes, fps=args.fps, mode="replay")

    class Opened:
        def __init__(self, sink):
            self.sink = sink
            sink.open(run)

        def close(self):
            self.sink.close()

    sinks = [
        ("Foxglove sink, --record",
         lambda: FoxgloveSink(FoxgloveSession(mcap_path=tmp / "sink.mcap", overwrite=True)), tmp / "sink.mcap"),
        ("Foxglove sink, --record + --foxglove (no client)",
         lambda: FoxgloveSink(FoxgloveSession(mcap_path=tmp / "both.mcap", overwrite=True, server=("127.0.0.1", 0))),
         tmp / "both.mcap"),
        ("Foxglove sink, --foxglove alone (no client)",
         lambda: FoxgloveSink(FoxgloveSession(server=("127.0.0.1", 0))), None),
        ("ROS 2 sink, --record --format ros2",
         lambda: Ros2BagSink(path=tmp / "sinkbag", with_image=True, overwrite=True, calibrations={}), tmp / "sinkbag"),
    ]
    for name, make, path in sinks:
        times, _ = best_of(lambda make=make: Opened(make()), results, lambda o, r: o.sink.write(r))
        report(name, path, times)
    print(f"files under {tmp}")
    _ = np  # numpy is imported for the arrays the recorders get


if __name__ == "__main__":
    main()
