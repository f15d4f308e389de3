"""The Foxglove and ROS 2 sinks of the real pipeline (processes, shared memory): a two-camera drive
recorded by ``perception run --record`` and read back, and a real WebSocket client speaking Foxglove's
protocol to the live server of a running pipeline."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import pytest

from tests.outputs.readers import decode_image, png_ids, read_foxglove, read_ros2_rosbags, stamp_ns
from tests.runtime.helpers import (
    StderrReader,
    free_port,
    kill_tree,
    start_pipeline,
    write_config,
    write_video,
)
from tests.sources.drives.bags import make_frames, write_ros2_mcap
from tests.tinymodel import make_tiny_model

N = 6


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def drive(tmp_path, images, small_images):
    """Two cameras of different sizes, stamps 10 ms apart, as a ROS 2 MCAP drive."""
    front = make_frames("/front", images[:N], encoding="bgr8")
    rear = make_frames("/rear", small_images[:N], encoding="jpeg", offset_ns=10_000_000)
    return write_ros2_mcap(tmp_path / "drive.mcap", front + rear), {"/front": front, "/rear": rear}


def _run(tmp_path, model, source, *extra):
    cfg = write_config(tmp_path / "c.yaml", model=model, source=str(source), port=free_port(),
                       replay={"speed": 0})
    proc = start_pipeline(cfg, *extra)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        kill_tree(proc)
    assert proc.returncode == 0, err[-3000:]
    return err


def test_pipeline_records_foxglove_with_each_camera_s_drive_stamps(tmp_path, model, drive):
    path, frames = drive
    out = tmp_path / "run.mcap"
    err = _run(tmp_path, model, path, "--record", str(out))
    assert f"recorded to {out} (foxglove)" in err
    topics = read_foxglove(out)
    for cam, sent in frames.items():
        stamps = [f.stamp_ns for f in sent]
        h, w = sent[0].image.shape[:2]
        for leaf in ("input", "labels", "instances", "annotations", "tracks", "latency"):
            got = topics[f"/perception{cam}/{leaf}"]
            assert [r.log_time for r in got] == stamps, (cam, leaf)
        for r in topics[f"/perception{cam}/labels"]:
            assert stamp_ns(r.msg.timestamp) == r.log_time and png_ids(r.msg.data).shape == (h, w)
        assert all(decode_image(r.msg.data).shape == (h, w, 3) for r in topics[f"/perception{cam}/input"])
        assert [r.msg.camera_id for r in topics[f"/perception{cam}/tracks"]] == [cam] * N
        assert all(any(s.name == "post" for s in r.msg.stages) for r in topics[f"/perception{cam}/latency"])
    assert len(topics["/perception/classes"]) == 1


def test_pipeline_records_a_ros2_bag_with_each_camera_s_drive_stamps(tmp_path, model, drive):
    path, frames = drive
    err = _run(tmp_path, model, path, "--record", str(tmp_path / "run.mcap"), "--format", "ros2")
    assert "(ros2)" in err
    topics = read_ros2_rosbags(tmp_path / "run")
    for cam, sent in frames.items():
        stamps = [f.stamp_ns for f in sent]
        h, w = sent[0].image.shape[:2]
        for leaf in ("input", "labels", "instances", "detections"):
            got = topics[f"/perception{cam}/{leaf}"]
            assert [t for _, t, _ in got] == stamps, (cam, leaf)
            assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, _, m in got] == stamps
        assert {(m.width, m.height, m.encoding) for _, _, m in topics[f"/perception{cam}/labels"]} == {(w, h, "mono8")}


# ------------------------------------------------------------------------------------------ live
async def _foxglove_client(port: int, topics: tuple[str, ...], want: int, timeout_s: float) -> dict:
    """Connect with the Foxglove WebSocket protocol, subscribe to ``topics`` when advertised, and return
    ``{"server": serverInfo, "channels": {topic: advertised channel}, "messages": {topic: [payload]}}``."""
    import websockets

    channels: dict[int, dict] = {}
    subscribed: dict[int, str] = {}
    messages: dict[str, list[bytes]] = {t: [] for t in topics}
    server = None
    # offered as the Foxglove app offers them; SDK 0.30 servers accept only the first (the same
    # protocol as foxglove.websocket.v1, renamed), older servers the second
    async with websockets.connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1", "foxglove.websocket.v1"],
                                  max_size=None, open_timeout=timeout_s) as ws:
        assert ws.subprotocol in ("foxglove.sdk.v1", "foxglove.websocket.v1")
        deadline = asyncio.get_running_loop().time() + timeout_s
        while min(len(v) for v in messages.values()) < want:
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"timed out: advertised {[c['topic'] for c in channels.values()]}, got " \
                             f"{ {t: len(v) for t, v in messages.items()} }"
            raw = await asyncio.wait_for(ws.recv(), timeout=left)
            if isinstance(raw, str):
                op = json.loads(raw)
                if op["op"] == "serverInfo":
                    server = op
                elif op["op"] == "advertise":
                    subs = []
                    for ch in op["channels"]:
                        channels[ch["id"]] = ch
                        if ch["topic"] in topics:
                            sub_id = len(subscribed) + 1
                            subscribed[sub_id] = ch["topic"]
                            subs.append({"id": sub_id, "channelId": ch["id"]})
                    if subs:
                        await ws.send(json.dumps({"op": "subscribe", "subscriptions": subs}))
            elif raw[0] == 0x01:  # message data: opcode, uint32 subscription id, uint64 log time, payload
                sub_id, log_time = struct.unpack_from("<IQ", raw, 1)
                messages[subscribed[sub_id]].append((log_time, bytes(raw[13:])))
    return {"server": server, "channels": {c["topic"]: c for c in channels.values()}, "messages": messages}


def test_a_foxglove_websocket_client_sees_a_running_pipeline(tmp_path, model):
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from foxglove_schemas_protobuf.ImageAnnotations_pb2 import ImageAnnotations

    video = write_video(tmp_path / "v.mp4", frames=30, size=(160, 120), fps=30.0)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", model=model, source=str(video), port=free_port(),
                       source_extra={"loop": True}, output={"foxglove": f"127.0.0.1:{port}"})
    proc = start_pipeline(cfg)
    log = StderrReader(proc)
    try:
        assert log.wait_for(r"Foxglove live on ws://127\.0\.0\.1:\d+", timeout=60), log.text[-3000:]
        topics = ("/perception/cam0/input", "/perception/cam0/annotations", "/perception/cam0/labels")
        got = asyncio.run(_foxglove_client(port, topics, want=3, timeout_s=60))
    finally:
        kill_tree(proc)
    assert got["server"]["name"] == "perception"
    image_ch = got["channels"]["/perception/cam0/input"]
    assert (image_ch["encoding"], image_ch["schemaName"]) == ("protobuf", "foxglove.CompressedImage")
    assert base64.b64decode(image_ch["schema"])  # the FileDescriptorSet a client decodes with
    assert got["channels"]["/perception/cam0/tracks"]["schemaName"] == "perception.Tracks"
    images = [(t, CompressedImage.FromString(p)) for t, p in got["messages"]["/perception/cam0/input"]]
    for log_time, img in images:
        assert img.format == "jpeg" and img.frame_id == "cam0"
        assert decode_image(img.data).shape == (120, 160, 3)
        assert stamp_ns(img.timestamp) == log_time
    labels = [CompressedImage.FromString(p) for _, p in got["messages"]["/perception/cam0/labels"]]
    assert all(png_ids(m.data).shape == (120, 160) for m in labels)
    annotations = [(t, ImageAnnotations.FromString(p)) for t, p in got["messages"]["/perception/cam0/annotations"]]
    assert {t for t, _ in annotations} & {t for t, _ in images}  # a frame and its annotations, same stamp
    for _, a in annotations:
        assert len(a.points) == len(a.texts)
        assert all(t.text.startswith("#") for t in a.texts)
