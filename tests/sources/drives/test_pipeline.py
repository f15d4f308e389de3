"""A recorded drive through the real pipeline (processes, shared memory, ZeroMQ), recorded by
``perception record`` in another process, and the recording replayed again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from perception.sources.drives.source import DriveSource
from perception.transport.subscriber import Subscriber
from tests.runtime.helpers import REPO, free_port, kill_tree, receive_all, start_pipeline, write_config
from tests.sources.drives.bags import make_frames, write_ros2_mcap
from tests.tinymodel import make_tiny_model

N = 8


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model"))


def test_drive_through_the_pipeline_recorded_and_replayed(tmp_path, model, images, small_images):
    frames = make_frames("/cam", images[:N], encoding="rgb8")
    other = make_frames("/other", small_images[:N], encoding="jpeg", offset_ns=30_000_000)  # not selected
    drive = write_ros2_mcap(tmp_path / "drive.mcap", frames + other)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    cfg = write_config(tmp_path / "c.yaml", model=model, source=str(drive), port=port,
                       publish={"wait_for_subscribers": 2, "preview": "jpeg", "hwm": 64}, replay={"speed": 0})
    # hwm 64: at --speed 0 the whole drive is published in a burst; the default queue of 4 would drop
    # frames for the slower recorder (the publisher never blocks)
    out = tmp_path / "outputs.mcap"
    recorder = subprocess.Popen(
        [sys.executable, "-m", "perception.cli", "record", "--connect", address, "--out", str(out),
         "--with-input", "--max-frames", str(N), "--timeout", "90", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
    )
    try:
        with Subscriber(address=address) as sub:
            proc = start_pipeline(cfg, "--topic", "/cam")
            try:
                msgs = receive_all(sub, proc, limit=N)
                _, err = proc.communicate(timeout=90)
            finally:
                kill_tree(proc)
        _, rec_err = recorder.communicate(timeout=90)
    finally:
        kill_tree(recorder)
    assert proc.returncode == 0, err
    assert recorder.returncode == 0, rec_err
    assert f"recorded {N} frame(s)" in rec_err

    # every frame, in order, with its original stamp and size
    assert [m.camera_id for m in msgs] == ["/cam"] * N
    assert [m.frame_seq for m in msgs] == list(range(N))
    assert [m.t_record_ns for m in msgs] == [f.stamp_ns for f in frames]
    assert [m.pts_ns for m in msgs] == [f.log_ns - frames[0].log_ns for f in frames]
    assert all((m.width, m.height) == (96, 72) and m.labels.shape == (72, 96) for m in msgs)

    # the recording replays as a source: label images and input previews, same stamps
    for topic in ("/perception/cam/labels", "/perception/cam/input"):
        with DriveSource(out, topics=(topic,)) as src:
            metas = [m for m, _ in src]
            assert (src.width, src.height) == (96, 72)
        assert [m.t_rec_ns for m in metas] == [f.stamp_ns for f in frames], topic


def test_two_cameras_of_different_sizes_through_one_pipeline(tmp_path, model, images, small_images):
    """Several topics of one drive: each frame keeps its own size, camera id, order and stamp, and each
    camera its own instance tracker."""
    big = make_frames("/front", images[:N], encoding="bgr8")
    small = make_frames("/rear", small_images[:N], encoding="jpeg", offset_ns=30_000_000)
    drive = write_ros2_mcap(tmp_path / "two.mcap", big + small)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", model=model, source=str(drive), port=port,
                       publish={"wait_for_subscribers": 1, "hwm": 64}, replay={"speed": 0},
                       output={"overlay": str(tmp_path / "ov.mp4")})
    with Subscriber(address=f"tcp://127.0.0.1:{port}", rcvhwm=256) as sub:
        proc = start_pipeline(cfg)
        try:
            msgs = receive_all(sub, proc, limit=2 * N)
            proc.wait(timeout=60)
        finally:
            kill_tree(proc)
    assert proc.returncode == 0
    by_cam = {}
    for m in msgs:
        by_cam.setdefault(m.camera_id, []).append(m)
    assert set(by_cam) == {"/front", "/rear"}
    for cam, frames in (("/front", big), ("/rear", small)):
        got = by_cam[cam]
        assert [m.frame_seq for m in got] == list(range(N))
        assert [m.t_record_ns for m in got] == [f.stamp_ns for f in frames]
        h, w = frames[0].image.shape[:2]
        assert all((m.width, m.height) == (w, h) and m.labels.shape == (h, w) for m in got)
    assert (tmp_path / "ov.mp4").is_file() and (tmp_path / "ov_rear.mp4").is_file()
