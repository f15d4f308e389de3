#!/usr/bin/env python3
"""Start and stop the pipeline many times, every way it can be stopped, and count what is left behind.

Each cycle starts ``perception run`` (a looping generated scene, live mode, the bundled model or
``--model``) in its own process group and stops it one way, either during start-up (a random moment in
the first ``--startup-s`` seconds) or once frames flow:

* ``sigint`` / ``sigterm``: the signal to the supervisor (what Ctrl-C and ``docker stop`` do);
* ``kill-supervisor``: SIGKILL to the supervisor alone (its stages must follow it);
* ``kill-group``: SIGKILL to the whole process group (``docker kill``, systemd's final kill, the OOM
  killer): nobody is left to clean up;
* ``kill-capture`` / ``kill-inference`` / ``kill-postprocess``: SIGKILL to one stage (the supervisor
  restarts or stops it), then SIGINT to the supervisor.

After each cycle it counts leftover processes (every pid the run logged, and anything still in its
process group) and new entries in /dev/shm (the run's segments, ``perception_<its pid>_*``, and any
``sem.*`` semaphore, which multiprocessing queues leave when killed), and any traceback on stderr.

    python tools/stop_cycles.py [--cycles 100] [--model PATH] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("sigint", "sigterm", "kill-supervisor", "kill-group", "kill-capture", "kill-inference", "kill-postprocess")
STAGE_PID = re.compile(r"started stage (\S+) pid (\d+)")
GRACE_S = 10.0
"""How long the processes of a stopped run may take to be gone before they count as left behind."""
sys.path.insert(0, str(REPO))

from perception.runtime.procs import kill_group, running  # noqa: E402


def _group_members(pgid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(d.name))
    return found


def _config(tmp: Path, model: str | None) -> Path:
    cfg = tmp / "cycle.yaml"
    lines = [
        'source: {uri: "synthetic:num_frames=60,width=320,height=240", loop: true}',
        "mode: live",
        "publish: {address: tcp://127.0.0.1:0, preview: none}",
        "runtime: {progress: false, watchdog_s: 5.0}",
        "model: {threads: 1" + (f", path: {json.dumps(model)}" if model else "") + "}",
    ]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _stop(proc: subprocess.Popen, mode: str, pids: dict[str, int]) -> None:
    if mode in ("sigint", "sigterm"):
        proc.send_signal(signal.SIGINT if mode == "sigint" else signal.SIGTERM)
    elif mode == "kill-supervisor":
        proc.kill()
    elif mode == "kill-group":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        stage = mode.split("-", 1)[1]
        if stage in pids:
            os.kill(pids[stage], signal.SIGKILL)
        time.sleep(1.0)  # the supervisor notices and restarts or stops it
        proc.send_signal(signal.SIGINT)


def cycle(cfg: Path, mode: str, *, startup: bool, rng: random.Random, startup_s: float) -> dict:
    """One start and stop; what it left behind."""
    shm_before = set(os.listdir("/dev/shm"))
    proc = subprocess.Popen([sys.executable, "-m", "perception.cli", "-v", "run", str(cfg)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    err_lines: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    if startup:
        time.sleep(rng.uniform(0.05, startup_s))
    else:
        while time.monotonic() < deadline and not any("status:" in ln and "'published': 0" not in ln
                                                      for ln in list(err_lines)):
            time.sleep(0.05)
    pids = {m.group(1): int(m.group(2)) for m in STAGE_PID.finditer("".join(err_lines))}
    t_stop = time.monotonic()
    _stop(proc, mode, pids)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        kill_group(proc)
    stop_s = time.monotonic() - t_stop
    reader.join(timeout=2)
    text = "".join(err_lines)
    pids = {m.group(1): int(m.group(2)) for m in STAGE_PID.finditer(text)}
    # orphans follow their dead parent: at once when it dies (PDEATHSIG), or, for a child still importing
    # when it died, as soon as its start-up code runs; allow them GRACE_S before counting
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and (any(running(p) for p in pids.values()) or _group_members(proc.pid)):
        time.sleep(0.1)
    left = [p for p in pids.values() if running(p)] + [p for p in _group_members(proc.pid) if p not in pids.values()]
    # ours: segments named after this run's supervisor, and any POSIX semaphore (multiprocessing's queues
    # and events leave sem.* when killed); other programs' segments appearing meanwhile are not counted
    new_shm = sorted(n for n in set(os.listdir("/dev/shm")) - shm_before
                     if n.startswith((f"perception_{proc.pid}_", "sem.")))
    for p in left:  # clean up for the next cycle, after counting
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    after_stop = [ln for ln in text.splitlines() if (" I " not in ln and " W " not in ln) or "Traceback" in ln]
    return {"mode": mode, "startup": startup, "exit": proc.returncode, "stop_s": round(stop_s, 2),
            "leftover_processes": len(left), "leftover_shm": new_shm, "traceback": "Traceback" in text,
            "other_lines": len(after_stop)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--model", default=None, help="ONNX model (default: the bundled one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--startup-s", type=float, default=2.0, help="stops during start-up fall in [0, S] s")
    ap.add_argument("--json", action="store_true", help="one JSON object with every cycle")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(Path(tmp), args.model)
        for i in range(args.cycles):
            mode = MODES[i % len(MODES)]
            row = cycle(cfg, mode, startup=(i // len(MODES)) % 2 == 0, rng=rng, startup_s=args.startup_s)
            rows.append(row)
            if not args.json:
                print(f"{i + 1:>3} {mode:<17} {'start-up' if row['startup'] else 'running':<8} exit {row['exit']:>4} "
                      f"stop {row['stop_s']:>5.2f} s  leftover processes {row['leftover_processes']}  "
                      f"/dev/shm {len(row['leftover_shm'])}  traceback {row['traceback']}", flush=True)
    total = {"cycles": len(rows), "leftover_processes": sum(r["leftover_processes"] for r in rows),
             "leftover_shm": sum(len(r["leftover_shm"]) for r in rows),
             "tracebacks": sum(r["traceback"] for r in rows)}
    if args.json:
        print(json.dumps({"total": total, "cycles": rows}))
    else:
        print(f"total: {total}")
    return 0 if not (total["leftover_processes"] or total["leftover_shm"]) else 1


if __name__ == "__main__":
    sys.exit(main())
