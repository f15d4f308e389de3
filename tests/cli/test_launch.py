"""launch/: the N-camera configuration (one pipeline) and the one-pipeline-per-camera script."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from perception.config import load_config
from tests.runtime.helpers import REPO, free_port
from tests.tinymodel import make_tiny_model

CAMERAS = REPO / "launch" / "cameras.yaml"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model"))


def test_cameras_yaml_is_one_pipeline_of_several_live_cameras_with_a_control_endpoint():
    config = load_config(CAMERAS)
    streams = config.streams()
    assert len(streams) >= 2
    assert len({s.camera_id for s in streams}) == len(streams)
    assert all(s.mode == "live" for s in streams)
    assert config.batch.max_size >= 2 and config.runtime.max_streams >= len(streams)
    assert config.runtime.control.startswith("tcp://127.0.0.1:")


def test_cameras_yaml_runs_with_its_cameras_replaced_by_generated_scenes(tmp_path, model):
    """Everything of the launch configuration but the cameras (this host has none) in a real run."""
    proc = subprocess.run(
        [sys.executable, "-m", "perception.cli", "run", str(CAMERAS), "--json", "--mode", "replay", "--speed", "0",
         "--source", "front=synthetic:num_frames=8,width=128,height=96,seed=1",
         "--source", "rear=synthetic:num_frames=8,width=96,height=64,seed=2",
         "--publish", f"tcp://127.0.0.1:{free_port()}", "--set", f"model.path={model}",
         "--set", "model.backend=onnxruntime", "--set", f"runtime.control=tcp://127.0.0.1:{free_port()}",
         "--set", "runtime.progress=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {cam: (s["state"], s["frames"]) for cam, s in summary["streams"].items()} == {
        "front": ("ended", 8), "rear": ("ended", 8)}


def test_multi_camera_sh_runs_one_pipeline_per_camera_with_their_ids(tmp_path, model):
    wrapper = tmp_path / "perception"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m perception.cli "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"path": str(model), "threads": 1}, "replay": {"speed": 0},
                                      "postprocess": {"upsample": "bilinear"}, "publish": {"preview": "none"},
                                      "runtime": {"progress": False}}))
    base = free_port()
    env = {**os.environ, "PERCEPTION": str(wrapper), "CONFIG": str(config), "BASE_PORT": str(base),
           "PYTHONPATH": str(REPO)}
    sources = ["front=synthetic:num_frames=5,width=96,height=64", "synthetic:num_frames=5,width=64,height=48"]
    proc = subprocess.run(["bash", str(REPO / "launch" / "multi_camera.sh"), *sources],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"camera front (synthetic:num_frames=5,width=96,height=64) -> tcp://127.0.0.1:{base}" in proc.stderr
    assert f"camera cam1 (synthetic:num_frames=5,width=64,height=48) -> tcp://127.0.0.1:{base + 1}" in proc.stderr
