"""``perception batch`` on a local Ray against ``perception run`` on the same drives: four drives (a ROS 1
bag, a two-camera MCAP, a ROS 2 bag, a video) and a corrupt one; the recordings are decoded and compared
(labels bit-identical, the same track ids and boxes, the same stamps), then a rerun processes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CAMVID
from tests.outputs.readers import png_ids, read_foxglove, stamp_ns
from tests.runtime.helpers import REPO, free_port, write_config, write_video
from tests.sources.drives.bags import make_frames, write_ros1_bag, write_ros2_bag, write_ros2_mcap
from tests.tinymodel import make_tiny_model

pytest.importorskip("ray")
N = 8


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "RAY_USAGE_STATS_ENABLED": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


def _perception(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perception.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=_env(), timeout=timeout)


def _decoded(path) -> dict:
    """topic -> [(log time, content)] with the label and instance maps as arrays, tracks as tuples."""
    out = {}
    for topic, msgs in read_foxglove(Path(path)).items():
        leaf = topic.rsplit("/", 1)[-1]
        if leaf in ("labels", "instances"):
            out[topic] = [(m.log_time, stamp_ns(m.msg.timestamp), png_ids(m.msg.data)) for m in msgs]
        elif leaf == "tracks":
            out[topic] = [(m.log_time, m.msg.frame_seq, [(t.id, t.class_id, round(t.score, 6)) for t in m.msg.tracks])
                          for m in msgs]
    return out


def _same(ref: dict, got: dict, *, stamps: bool) -> None:
    assert sorted(ref) == sorted(got)
    for topic, rmsgs in ref.items():
        gmsgs = got[topic]
        assert len(gmsgs) == len(rmsgs), topic
        for r, g in zip(rmsgs, gmsgs):
            if stamps:
                assert r[:-1] == g[:-1], topic
            if isinstance(r[-1], np.ndarray):
                assert np.array_equal(r[-1], g[-1]), topic
            else:
                assert r[-1] == g[-1], topic


@pytest.fixture(scope="module")
def drives(tmp_path_factory, images, small_images):
    d = tmp_path_factory.mktemp("drives")
    one = write_ros1_bag(d / "one.bag", make_frames("/cam", images[:N]))
    two = write_ros2_mcap(d / "two.mcap", make_frames("/front", images[:N], encoding="rgb8")
                          + make_frames("/rear", small_images[:N], encoding="jpeg", offset_ns=30_000_000))
    three = write_ros2_bag(d / "three", make_frames("/cam", images[::-1][:N], encoding="bgr8"))
    video = write_video(d / "four.mp4", frames=12, size=(96, 72))
    broken = d / "broken.bag"
    broken.write_bytes(b"#ROSBAG V2.0\n" + bytes(range(256)) * 8)
    return [one, two, three, video], broken


def test_batch_equals_run_and_a_rerun_skips(tmp_path, drives, images):
    good, broken = drives
    model = make_tiny_model(tmp_path / "model")
    cfg = write_config(tmp_path / "c.yaml", model=model, source="synthetic", port=free_port(),
                       tracking={"high_score": 0.05, "low_score": 0.01})  # the tiny model's scores are low
    refs = []
    for i, drive in enumerate(good):
        ref = tmp_path / f"ref{i}.mcap"
        r = _perception("run", str(cfg), "--source", str(drive), "--speed", "0", "--record", str(ref))
        assert r.returncode == 0, r.stderr
        refs.append(ref)

    out = tmp_path / "out"
    listing = tmp_path / "drives.txt"
    listing.write_text(f"# three drives by name, one by a glob\n{good[0]}\n{good[1]}\n{good[2]}\n")
    args = ["batch", f"@{listing}", str(good[3].parent / "*.mp4"), str(broken), "--out", str(out),
            "--config", str(cfg), "--num-cpus", "2", "--no-progress"]
    r = _perception(*args, timeout=240)
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads((out / "report.json").read_text())
    by_input = {e["input"]: e for e in report["inputs"]}
    assert [by_input[str(d)]["status"] for d in good] == ["ok"] * 4
    failed = by_input[str(broken)]
    assert failed["status"] == "failed" and failed["frames"] == 0 and failed["error"]
    assert "broken.bag" in r.stdout and "failed" in r.stdout  # the table

    tracked = 0
    for drive, ref in zip(good, refs):
        folder = by_input[str(drive)]["output"]
        got = _decoded(os.path.join(folder, "recording.mcap"))
        expected = _decoded(ref)
        # a video has no stamps of its own: its frames are stamped with the wall clock of the run
        _same(expected, got, stamps=drive.suffix != ".mp4")
        tracked += sum(len(m[-1]) for topic, msgs in expected.items() if topic.endswith("tracks") for m in msgs)
        summary = json.loads(open(os.path.join(folder, "summary.json")).read())
        assert summary["frames"] == by_input[str(drive)]["frames"] > 0
        assert abs(sum(summary["class_pixel_share"].values()) - 1) < 1e-9
    if (CAMVID / "val").is_dir():  # on CamVid frames the tiny model finds things: track ids are compared too
        assert tracked > 0
    two = json.loads(open(os.path.join(by_input[str(good[1])]["output"], "summary.json")).read())
    assert two["frames_per_camera"] == {"/front": N, "/rear": N}

    r = _perception(*args, timeout=240)  # a rerun: every good drive is complete, the broken one fails again
    assert r.returncode == 1, r.stderr
    again = {e["input"]: e for e in json.loads((out / "report.json").read_text())["inputs"]}
    assert all(again[str(d)]["skipped"] and again[str(d)]["status"] == "ok" for d in good)
    assert "0 processed" in r.stderr and "4 skipped" in r.stderr


def test_usage_errors_exit_2(tmp_path):
    r = _perception("batch", str(tmp_path / "nothing-*.bag"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "matches no file" in r.stderr
    r = _perception("batch", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no drive" in r.stderr
