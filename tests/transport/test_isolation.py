"""Readers are isolated: a stuck and a slow reader next to a reading one, all in their own processes,
on a real pipeline (a paced replay, raw encoding so that queues fill fast) over TCP on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.runtime.helpers import REPO, free_port, kill_tree, start_pipeline, write_config, write_video
from tests.tinymodel import make_tiny_model

FRAMES = 150
FPS = 30.0


def _reader(mode: str, address: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "tests.transport.reader_proc", mode, address, "--idle", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model"))


def test_stuck_and_slow_readers_do_not_starve_a_reading_one(tmp_path, model):
    # 320x240 raw: 77 kB labels + 154 kB instances a message, 35 MB in all: far more than the stuck
    # reader's queues (hwm 4 + rcvhwm 4 + the kernel's socket buffers) can hold
    video = write_video(tmp_path / "clip.mp4", frames=FRAMES, size=(320, 240), fps=FPS)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    cfg = write_config(tmp_path / "c.yaml", model=model, source=str(video), port=port, mode="replay",
                       replay={"speed": 1.0}, publish={"encoding": "raw", "hwm": 4, "wait_for_subscribers": 3,
                                                       "wait_timeout_s": 60})
    pipeline = start_pipeline(cfg, "--json")
    readers = []
    try:
        readers = [_reader(mode, address) for mode in ("stuck", "slow", "read")]
        out, err = pipeline.communicate(timeout=180)
        assert pipeline.returncode == 0, err
        got, rerr = readers[2].communicate(timeout=60)
    finally:
        kill_tree(pipeline)
        for r in readers:
            r.kill()
            r.wait(10)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == FRAMES  # the pipeline went on regardless
    counts = json.loads(got.strip().splitlines()[-1])
    assert counts["last_seq"] == FRAMES - 1, rerr  # the reading one saw the end of the stream
    share = counts["received"] / FRAMES
    print(f"reading reader: {counts['received']} of {FRAMES} messages ({share:.1%}), gaps {counts['gaps']}, "
          f"missing at end {counts['missing_at_end']}; publisher saw a reader fall behind "
          f"{summary['counters']['dropped_publish']} time(s)")
    assert counts["ordered"]
    assert share >= 0.95, counts
    assert counts["first_seq"] + counts["received"] + counts["gaps"] + counts["missing_at_end"] == FRAMES
    # the stuck reader's queue filled: the publisher saw it, counted it and said so in its log
    assert summary["counters"]["dropped_publish"] >= 1, err
    assert "is not keeping up" in err
