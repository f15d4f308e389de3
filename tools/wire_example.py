#!/usr/bin/env python3
"""Print the header of a real label message as JSON: the example in ``docs/wire-format.md``.

Runs the pipeline (``perception run``, the default configuration: the bundled model on the CPU, a
generated street scene) publishing on a free loopback port, subscribes, and prints the header of the
first message in which a track is matched to a mask (its ``idx`` > 0), with

* ``tracks`` cut to ``--tracks`` entries (matched ones first) and ``lat`` values rounded to 0.1 ms,
* floats rounded to 0.1 so that the example stays readable.

It also checks, for every message received, that each track's ``idx`` finds a mask of ``area`` pixels
in the instance map (the contract the document states), and says how many tracks it checked.

Usage: ``python tools/wire_example.py [--frames 30] [--encoding zstd] [--tracks 2]``
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perception.transport.subscriber import Subscriber  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rounded(value):
    if isinstance(value, float):
        return round(value, 1)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def format_header(header: dict) -> str:
    """JSON with one top-level key per line and one line per part or track: the document's layout."""
    lines = []
    for key, value in header.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            inner = ",\n   ".join(json.dumps(v) for v in value)
            lines.append(f"  {json.dumps(key)}: [\n   {inner}]")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}"


def _check(msg) -> int:
    """Tracks whose ``idx`` was checked against the instance map; raises when one does not match."""
    checked = 0
    if msg.instances is None:
        return 0
    counts = np.bincount(msg.instances.ravel(), minlength=msg.n_instances + 1)
    if counts.size > msg.n_instances + 1:
        raise SystemExit(f"seq {msg.seq}: the map holds values above ninst={msg.n_instances}")
    for t in msg.tracks:
        if t.instance_index and counts[t.instance_index] != t.area:
            raise SystemExit(f"seq {msg.seq}: track {t.track_id} idx {t.instance_index} has "
                             f"{counts[t.instance_index]} pixels, area says {t.area}")
        checked += bool(t.instance_index)
    return checked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--encoding", default="zstd", choices=("raw", "zstd", "lz4"))
    ap.add_argument("--tracks", type=int, default=2, help="tracks kept in the printed example")
    args = ap.parse_args(argv)
    port = _free_port()
    cmd = [sys.executable, "-m", "perception.cli", "run", "--source", f"synthetic:num_frames={args.frames},seed=0",
           "--publish", f"tcp://127.0.0.1:{port}", "--speed", "0", "--set", f"publish.encoding={args.encoding}",
           "--set", "publish.wait_for_subscribers=1", "--set", "publish.hwm=1000", "--set", "runtime.progress=false",
           # the bundled model scores generated scenes low: a lower bar lets tracks start
           "--set", "tracking.high_score=0.15"]
    example, telling, checked, received = None, False, 0, 0
    with Subscriber(address=f"tcp://127.0.0.1:{port}", rcvhwm=1000) as sub:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while (msg := sub.recv(timeout_s=120)) is not None:
                received += 1
                checked += _check(msg)
                matched = [t for t in msg.tracks if t.instance_index]
                # prefer a message that shows idx and id are different numbers
                if matched and (example is None or (not telling and any(t.track_id != t.instance_index
                                                                        for t in matched))):
                    example, telling = dict(msg.header), any(t.track_id != t.instance_index for t in matched)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    if proc.returncode != 0 or example is None:
        print(err, file=sys.stderr)
        print(f"no message with a matched track among {received} (pipeline exit {proc.returncode})", file=sys.stderr)
        return 1
    example["tracks"] = sorted(example["tracks"], key=lambda t: t["idx"] == 0)[: args.tracks]
    print(format_header(_rounded(example)))
    print(f"# {received} messages, {checked} matched tracks whose idx found a mask of their area", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
