"""tools/bench_backend.py: several models side by side and several batch sizes, on tiny real models."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.runtime.helpers import REPO
from tests.tinymodel import make_tiny_model


def test_models_side_by_side_and_batch_sizes(tmp_path):
    a = make_tiny_model(tmp_path, name="a")
    b = make_tiny_model(tmp_path, name="b", seed=1)
    proc = subprocess.run([sys.executable, "tools/bench_backend.py", "--model", str(a), "--model", str(b),
                           "--batches", "1,3", "--runs", "4", "--warmup", "1", "--rounds", "2", "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["model"], r["batch"]) for r in rows] == [(a.name, 1), (b.name, 1), (a.name, 3), (b.name, 3)]
    for r in rows:
        assert r["runs"] == 4 and r["ms_per_frame_p50"] > 0
        assert abs(r["ms_per_frame_p50"] * r["batch"] - r["ms_p50"]) < 0.02
    text = subprocess.run([sys.executable, "tools/bench_backend.py", "--model", str(a), "--model", str(b),
                           "--runs", "2", "--warmup", "0"], capture_output=True, text=True, cwd=REPO,
                          timeout=120).stdout
    assert f"{b.name} / {a.name}: p50 " in text
