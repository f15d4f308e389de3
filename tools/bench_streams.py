#!/usr/bin/env python3
"""Many streams: one multi-stream pipeline against N single-stream pipelines (issue 28, "Speed").

In one run, on this machine, with the default configuration (configs/default.yaml: refine, panoptic,
tracking, JPEG preview, lz4) unless ``--set`` says otherwise:

1. for N = 1, 2, 4, 8 streams (the dash-cam clip as N cameras), unpaced (``--speed 0``) and paced at
   25 frames/s per stream: **one** pipeline ``perception run --source cam0=CLIP --source cam1=CLIP ...``
   and **N** pipelines ``perception run --source camK=CLIP`` running side by side (separate processes,
   separate ports). Subscribers in this process (one per pipeline, a thread each) time every message
   with the host's monotonic clock, as tools/bench_pipeline.py does. Reported: aggregate and per-stream
   frames/s (min and mean) over the window in which every stream delivers (the last stream's first
   frame to the first stream's last one), capture -> subscriber latency p50/p99 over every frame,
   and memory: the peak over the run of the RSS summed over every process tree (PSS beside it: RSS
   counts the shared-memory slots and shared libraries once per process that maps them), and the CPU
   the pipelines' processes used in that window: cores busy, and CPU milliseconds per delivered frame
   (the subscribers' own decoding, in this process, is not counted). On a machine whose cores are
   all busy, aggregate frames/s can only grow by as much as the CPU per frame falls;
2. same-run ratios multi / separate (frames/s, memory) and min / mean per stream, and the targets at
   N = 4: aggregate frames/s >= 1.5x, memory <= 0.5x, no stream below 0.8x the mean;
3. tail latency from the first frame on: one stream, the clip paced at 15 frames/s, 400 frames (looped),
   nearest labels, no panoptic grouping, no tracking: p50 and p99 over all frames, p99 from frame 30 on,
   the first frame's latency; target p99 <= 1.5x p50.

Input: ../shared/data/video/solidWhiteRight.mp4 (real dash-cam, 960x540, 25 fps) when present, else the
bundled copy media/solidWhiteRight.mp4, else ``--video``. Subscribers decode every message in this
process, which shares the CPU with the pipelines (the same for both layouts).

    python tools/bench_streams.py                       # the full run (several minutes on 2 cores)
    python tools/bench_streams.py --quick               # N = 1, 2 and few frames: a smoke test
    python tools/bench_streams.py --streams 4 --frames 200 --set batch.max_size=4
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.runtime.procs import kill_group  # noqa: E402
from perception.transport.subscriber import Subscriber  # noqa: E402

CLIPS = (REPO.parent / "shared" / "data" / "video" / "solidWhiteRight.mp4", REPO / "media" / "solidWhiteRight.mp4")
TAIL = ("postprocess.upsample=nearest", "postprocess.panoptic=false", "tracking.enabled=false")
"""The tail-latency run's work: labels by nearest upsampling, no instances, no tracks."""
TARGETS = {"fps": 1.5, "memory": 0.5, "min_over_mean": 0.8, "p99_over_p50": 1.5}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- memory of process trees ------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (psutil when installed, else /proc)."""
    try:
        import psutil

        try:
            p = psutil.Process(pid)
            return [pid, *(c.pid for c in p.children(recursive=True))]
        except psutil.Error:
            return []
    except ImportError:
        children: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(d.name))
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, ()))
        return out


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB from /proc (0, 0 when it is gone)."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, pss


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class MemorySampler(threading.Thread):
    """Samples the RSS and PSS summed over the process trees of ``roots`` every ``interval_s``; keeps
    the peaks (MiB), and the CPU seconds used by the trees so far, with the time of each sample."""

    def __init__(self, roots: list[int], interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval_s = roots, interval_s
        self.peak_rss = self.peak_pss = 0.0
        self.cpu: list[tuple[int, float]] = []
        """(host monotonic ns, CPU seconds used so far by every process of the trees seen so far)."""
        self._last_cpu: dict[int, float] = {}
        """Each process's CPU seconds when last seen (a process that has exited keeps its last figure)."""
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            pids = {p for r in self.roots for p in _tree(r)}
            totals = np.sum([_memory_kib(p) for p in pids], axis=0) / 1024 if pids else (0.0, 0.0)
            self.peak_rss, self.peak_pss = max(self.peak_rss, totals[0]), max(self.peak_pss, totals[1])
            for p in pids:
                self._last_cpu[p] = max(self._last_cpu.get(p, 0.0), _cpu_s(p))
            self.cpu.append((time.monotonic_ns(), sum(self._last_cpu.values())))
            self._done.wait(self.interval_s)

    def cpu_between(self, t0_ns: int, t1_ns: int) -> float:
        """CPU seconds the trees used between two host times (linear between samples; NaN without samples)."""
        if len(self.cpu) < 2:
            return float("nan")
        ts, cs = np.array([t for t, _ in self.cpu], np.float64), np.array([c for _, c in self.cpu])
        return float(np.interp(t1_ns, ts, cs) - np.interp(t0_ns, ts, cs))

    def stop(self) -> None:
        self._done.set()
        self.join(5)


# --- one pipeline and its subscriber -------------------------------------------------------------
@dataclass
class Received:
    """What the subscriber of one pipeline got: per camera, receipt times (host monotonic ns) and
    capture -> receipt latencies (ms), in arrival order."""

    times: dict[str, list[int]] = field(default_factory=dict)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    summaries: list[dict] = field(default_factory=list)
    """Each pipeline's run summary (``perception run --json``)."""


def _subscribe(sub: Subscriber, proc: subprocess.Popen, got: Received) -> None:
    while True:
        msg = sub.recv(timeout_s=0.5)
        if msg is None:
            if sub.end is not None or proc.poll() is not None:
                while (msg := sub.recv(timeout_s=0.2)) is not None:
                    _take(got, msg)
                return
            continue
        _take(got, msg)


def _take(got: Received, msg) -> None:
    now = time.monotonic_ns()
    got.times.setdefault(msg.camera_id, []).append(now)
    got.latency_ms.setdefault(msg.camera_id, []).append((now - msg.t_capture_mono_ns) / 1e6)


def _command(sources: list[str], port: int, *, frames: int, speed: float, overrides: tuple[str, ...]) -> list[str]:
    cmd = [sys.executable, "-m", "perception.cli", "run"]
    for s in sources:
        cmd += ["--source", s]
    cmd += ["--publish", f"tcp://127.0.0.1:{port}", "--max-frames", str(frames), "--speed", f"{speed:g}", "--json",
            "--set", "publish.wait_for_subscribers=1", "--set", "publish.hwm=10000", "--set", "runtime.progress=false"]
    for kv in overrides:
        cmd += ["--set", kv]
    return cmd


def _kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        kill_group(p)


def run_pipelines(commands: list[list[str]], ports: list[int], timeout_s: float) -> tuple[Received, MemorySampler]:
    """Start the pipelines (a subscriber connected to each first), wait for all to end; raises
    SystemExit naming a pipeline that failed."""
    got, procs, subs, threads = Received(), [], [], []
    try:
        for port in ports:
            subs.append(Subscriber(address=f"tcp://127.0.0.1:{port}", rcvhwm=100000))
        for cmd in commands:
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          start_new_session=True))
        memory = MemorySampler([p.pid for p in procs])
        memory.start()
        for sub, proc in zip(subs, procs):
            threads.append(threading.Thread(target=_subscribe, args=(sub, proc, got), daemon=True))
            threads[-1].start()
        deadline = time.monotonic() + timeout_s
        outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
        for t in threads:
            t.join(30)
        memory.stop()
    finally:
        _kill(procs)
        for s in subs:
            s.close()
    for p, (_out, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise SystemExit(f"pipeline failed ({p.returncode}): {' '.join(p.args)}\n{err[-3000:]}")
    got.summaries = [json.loads(out.strip().splitlines()[-1]) for out, _err in outputs]
    return got, memory


def figures(got: Received, memory: MemorySampler, expected: int) -> dict:
    """Frames/s while every stream runs, per stream and together; latency percentiles; memory peaks.

    Rates count the frames received in the window where every stream delivers (from the last stream's
    first frame to the first stream's last frame): N pipelines that load their models one after the
    other, or a stream that ends early, would otherwise count time when fewer streams were running.
    """
    streams = [np.asarray(t, np.int64) for t in got.times.values() if t]
    lat = np.concatenate([np.asarray(v) for v in got.latency_ms.values()]) if got.latency_ms else np.zeros(0)
    t0 = max((t[0] for t in streams), default=0)
    t1 = min((t[-1] for t in streams), default=0)
    window = (t1 - t0) / 1e9
    if window > 0:  # frames after t0 up to t1: the first one at t0 opens the window
        per_stream = [int(((t > t0) & (t <= t1)).sum()) / window for t in streams]
        cpu_s = memory.cpu_between(t0, t1)
    else:
        per_stream = [float("nan")] * len(streams)
        cpu_s = float("nan")
    in_window = sum(per_stream) * window if window > 0 else 0
    return {
        "frames": int(sum(t.size for t in streams)), "expected": expected, "window_s": window,
        "fps": float(np.sum(per_stream)) if per_stream else float("nan"),
        "stream_fps_min": float(np.min(per_stream)) if per_stream else float("nan"),
        "stream_fps_mean": float(np.mean(per_stream)) if per_stream else float("nan"),
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "rss_mib": memory.peak_rss, "pss_mib": memory.peak_pss,
        "cores": cpu_s / window if window > 0 else float("nan"),
        "cpu_ms_per_frame": 1000 * cpu_s / in_window if in_window else float("nan"),
        "stage_ms": [{k: round(v, 1) for k, v in s.get("stage_ms", {}).items()} for s in got.summaries],
    }


def bench_case(video: Path, n: int, *, layout: str, speed: float, frames: int, overrides: tuple[str, ...]) -> dict:
    """N streams of ``video``: ``layout`` ``multi`` (one pipeline) or ``separate`` (N pipelines)."""
    sources = [f"cam{i}={video}" for i in range(n)]
    if layout == "multi":
        ports = [_port()]
        commands = [_command(sources, ports[0], frames=frames, speed=speed, overrides=overrides)]
    else:
        ports = [_port() for _ in range(n)]
        commands = [_command([s], p, frames=frames, speed=speed, overrides=overrides) for s, p in zip(sources, ports)]
    got, memory = run_pipelines(commands, ports, timeout_s=120 + n * frames)
    return figures(got, memory, n * frames)


def bench_tail(video: Path, *, frames: int, speed: float, overrides: tuple[str, ...]) -> dict:
    """One stream, looped, paced; latency of every frame in order."""
    port = _port()
    cmd = _command([f"cam0={video}"], port, frames=frames, speed=speed, overrides=(*TAIL, *overrides))
    cmd += ["--set", "source.loop=true"]
    got, _ = run_pipelines([cmd], [port], timeout_s=120 + frames)
    lat = np.asarray(got.latency_ms.get("cam0", []))
    if lat.size == 0:
        raise SystemExit("tail-latency run: no message received")
    late = lat[30:] if lat.size > 30 else lat
    return {"frames": int(lat.size), "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "p99_from_30_ms": float(np.percentile(late, 99)), "first_ms": float(lat[0]), "max_ms": float(lat.max()),
            "worst_frame": int(lat.argmax())}


# --- printing ---------------------------------------------------------------------------------------
def _row(n: int, pacing: str, layout: str, f: dict) -> str:
    ratio = f["stream_fps_min"] / f["stream_fps_mean"] if f["stream_fps_mean"] else float("nan")
    return (f"{n:>2}  {pacing:<8} {layout:<9} {f['fps']:>8.1f} {f['stream_fps_min']:>8.1f} "
            f"{f['stream_fps_mean']:>8.1f} {ratio:>8.2f} {f['p50_ms']:>8.1f} {f['p99_ms']:>8.1f} "
            f"{f['rss_mib']:>8.0f} {f['pss_mib']:>8.0f} {f['frames']:>5}/{f['expected']:<5} {f['window_s']:>6.1f} "
            f"{f['cores']:>6.2f} {f['cpu_ms_per_frame']:>8.1f}")


HEADER = (" N  pacing   layout       agg/s  strm min strm mean  min/mean  p50 ms   p99 ms   RSS MiB  PSS MiB "
          "frames      window s  cores  CPU ms/frame")


def ratios(results: dict) -> list[str]:
    """Same-run ratios multi / separate for each (N, pacing), and the targets at N = 4."""
    lines = []
    for (n, pacing), r in results.items():
        m, s = r["multi"], r["separate"]
        lines.append(f"N={n} {pacing:<8} multi/separate: frames/s {m['fps'] / s['fps']:.2f}x, RSS "
                     f"{m['rss_mib'] / s['rss_mib']:.2f}x, PSS {m['pss_mib'] / s['pss_mib']:.2f}x; per-stream min/mean "
                     f"multi {m['stream_fps_min'] / m['stream_fps_mean']:.2f}, separate "
                     f"{s['stream_fps_min'] / s['stream_fps_mean']:.2f}; CPU per frame "
                     f"{m['cpu_ms_per_frame'] / s['cpu_ms_per_frame']:.2f}x")
    for pacing in ("unpaced", "paced"):
        r = results.get((4, pacing))
        if r is None:
            continue
        m, s = r["multi"], r["separate"]
        checks = [("aggregate frames/s >= 1.5x separate", m["fps"] / s["fps"] >= TARGETS["fps"]),
                  ("memory (RSS) <= 0.5x separate", m["rss_mib"] / s["rss_mib"] <= TARGETS["memory"]),
                  ("no stream below 0.8x the mean",
                   m["stream_fps_min"] / m["stream_fps_mean"] >= TARGETS["min_over_mean"])]
        lines += [f"target N=4 {pacing}: {what}: {'met' if ok else 'NOT met'}" for what, ok in checks]
    return lines


def _clip(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    for p in CLIPS:
        if p.is_file():
            return p
    raise SystemExit("no input clip: give --video")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=None, help="the clip every stream replays (default: the dash-cam)")
    ap.add_argument("--streams", default="1,2,4,8", help="stream counts, comma-separated (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=100, help="frames per stream (default: %(default)s)")
    ap.add_argument("--pace", type=float, default=25.0, help="paced rate per stream, frames/s (default: %(default)s)")
    ap.add_argument("--tail-frames", type=int, default=400)
    ap.add_argument("--tail-fps", type=float, default=15.0)
    ap.add_argument("--model", type=Path, default=None, help="model.path for every pipeline (default: the config's)")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                    help="extra --set for every pipeline (both layouts)")
    ap.add_argument("--quick", action="store_true", help="N = 1, 2, 15 frames per stream, 40 tail frames")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.quick:
        args.streams, args.frames, args.tail_frames = "1,2", min(args.frames, 15), min(args.tail_frames, 40)
    video = _clip(args.video)
    cap = cv2.VideoCapture(str(video))
    clip_fps, size = cap.get(cv2.CAP_PROP_FPS) or 25.0, (int(cap.get(3)), int(cap.get(4)))
    cap.release()
    overrides = tuple(args.overrides) + ((f"model.path={args.model}",) if args.model else ())
    print(f"input: {video} ({size[0]}x{size[1]}, {clip_fps:g} fps); {os.cpu_count()} CPUs; "
          f"overrides: {' '.join(overrides) or 'none'}", flush=True)
    results: dict = {}
    print(HEADER, flush=True)
    for n in (int(x) for x in args.streams.split(",")):
        for pacing, speed in (("unpaced", 0.0), ("paced", args.pace / clip_fps)):
            r = results.setdefault((n, pacing), {})
            for layout in ("multi", "separate"):
                r[layout] = bench_case(video, n, layout=layout, speed=speed, frames=args.frames, overrides=overrides)
                print(_row(n, pacing if speed == 0 else f"{args.pace:g}/s", layout, r[layout]), flush=True)
    for line in ratios(results):
        print(line)
    for (n, pacing), r in results.items():
        print(f"stage means (ms), N={n} {pacing}, multi: {json.dumps(r['multi']['stage_ms'][0])}; separate (first): "
              f"{json.dumps(r['separate']['stage_ms'][0])}")
    tail = bench_tail(video, frames=args.tail_frames, speed=args.tail_fps / clip_fps, overrides=overrides)
    ok = tail["p99_ms"] <= TARGETS["p99_over_p50"] * tail["p50_ms"]
    print(f"tail latency, 1 stream paced at {args.tail_fps:g}/s, {tail['frames']} frames, nearest, no panoptic, no "
          f"tracking: p50 {tail['p50_ms']:.1f} ms, p99 {tail['p99_ms']:.1f} ms over all frames "
          f"({tail['p99_ms'] / tail['p50_ms']:.2f}x p50: target <= 1.5x {'met' if ok else 'NOT met'}), "
          f"p99 from frame 30 on {tail['p99_from_30_ms']:.1f} ms, first frame {tail['first_ms']:.1f} ms, "
          f"worst {tail['max_ms']:.1f} ms (frame {tail['worst_frame']})")
    if args.json:
        doc = {"cases": {f"{n}/{p}": r for (n, p), r in results.items()}, "tail": tail}
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
