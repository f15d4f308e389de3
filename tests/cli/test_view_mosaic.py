"""``perception view`` against a real multi-stream pipeline: a mosaic of every camera, or one with --cam."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.transport.subscriber import Subscriber
from tests.runtime.helpers import REPO, free_port, kill_tree, start_pipeline, write_config
from tests.tinymodel import make_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model"))


def _view(port: int, out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "perception.cli", "view", "--no-window", "--connect", f"tcp://127.0.0.1:{port}",
         "--out", str(out), "--timeout", "60", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot open {path}"
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return frames


def test_view_shows_every_camera_as_a_mosaic_or_one_with_cam(tmp_path, model):
    port = free_port()
    sources = [{"uri": "synthetic:num_frames=400,width=160,height=120,fps=20,seed=1", "camera_id": "front"},
               {"uri": "synthetic:num_frames=400,width=128,height=96,fps=20,seed=2", "camera_id": "rear"}]
    cfg = write_config(tmp_path / "c.yaml", model=model, source="unused", port=port,
                       publish={"wait_for_subscribers": 2, "preview": "jpeg"}, replay={"speed": 1.0})
    cfg.write_text(cfg.read_text().replace("source:\n  uri: unused\n", "") + "sources: " + json.dumps(sources) + "\n")
    mosaic_out, one_out = tmp_path / "mosaic.mp4", tmp_path / "rear.mp4"
    proc = start_pipeline(cfg, verbose=False)
    try:
        views = [_view(port, mosaic_out, "--max-frames", "12", "--settle", "1.5"),
                 _view(port, one_out, "--max-frames", "12", "--cam", "rear")]
        deadline = time.monotonic() + 120
        while any(v.poll() is None for v in views) and time.monotonic() < deadline:
            time.sleep(0.1)
        results = []
        for v in views:
            if v.poll() is None:
                v.kill()
            results.append((*v.communicate(timeout=10), v.returncode))
    finally:
        kill_tree(proc)
    (m_out, m_err, m_code), (o_out, o_err, o_code) = results
    assert m_code == 0, m_err
    assert "12 frames received" in m_out
    shown = m_out.strip().splitlines()[-1].split("messages shown by camera: ")[1]
    counts = dict(part.split() for part in shown.split(", "))
    assert set(counts) == {"front", "rear"} and all(int(n) > 0 for n in counts.values()), m_out
    frames = _frames(mosaic_out)
    assert len(frames) == 12
    assert frames[0].shape == (120, 320, 3)  # two tiles side by side, each of the first camera's size
    last = frames[-1]
    assert last[:, :160].max() > 0 and last[:, 160:].max() > 0  # both tiles drawn

    assert o_code == 0, o_err
    assert "12 frames received" in o_out and "messages shown by camera: rear" in o_out
    assert "of other cameras ignored (--cam rear)" in o_out
    one = _frames(one_out)
    assert len(one) == 12 and one[0].shape == (96, 128, 3)  # the rear camera alone, at its own size


def test_view_cam_that_never_comes_times_out_naming_the_cameras_seen(tmp_path, model):
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", model=model, port=port, replay={"speed": 1.0},
                       source="synthetic:num_frames=400,width=96,height=64,fps=20",
                       publish={"wait_for_subscribers": 1})
    proc = start_pipeline(cfg, verbose=False)
    try:
        with Subscriber(address=f"tcp://127.0.0.1:{port}") as sub:  # the pipeline is publishing
            assert sub.recv(timeout_s=90) is not None
        view = subprocess.run(
            [sys.executable, "-m", "perception.cli", "view", "--no-window", "--connect", f"tcp://127.0.0.1:{port}",
             "--cam", "side", "--timeout", "3"], capture_output=True, text=True, cwd=REPO, timeout=60)
    finally:
        kill_tree(proc)
    assert view.returncode == 1
    assert "no message of camera 'side'" in view.stderr and "cameras seen: cam0" in view.stderr, view.stderr
