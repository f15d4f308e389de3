#!/usr/bin/env python3
"""Soak: the pipeline on a live camera for a long time, the camera restarted now and then.

A real MJPEG-over-HTTP camera on 127.0.0.1 (``tests/sources/mjpeg_server.py``, the server the live
tests use) feeds ``perception run`` in live mode with the bundled model (or ``--model``); two
subscribers read the output (one every message, one latest-only, as a planner and a viewer would).
Every ``--restart-every`` seconds the camera goes away for ``--outage`` seconds and comes back on the
same port. Every 10 s the resident memory (RSS) of every process of the pipeline is sampled.

At the end it prints, per process, the RSS at the start (after a warm-up minute) and at the end and the
least-squares slope in MiB per hour, the frames each subscriber received, the camera's reconnects, and
what was left in /dev/shm and in the process table after the stop.

    python tools/soak.py [--minutes 30] [--restart-every 300] [--outage 5] [--model PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.runtime.procs import kill_group  # noqa: E402
from perception.transport.subscriber import Subscriber  # noqa: E402
from tests.sources.mjpeg_server import MjpegServer  # noqa: E402

STAGE_PID = re.compile(r"started stage (\S+) pid (\d+)")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB), in MiB per hour."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    return 3600 * sum((t - mt) * (v - mv) for t, v in samples) / den if den else 0.0


def _reader(address: str, latest: bool, counts: dict, key: str, stop: threading.Event) -> None:
    with Subscriber(address=address, latest_only=latest) as sub:
        while not stop.is_set():
            if sub.recv(timeout_s=0.5) is not None:
                counts[key] = counts.get(key, 0) + 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--restart-every", type=float, default=300.0, metavar="S")
    ap.add_argument("--outage", type=float, default=5.0, metavar="S")
    ap.add_argument("--model", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cam_port, pub_port = _port(), _port()
    server = MjpegServer(width=640, height=360, fps=15.0, port=cam_port)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "soak.yaml"
        model = f", path: {json.dumps(args.model)}" if args.model else ""
        cfg.write_text(f'source: {{uri: "{server.url}"}}\nmode: live\n'
                       f"publish: {{address: tcp://127.0.0.1:{pub_port}, preview: none, encoding: lz4}}\n"
                       f"runtime: {{progress: false, status_interval_s: 10}}\nmodel: {{threads: 2{model}}}\n")
        shm_before = set(os.listdir("/dev/shm"))
        proc = subprocess.Popen([sys.executable, "-m", "perception.cli", "-v", "run", str(cfg)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        log: list[str] = []
        threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
        counts: dict[str, int] = {}
        stop = threading.Event()
        address = f"tcp://127.0.0.1:{pub_port}"
        readers = [threading.Thread(target=_reader, args=(address, latest, counts, key, stop), daemon=True)
                   for latest, key in ((False, "every"), (True, "latest"))]
        for r in readers:
            r.start()
        samples: dict[str, list[tuple[float, float]]] = {}
        t0 = time.monotonic()
        next_restart = t0 + args.restart_every
        restarts = 0
        try:
            while time.monotonic() - t0 < args.minutes * 60:
                time.sleep(10)
                now = time.monotonic()
                pids = {m.group(1): int(m.group(2)) for m in STAGE_PID.finditer("".join(log))}
                pids["supervisor"] = proc.pid
                for name, pid in pids.items():
                    rss = _rss_mib(pid)
                    if rss is not None:  # a restarted stage is a new series (name#pid)
                        key = name if name == "supervisor" else f"{name}#{pid}"
                        samples.setdefault(key, []).append((now - t0, rss))
                if now >= next_restart:
                    server.stop()
                    time.sleep(args.outage)
                    server = MjpegServer(width=640, height=360, fps=15.0, port=cam_port)
                    restarts += 1
                    next_restart = time.monotonic() + args.restart_every
                if proc.poll() is not None:
                    break
        finally:
            stop.set()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_group(proc)
            server.stop()
        time.sleep(1)
        text = "".join(log)
        pids = [int(m.group(2)) for m in STAGE_PID.finditer(text)]
        left = [p for p in pids if Path(f"/proc/{p}").exists()]
        new_shm = sorted(n for n in set(os.listdir("/dev/shm")) - shm_before
                         if n.startswith((f"perception_{proc.pid}_", "sem.")))
    warm = 60.0  # the first minute is start-up: models load, buffers grow
    report = {
        "minutes": round((time.monotonic() - t0) / 60, 1), "camera_restarts": restarts, "exit": proc.returncode,
        "received": counts, "leftover_processes": len(left), "leftover_shm": new_shm,
        "processes": {name: {"rss_start_mib": round(s[0][1], 1), "rss_end_mib": round(s[-1][1], 1),
                             "slope_mib_per_h": round(_slope_per_hour([x for x in s if x[0] >= warm]), 2)}
                      for name, s in samples.items() if s},
        "reconnects_logged": len(re.findall(r"reconnect", text, flags=re.I)),
        "restarts": re.findall(r"stage \w+ failed \([^)]*\)|stream \S+: capture [^;]*; started again", text),
    }
    print(json.dumps(report, indent=None if args.json else 2))
    return 0 if not left and not new_shm else 1


if __name__ == "__main__":
    sys.exit(main())
