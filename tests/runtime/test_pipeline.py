"""The pipeline end to end: real processes, shared memory, ZeroMQ on loopback, real files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from perception.runtime.procs import running
from perception.transport.subscriber import Subscriber
from tests.runtime.helpers import (
    REPO,
    StderrReader,
    free_port,
    kill_tree,
    receive_all,
    shm_name,
    shm_segments,
    stage_pids,
    start_pipeline,
    write_config,
    write_video,
)


def test_replay_delivers_every_frame_in_order(tmp_path, model):
    video = write_video(tmp_path / "clip.mp4", frames=24, size=(160, 120))
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", model=model, source=str(video), port=port,
                       # hwm above the clip's length: an unpaced replay may outrun this Python reader, and
                       # the publisher then drops (and counts) rather than blocks (test_slow_subscriber_...)
                       publish={"wait_for_subscribers": 1, "encoding": "zstd", "hwm": 64}, replay={"speed": 0},
                       output={"overlay": str(tmp_path / "overlay.mp4")})
    before = shm_segments()
    with Subscriber(address=f"tcp://127.0.0.1:{port}") as sub:
        proc = start_pipeline(cfg, "--json")
        try:
            msgs = receive_all(sub, proc, limit=24, timeout_s=60)
            assert sub.recv(timeout_s=30) is None  # the end-of-stream message follows the last frame
            out, err = proc.communicate(timeout=60)
        finally:
            kill_tree(proc)
    assert proc.returncode == 0, err
    assert sub.end is not None and sub.end.reason == "end", err
    assert (sub.end.last_seq, sub.end.published, sub.missing_at_end) == (msgs[-1].seq, 24, 0)
    assert [m.frame_seq for m in msgs] == list(range(24))
    assert [m.seq for m in msgs] == list(range(msgs[0].seq, msgs[0].seq + 24))
    for m in msgs:
        assert (m.width, m.height) == (160, 120)
        assert m.labels.shape == (120, 160) and m.labels.dtype == np.uint8
        assert m.instances is not None and m.instances.shape == (120, 160)
        assert m.labels.max() < 11
        assert {"inference", "upsample"} <= set(m.latencies_ms)
        assert m.t_capture_mono_ns > 0
    assert sub.gaps == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == 24 and summary["counters"]["dropped_capture"] == 0
    import cv2

    cap = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    cap.release()
    assert shm_segments() <= before


def _run_to_end(cfg, *extra, timeout=120):
    proc = start_pipeline(cfg, "--json", *extra)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_tree(proc)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_latest_policy_drops_stale_frames_under_a_slow_stage(tmp_path, heavy_model):
    video = write_video(tmp_path / "clip.mp4", frames=60, size=(320, 240), fps=30)
    live = _run_to_end(write_config(tmp_path / "live.yaml", model=heavy_model, source=str(video), port=free_port(),
                                    mode="live"))
    c = live["counters"]
    assert c["captured"] == 60
    assert c["dropped_capture"] + c["dropped_post"] > 0, c
    assert live["frames"] == c["published"] < 60
    assert live["frames"] + c["dropped_capture"] + c["dropped_post"] == 60
    # the same input and model under 'every' (replay, unpaced) processes every frame
    every = _run_to_end(write_config(tmp_path / "every.yaml", model=heavy_model, source=str(video), port=free_port(),
                                     mode="replay", replay={"speed": 0}))
    assert every["frames"] == 60 and every["counters"]["dropped_capture"] == 0


def test_slow_subscriber_never_slows_the_pipeline(tmp_path, model):
    video = write_video(tmp_path / "clip.mp4", frames=200, size=(320, 240))
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", model=model, source=str(video), port=port, replay={"speed": 0},
                       publish={"wait_for_subscribers": 1, "hwm": 2})
    with Subscriber(address=f"tcp://127.0.0.1:{port}", rcvhwm=2) as sub:
        proc = start_pipeline(cfg, "--json")
        try:
            first = sub.recv(timeout_s=60)  # connected, then stop reading: a stalled consumer
            out, err = proc.communicate(timeout=120)
        finally:
            kill_tree(proc)
    assert first is not None
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == 200  # every frame processed and offered
    assert summary["counters"]["dropped_publish"] > 0  # the stalled subscriber's messages were dropped, counted


def _start_long_run(tmp_path, model, port, **sections):
    """A pipeline that would run for ever (a looping synthetic scene, live mode)."""
    cfg = write_config(tmp_path / "long.yaml", model=model, port=port, source="synthetic", mode="live",
                       source_extra={"loop": True, "options": {"num_frames": 50, "width": 320, "height": 240}},
                       **sections)
    return start_pipeline(cfg)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_everything_and_leaves_nothing(tmp_path, model, sig):
    port = free_port()
    before = shm_segments()
    with Subscriber(address=f"tcp://127.0.0.1:{port}") as sub:
        proc = _start_long_run(tmp_path, model, port)
        reader = StderrReader(proc)
        try:
            assert sub.recv(timeout_s=60) is not None, reader.text
            pids = stage_pids(reader.text)
            assert set(pids) == {"capture", "inference", "postprocess"}, reader.text
            # once every stage has attached, the segment's name is gone: nothing can leak it any more
            assert shm_name(reader.text) not in shm_segments()
            assert shm_segments() <= before
            t0 = time.monotonic()
            proc.send_signal(sig)
            proc.wait(timeout=15)
            stop_s = time.monotonic() - t0
        finally:
            kill_tree(proc)
    assert proc.returncode == 130, reader.text
    assert not any(running(p) for p in pids.values())
    assert shm_segments() <= before
    print(f"stopped in {stop_s:.2f} s")  # the 2 s budget is reported, not asserted (timing varies under load)


def test_crashed_stage_stops_the_others_and_names_itself(tmp_path, model):
    """With ``runtime.restart: never`` (with on-failure it is started again: test_survival.py)."""
    port = free_port()
    before = shm_segments()
    with Subscriber(address=f"tcp://127.0.0.1:{port}") as sub:
        proc = _start_long_run(tmp_path, model, port, runtime={"restart": "never", "progress": False,
                                                              "status_interval_s": 0.5})
        reader = StderrReader(proc)
        try:
            assert sub.recv(timeout_s=60) is not None, reader.text
            pids = stage_pids(reader.text)
            import os

            os.kill(pids["inference"], signal.SIGKILL)
            proc.wait(timeout=15)
        finally:
            kill_tree(proc)
    assert proc.returncode == 12, reader.text
    assert "stage 'inference' failed" in reader.text and "killed by signal 9" in reader.text
    assert not any(running(p) for p in pids.values())
    assert shm_segments() <= before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--source", "/nonexistent/clip.mp4"], "no such file or folder"),
        (["--set", "model.path=/nonexistent/model.onnx"], "model"),
        (["--set", "publish.encoding=gzip"], "'publish.encoding'"),
        (["--set", "tracking.reid_model=/nonexistent/reid.onnx"], "re-id model /nonexistent/reid.onnx does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, model, args, needle):
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", model=model, source="synthetic", port=port)
    before = shm_segments()
    r = subprocess.run([sys.executable, "-m", "perception.cli", "run", str(cfg), *args], capture_output=True,
                       text=True, timeout=60, cwd=REPO)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert shm_segments() <= before


def test_corrupt_video_names_the_file(tmp_path, model):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 this is not a video" * 100)
    cfg = write_config(tmp_path / "c.yaml", model=model, source=str(bad), port=free_port())
    r = subprocess.run([sys.executable, "-m", "perception.cli", "run", str(cfg)], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 11, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "broken.mp4" in lines[0], r.stderr


def _run_then_kill(tmp_path, model, kill) -> tuple[dict, set]:
    """Start a long run, wait for its first message, ``kill(proc)``, wait for every stage to be gone."""
    port = free_port()
    before = shm_segments()
    with Subscriber(address=f"tcp://127.0.0.1:{port}") as sub:
        proc = _start_long_run(tmp_path, model, port)
        reader = StderrReader(proc)
        try:
            assert sub.recv(timeout_s=60) is not None, reader.text
            pids = stage_pids(reader.text)
            kill(proc)
            proc.wait(timeout=10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(running(p) for p in pids.values()):
                time.sleep(0.1)
        finally:
            kill_tree(proc)
    return pids, before


def test_killed_supervisor_takes_its_stages_and_memory_with_it(tmp_path, model):
    # no chance to clean up: the stages must notice by themselves
    pids, before = _run_then_kill(tmp_path, model, lambda proc: proc.send_signal(signal.SIGKILL))
    assert not any(running(p) for p in pids.values())
    assert shm_segments() <= before


def test_sigkill_of_the_whole_process_group_leaks_no_shared_memory(tmp_path, model):
    # every process at once, Python's resource tracker included: nobody is left to clean up, so the
    # segment must already be nameless (unlinked once every stage attached)
    import os

    pids, before = _run_then_kill(tmp_path, model, lambda proc: os.killpg(proc.pid, signal.SIGKILL))
    assert not any(running(p) for p in pids.values())
    assert shm_segments() <= before


def test_reid_embeddings_run_in_the_post_stage(tmp_path, model):
    from perception.tracking.reid import DEFAULT_REID_MODEL

    video = write_video(tmp_path / "clip.mp4", frames=12, size=(160, 120))
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", model=model, source=str(video), port=port, replay={"speed": 0},
                       publish={"wait_for_subscribers": 1, "hwm": 64}, tracking={"reid_model": str(DEFAULT_REID_MODEL)})
    with Subscriber(address=f"tcp://127.0.0.1:{port}") as sub:
        proc = start_pipeline(cfg, "--json")
        try:
            msgs = receive_all(sub, proc, limit=12, timeout_s=60)
            _, err = proc.communicate(timeout=60)
        finally:
            kill_tree(proc)
    assert proc.returncode == 0, err
    assert len(msgs) == 12 and all("reid" in m.latencies_ms for m in msgs)
    assert all(m.instances is not None for m in msgs)
