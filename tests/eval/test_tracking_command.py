"""``perception eval-tracking`` as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perception.cli", "eval-tracking", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_eval_tracking_json_has_the_required_keys():
    p = _run("--json", "--seed", "1", "--seeds", "2", "--frames", "40", "--width", "480", "--height", "270")
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1  # exactly one JSON object
    out = json.loads(lines[0])
    for key in ("idf1", "mota", "id_switches", "track_frames", "hota", "deta", "assa", "loca"):
        assert key in out
    assert 0.0 < out["idf1"] <= 1.0 and out["mota"] <= 1.0
    # --match source: similarity 1 for every allowed pair, so every threshold gives the same figures
    assert 0.0 < out["hota"] <= 1.0 and out["loca"] == 1.0
    assert out["hota"] == pytest.approx((out["deta"] * out["assa"]) ** 0.5, abs=1e-9)
    assert set(out["per_seed"]["1"]) >= {"hota", "idf1", "mota", "id_switches"}
    assert out["track_frames"] > 0 and isinstance(out["id_switches"], int)
    assert out["seeds"] == [1, 2] and out["settings"]["frames"] == 40


def test_eval_tracking_table_and_bad_option():
    p = _run("--frames", "20", "--width", "320", "--height", "180", "--match", "iou")
    assert p.returncode == 0, p.stderr
    assert "IDF1" in p.stdout and "HOTA" in p.stdout and "AssA" in p.stdout and "mask IoU" in p.stdout
    bad = _run("--seeds", "0")
    assert bad.returncode == 2 and "--seeds" in bad.stderr


def test_eval_tracking_in_parallel_processes_gives_the_same_figures():
    args = ("--json", "--seed", "3", "--seeds", "3", "--frames", "30", "--width", "480", "--height", "270")
    one, two = _run(*args), _run(*args, "--jobs", "2")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    for d in (a, b):
        d.pop("seconds")
    assert a == b and a["seeds"] == [3, 4, 5]
    bad = _run("--jobs", "0")
    assert bad.returncode == 2 and "--jobs" in bad.stderr
