"""Many streams in one pipeline: real processes, real sockets on 127.0.0.1, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from perception.backends.factory import open_backend
from perception.inference import Segmenter
from perception.runtime.control import request
from perception.transport.subscriber import Subscriber
from tests.runtime.helpers import (
    REPO,
    StderrReader,
    free_port,
    kill_tree,
    receive_all,
    start_pipeline,
    write_config,
    write_video,
)


def _image_folder(path, *, n: int, size: tuple[int, int]):
    path.mkdir()
    w, h = size
    for i in range(n):
        img = np.full((h, w, 3), 40 + 10 * i, np.uint8)
        img[h // 2 :] = (90, 90, 90)
        cv2.imwrite(str(path / f"img{i:03d}.png"), img)
    return path


def _by_camera(msgs) -> dict[str, list]:
    out: dict[str, list] = {}
    for m in msgs:
        out.setdefault(m.camera_id, []).append(m)
    return out


def test_three_sources_of_different_kinds_and_sizes_in_one_run(tmp_path, model):
    video = write_video(tmp_path / "clip.mp4", frames=20, size=(160, 120))
    folder = _image_folder(tmp_path / "imgs", n=12, size=(96, 64))
    port = free_port()
    sources = [{"uri": str(video), "camera_id": "front"}, {"uri": str(folder), "camera_id": "side", "fps": 10},
               {"uri": "synthetic:num_frames=15,width=128,height=96,seed=1"}]
    cfg = write_config(tmp_path / "c.yaml", model=model, source="unused", port=port, replay={"speed": 0},
                       publish={"wait_for_subscribers": 1, "hwm": 64}, batch={"max_size": 3})
    text = cfg.read_text().replace("source:\n  uri: unused\n", "")
    cfg.write_text(text + "sources: " + json.dumps(sources) + "\n")
    with Subscriber(address=f"tcp://127.0.0.1:{port}", rcvhwm=256) as sub:
        proc = start_pipeline(cfg, "--json")
        try:
            msgs = receive_all(sub, proc, limit=47, timeout_s=90)
            out, err = proc.communicate(timeout=60)
        finally:
            kill_tree(proc)
    assert proc.returncode == 0, err
    cams = _by_camera(msgs)
    assert sorted(cams) == ["cam2", "front", "side"]
    for cam, n, (w, h) in (("front", 20, (160, 120)), ("side", 12, (96, 64)), ("cam2", 15, (128, 96))):
        got = cams[cam]
        assert [m.frame_seq for m in got] == list(range(n)), cam  # every frame once, in order
        assert {(m.width, m.height) for m in got} == {(w, h)}, cam
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == 47
    assert {k: v["state"] for k, v in summary["streams"].items()} == {"front": "ended", "side": "ended",
                                                                       "cam2": "ended"}
    assert "batch" in summary["stage_ms"]  # frames of different streams went through one call


def test_a_stream_that_dies_is_reported_while_the_others_finish(tmp_path, model):
    video = write_video(tmp_path / "clip.mp4", frames=30, size=(160, 120), fps=30)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", model=model, source="unused", port=port, replay={"speed": 1.0})
    text = cfg.read_text().replace("source:\n  uri: unused\n", "")
    sources = [{"uri": str(video), "camera_id": "good"},
               {"uri": "synthetic:num_frames=100000,width=96,height=64", "camera_id": "doomed"}]
    cfg.write_text(text + "sources: " + json.dumps(sources) + "\n")
    proc = start_pipeline(cfg, "--json")
    reader = StderrReader(proc)
    try:
        m = reader.wait_for(r"started stage capture:doomed pid (\d+)", timeout=60)
        assert m, reader.text
        assert reader.wait_for(r"stream doomed: shared memory", timeout=60), reader.text
        time.sleep(0.5)
        os.kill(int(m.group(1)), signal.SIGKILL)  # the camera's process dies mid-run
        out = proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        kill_tree(proc)
    assert proc.returncode == 11, reader.text  # not every stream succeeded
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["streams"]["good"]["state"] == "ended" and summary["streams"]["good"]["frames"] == 30
    assert summary["streams"]["doomed"]["state"] == "failed"
    assert "killed by signal 9" in summary["streams"]["doomed"]["error"]
    assert "stream 'doomed' failed" in reader.text


def _streams(control: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perception.cli", "streams", "--control", control, "--json",
                           *args], capture_output=True, text=True, cwd=REPO, timeout=60)


def test_streams_are_added_and_removed_while_the_pipeline_runs(tmp_path, model):
    port, control = free_port(), f"tcp://127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path / "c.yaml", model=model, port=port, mode="live",
                       source="synthetic:num_frames=40,width=96,height=64", source_extra={"loop": True},
                       runtime={"control": control})
    video = write_video(tmp_path / "clip.mp4", frames=200, size=(128, 96))
    proc = start_pipeline(cfg)
    reader = StderrReader(proc)
    try:
        with Subscriber(address=f"tcp://127.0.0.1:{port}", rcvhwm=64) as sub:
            assert sub.recv(timeout_s=60) is not None, reader.text
            added = _streams(control, "add", f"extra={video}", "--loop")
            assert added.returncode == 0, added.stdout + added.stderr
            assert json.loads(added.stdout)["stream"]["id"] == "extra"
            dup = _streams(control, "add", f"extra={video}")
            assert dup.returncode == 1 and "already running" in json.loads(dup.stdout)["error"]
            bad = _streams(control, "add", str(tmp_path / "missing.mp4"))
            assert bad.returncode == 1 and "missing.mp4" in json.loads(bad.stdout)["error"]
            seen: set[str] = set()
            deadline = time.monotonic() + 30
            while seen != {"cam0", "extra"} and time.monotonic() < deadline:
                m = sub.recv(timeout_s=1)
                seen |= {m.camera_id} if m is not None else set()
            assert seen == {"cam0", "extra"}
            listed = {s["id"]: s["state"] for s in json.loads(_streams(control, "list").stdout)["streams"]}
            assert listed["cam0"] == "live" and listed["extra"] == "live"
            removed = _streams(control, "remove", "extra")
            assert removed.returncode == 0, removed.stdout
            listed = {s["id"]: s["state"] for s in json.loads(_streams(control, "list").stdout)["streams"]}
            assert listed["extra"] == "removed" and listed["cam0"] == "live"
            gone = _streams(control, "remove", "extra")
            assert gone.returncode == 1 and "no running stream" in json.loads(gone.stdout)["error"]
            later = []
            deadline = time.monotonic() + 2  # past what was in flight when it was removed
            while time.monotonic() < deadline:
                m = sub.recv(timeout_s=0.5)
                later += [m.camera_id] if m is not None else []
            assert later and set(later[-10:]) == {"cam0"}  # the pipeline went on with the first stream
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            kill_tree(proc)
    assert proc.returncode == 130, reader.text


def test_duplicate_stream_ids_are_refused_with_the_id_named(tmp_path, model):
    r = subprocess.run([sys.executable, "-m", "perception.cli", "run", "--source", "a=synthetic",
                        "--source", "a=synthetic:seed=2", "--set", f"model.path={model}"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2
    assert "'a'" in r.stderr and "unique" in r.stderr and "Traceback" not in r.stderr


def test_an_id_prefix_is_taken_only_when_it_is_an_id():
    from perception.cli.run import split_source

    assert split_source("front=rtsp://h/s") == ("front", "rtsp://h/s")
    assert split_source("synthetic:num_frames=30") == (None, "synthetic:num_frames=30")
    assert split_source("/data/a=b.mp4") == (None, "/data/a=b.mp4")


def test_a_batch_of_one_is_bit_identical_to_the_single_frame_path(model):
    backend = open_backend(str(model), kind="onnxruntime", threads=1)
    seg = Segmenter(backend=backend)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in ((160, 120), (96, 64), (200, 90))]
    for f in frames:
        single = seg(f)
        ref = {k: np.copy(getattr(single, k)) for k in ("semantic_logits", "center_heatmap", "center_offsets")}
        one = seg.batch([f])[0]
        for k, v in ref.items():
            assert np.array_equal(getattr(one, k), v), k
    # a real batch of frames of different sizes: each row answers its own frame
    refs = [np.copy(seg(f).semantic_logits) for f in frames]
    for out, ref in zip(seg.batch(frames), refs):
        assert out.semantic_logits.shape == ref.shape
        assert np.allclose(out.semantic_logits, ref, atol=1e-4)
    backend.close()


def test_control_endpoint_refuses_a_non_loopback_address():
    from perception.errors import ConfigError
    from perception.runtime.control import check_control_address

    with pytest.raises(ConfigError, match="loopback"):
        check_control_address("tcp://0.0.0.0:5560")
    assert check_control_address("tcp://127.0.0.1:0") == "tcp://127.0.0.1:0"


def test_no_pipeline_at_the_control_address_is_one_clear_error():
    from perception.errors import TransportError

    with pytest.raises(TransportError, match="no reply"):
        request(f"tcp://127.0.0.1:{free_port()}", {"cmd": "list"}, timeout_s=0.5)
