"""``perception view`` in a real subprocess against a publisher in the test."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.transport.publisher import Publisher
from perception.types import FrameResult
from tests.transport.helpers import CLASSES, make_instances, make_labels, make_meta, make_tracks

W, H = 160, 120


def _view(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "perception.cli", "view", "--no-window", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _publish_until_exit(pub: Publisher, proc: subprocess.Popen, *, preview: bool, timeout_s: float = 60.0) -> int:
    image = np.zeros((H, W, 3), np.uint8)
    image[:, :, 1] = 180
    deadline = time.monotonic() + timeout_s
    i = 0
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"perception view did not exit within {timeout_s} s")
        labels = make_labels(i, W, H)
        pub.publish(FrameResult(
            meta=make_meta(i, W, H), labels=labels, instance_map=make_instances(labels),
            frame=image if preview else None, tracks=make_tracks(), latencies_ms={"infer": 5.0}))
        i += 1
        time.sleep(0.02)  # ~50 messages/s
    return i


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot open {path}"
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.mark.parametrize("preview", [False, True])
def test_view_writes_a_video_with_n_frames(tmp_path, tcp_address, preview):
    out = tmp_path / "view.mp4"
    n = 6
    with Publisher(address=tcp_address, classes=CLASSES, preview="jpeg" if preview else "none") as pub:
        proc = _view("--connect", pub.endpoint, "--out", str(out), "--max-frames", str(n), "--timeout", "30")
        _publish_until_exit(pub, proc, preview=preview)
        stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert f"{n} frames received" in stdout
    frames = _frames(out)
    assert len(frames) == n
    assert frames[0].shape == (H, W, 3)
    road = frames[-1][H - 5, W // 2].astype(int)  # road pixel: purple (128, 64, 128) RGB
    if preview:  # blended over a green image at alpha 0.5
        assert road[1] > road[0] and road[1] > 64
    else:
        assert np.abs(road - [128, 64, 128][::-1]).max() < 30


def test_view_times_out_with_exit_1(tcp_address):
    with Publisher(address=tcp_address, classes=CLASSES) as pub:  # publishes nothing
        proc = _view("--connect", pub.endpoint, "--timeout", "0.5")
        _stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "no message on" in stderr and pub.endpoint in stderr


def test_view_rejects_bad_options():
    proc = _view("--max-frames", "0", "--timeout", "1")
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "--max-frames" in stderr
