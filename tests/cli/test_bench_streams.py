"""tools/bench_streams.py --quick: one multi-stream pipeline against separate ones, real processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.runtime.helpers import REPO, write_video
from tests.tinymodel import make_tiny_model


@pytest.mark.slow
def test_bench_streams_quick_prints_the_table_and_the_ratios(tmp_path):
    model = make_tiny_model(tmp_path)
    video = write_video(tmp_path / "clip.mp4", frames=30, size=(160, 120), fps=25)
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "tools/bench_streams.py", "--quick", "--model", str(model),
                           "--video", str(video), "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    for n in (1, 2):
        for pacing in ("unpaced", "paced"):
            assert f"N={n} {pacing:<8} multi/separate: frames/s" in text, text
    assert "tail latency, 1 stream paced at 15/s, 40 frames" in text
    doc = json.loads(out.read_text())
    assert set(doc["cases"]) == {"1/unpaced", "1/paced", "2/unpaced", "2/paced"}
    for case in doc["cases"].values():
        for layout in ("multi", "separate"):
            f = case[layout]
            assert f["frames"] == f["expected"]  # every frame of every stream reached the subscriber
            assert f["rss_mib"] > 0 and f["pss_mib"] > 0
            assert not f["cpu_ms_per_frame"] <= 0 and not f["cores"] <= 0  # positive, or NaN for a tiny window
    assert doc["cases"]["2/paced"]["multi"]["expected"] == 30
    assert doc["tail"]["frames"] == 40
