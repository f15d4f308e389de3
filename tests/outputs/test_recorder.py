"""``perception record``: the published stream of two cameras (real publisher, subscriber and sockets)
recorded as Foxglove MCAP and as a ROS 2 bag, and every message read back with independent readers."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import yaml

from perception.config import CameraCalibrationConfig
from perception.errors import ConfigError, SourceError
from perception.outputs.recorder import open_recorder, record
from perception.sources.drives.source import DriveSource
from perception.transport.publisher import Publisher
from perception.transport.subscriber import Subscriber
from perception.types import FrameMeta, FrameResult
from perception.viz import palette
from tests.outputs.readers import (
    decode_image,
    png_ids,
    read_foxglove,
    read_ros2_mcap,
    read_ros2_rosbags,
    ros_image,
    stamp_ns,
)
from tests.runtime.helpers import free_port
from tests.transport.helpers import CLASSES, make_instances, make_labels, make_tracks

N = 5
T_REC = 1_600_000_000_000_000_000  # a drive's own stamps: years before the capture time
T_WALL = 1_700_000_000_000_000_000
CAMERAS = ("/front", "/rear")
CALIBRATION = CameraCalibrationConfig(K=(100, 0, 48, 0, 100, 36, 0, 0, 1), D=(0.1, -0.05, 0, 0, 0))


def _meta(cam: int, i: int, image: np.ndarray, *, t_rec: bool = True) -> FrameMeta:
    h, w = image.shape[:2]
    return FrameMeta(seq=i, camera_id=CAMERAS[cam], frame_index=i, t_mono_ns=time.monotonic_ns(),
                     t_wall_ns=T_WALL + i * 100_000_000 + cam, pts_ns=i * 100_000_000, width=w, height=h,
                     t_rec_ns=(T_REC + i * 100_000_000 + cam * 1_000) if t_rec else 0)


def _publish_and_record(tmp_path, images, small_images, *, fmt: str, t_rec: bool = True, out_name: str = "out.mcap"):
    """N frames of two cameras of different sizes through a real publisher into a recorder."""
    port = free_port()
    out = tmp_path / out_name
    sent = []
    with Publisher(address=f"tcp://127.0.0.1:{port}", classes=CLASSES, preview="jpeg", preview_quality=95) as pub, \
            Subscriber(address=f"tcp://127.0.0.1:{port}") as sub:
        recorder = open_recorder(out, fmt=fmt, with_input=True, calibrations={"/front": CALIBRATION})
        try:
            pub.wait_for_subscribers(1, timeout_s=10)
            for i in range(N):
                for cam, image in enumerate((images[i], small_images[i])):
                    h, w = image.shape[:2]
                    labels = make_labels(i + cam, w, h)
                    meta = _meta(cam, i, image, t_rec=t_rec)
                    assert pub.publish(FrameResult(
                        meta=meta, labels=labels, instance_map=make_instances(labels), frame=image,
                        latencies_ms={"inference": 10.0 + i, "upsample": 1.5}, tracks=make_tracks()))
                    sent.append((meta, labels, image))
                stats = record(subscriber=sub, recorder=recorder, max_frames=2, idle_timeout_s=10, progress=False)
                assert stats.frames == 2 and stats.cameras == 2
        finally:
            recorder.close()
    return recorder.path, sent


def _by_camera(sent, cam: str):
    return [s for s in sent if s[0].camera_id == cam]


def test_foxglove_recording_decodes_per_camera_with_the_drive_stamps(tmp_path, images, small_images):
    out, sent = _publish_and_record(tmp_path, images, small_images, fmt="foxglove")
    topics = read_foxglove(out)
    lut = palette(CLASSES)
    for cam in CAMERAS:
        mine = _by_camera(sent, cam)
        stamps = [m.t_rec_ns for m, _, _ in mine]
        for leaf, schema in (("labels", "foxglove.CompressedImage"), ("instances", "foxglove.CompressedImage"),
                             ("input", "foxglove.CompressedImage"), ("annotations", "foxglove.ImageAnnotations"),
                             ("tracks", "perception.Tracks"), ("latency", "perception.Latency")):
            got = topics[f"/perception{cam}/{leaf}"]
            assert [r.schema for r in got] == [schema] * N, leaf
            assert [r.log_time for r in got] == stamps, leaf  # the drive's stamps, not the capture time
            assert [r.publish_time for r in got] == stamps, leaf
        for r, (_, labels, _) in zip(topics[f"/perception{cam}/labels"], mine):
            assert r.msg.format == "png" and r.msg.frame_id == cam.strip("/")
            assert stamp_ns(r.msg.timestamp) == r.log_time
            assert np.array_equal(png_ids(r.msg.data), labels)  # the pixels are the class ids ...
            assert np.array_equal(decode_image(r.msg.data), lut[labels])  # ... shown in the class colours
        for r, (_, labels, _) in zip(topics[f"/perception{cam}/instances"], mine):
            assert np.array_equal(png_ids(r.msg.data) > 0, make_instances(labels) > 0)
        for r, (_, _, image) in zip(topics[f"/perception{cam}/input"], mine):
            assert r.msg.format == "jpeg"
            frame = decode_image(r.msg.data)
            assert frame.shape == image.shape
            assert np.abs(frame.astype(np.int16) - image.astype(np.int16)).mean() < 8  # JPEG twice
        ann = topics[f"/perception{cam}/annotations"][0].msg
        assert [t.text for t in ann.texts] == ["#7 car", "#9 pedestrian"]
        assert next([(p.x, p.y) for p in a.points] for a in ann.points) == [(1, 2), (17, 2), (17, 30), (1, 30)]
        assert stamp_ns(ann.points[0].timestamp) == stamps[0]
        tracks = topics[f"/perception{cam}/tracks"][0].msg
        assert tracks.camera_id == cam and stamp_ns(tracks.timestamp) == stamps[0]
        assert [(t.id, t.class_name, t.state) for t in tracks.tracks] == [(7, "car", "confirmed"),
                                                                          (9, "pedestrian", "lost")]
        assert (tracks.tracks[0].vx, tracks.tracks[0].vy, tracks.tracks[0].x1) == (3.5, -1.0, 17.0)
        latency = [{s.name: s.ms for s in r.msg.stages} for r in topics[f"/perception{cam}/latency"]]
        assert [d["inference"] for d in latency] == [10.0 + i for i in range(N)]
    # calibration only for the camera the configuration names
    calib = topics["/perception/front/calibration"]
    assert [r.log_time for r in calib] == [m.t_rec_ns for m, _, _ in _by_camera(sent, "/front")]
    c = calib[0].msg
    assert (c.width, c.height, c.distortion_model) == (96, 72, "plumb_bob")
    assert list(c.K) == list(CALIBRATION.K) and list(c.P)[:3] == [100, 0, 48] and next(iter(c.D)) == 0.1
    assert "/perception/rear/calibration" not in topics
    (classes,) = topics["/perception/classes"]
    assert classes.log_time == sent[0][0].t_rec_ns  # within the recording's time range
    assert [(c.id, c.name, (c.r, c.g, c.b), c.thing) for c in classes.msg.classes] == [
        (c.id, c.name, c.color, c.is_thing) for c in CLASSES]


def test_foxglove_recording_replays_as_a_drive(tmp_path, images, small_images):
    out, sent = _publish_and_record(tmp_path, images, small_images, fmt="foxglove", t_rec=False)
    with DriveSource(out, topics=("/perception/front/input",)) as src:
        metas = [m for m, _ in src]
        assert (src.width, src.height) == (96, 72)
    assert [m.t_rec_ns for m in metas] == [m.t_wall_ns for m, _, _ in _by_camera(sent, "/front")]  # capture time


def test_ros2_bag_decodes_per_camera_with_the_drive_stamps(tmp_path, images, small_images):
    folder, sent = _publish_and_record(tmp_path, images, small_images, fmt="ros2", out_name="bag.mcap")
    assert folder == tmp_path / "bag" and (folder / "metadata.yaml").is_file()
    meta = yaml.safe_load((folder / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "mcap" and meta["version"] >= 8
    counts = {t["topic_metadata"]["name"]: (t["topic_metadata"]["type"], t["message_count"])
              for t in meta["topics_with_message_count"]}
    assert counts["/perception/front/detections"] == ("vision_msgs/msg/Detection2DArray", N)
    assert counts["/perception/rear/labels"] == ("sensor_msgs/msg/Image", N)
    assert counts["/perception/label_info"] == ("vision_msgs/msg/LabelInfo", 1)
    by_rosbags = read_ros2_rosbags(folder)
    by_mcap = read_ros2_mcap(folder)
    assert {t: len(v) for t, v in by_rosbags.items()} == {t: len(v) for t, v in by_mcap.items()}
    for cam in CAMERAS:
        mine = _by_camera(sent, cam)
        stamps = [m.t_rec_ns for m, _, _ in mine]
        for leaf, msgtype in (("labels", "sensor_msgs/msg/Image"), ("instances", "sensor_msgs/msg/Image"),
                              ("input", "sensor_msgs/msg/Image"), ("detections", "vision_msgs/msg/Detection2DArray")):
            topic = f"/perception{cam}/{leaf}"
            got = by_rosbags[topic]
            assert [t for t, _, _ in got] == [msgtype] * N, topic
            assert [ts for _, ts, _ in got] == stamps, topic  # bag time = the drive's stamp
            assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, _, m in got] == stamps, topic
            assert all(m.header.frame_id == cam.strip("/") for _, _, m in got)
            assert [ts for _, ts, _ in by_mcap[topic]] == stamps
        for (_, _, m), (_, labels, _) in zip(by_rosbags[f"/perception{cam}/labels"], mine):
            assert m.encoding == "mono8" and np.array_equal(ros_image(m), labels)
        for (_, _, m), (_, labels, _) in zip(by_mcap[f"/perception{cam}/instances"], mine):
            assert m.encoding == "mono16" and np.array_equal(ros_image(m), make_instances(labels))  # 65535 too
        for (_, _, m), (_, _, image) in zip(by_rosbags[f"/perception{cam}/input"], mine):
            assert m.encoding == "bgr8" and ros_image(m).shape == image.shape
        dets = by_rosbags[f"/perception{cam}/detections"][0][2].detections
        assert [d.id for d in dets] == ["7", "9"]
        assert [(d.results[0].hypothesis.class_id, round(d.results[0].hypothesis.score, 2)) for d in dets] == [
            ("2", 0.9), ("3", 0.4)]
        b = dets[0].bbox
        assert (b.center.position.x, b.center.position.y, b.size_x, b.size_y) == (9.0, 16.0, 16.0, 28.0)
    (_, _, info), = by_rosbags["/perception/front/camera_info"][:1]
    assert list(info.k) == list(CALIBRATION.K) and info.distortion_model == "plumb_bob" and info.width == 96
    assert "/perception/rear/camera_info" not in by_rosbags
    (_, _, label_info), = by_mcap["/perception/label_info"]
    assert [(c.class_id, c.class_name) for c in label_info.class_map] == [(c.id, c.name) for c in CLASSES]


def test_an_existing_recording_is_refused_unless_forced(tmp_path):
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists; pass --force"):
        open_recorder(tmp_path / "bag.mcap", fmt="ros2")
    with pytest.raises(ConfigError, match="not a ROS 2 bag"):  # --force never deletes a folder of other files
        open_recorder(tmp_path / "bag", fmt="ros2", overwrite=True)
    (tmp_path / "x.mcap").write_bytes(b"")
    with pytest.raises(ConfigError, match="exists; pass --force"):
        open_recorder(tmp_path / "x.mcap", fmt="foxglove")
    with pytest.raises(ConfigError, match=r"\.mcap file"):
        open_recorder(tmp_path / "x.json", fmt="foxglove")


def test_rerun_sink_writes_an_rrd_file(tmp_path, images):
    pytest.importorskip("rerun")
    from perception.outputs.rerun import open_rerun_sink

    rrd = tmp_path / "live.rrd"
    port = free_port()
    with open_rerun_sink(save=rrd) as sink, \
            Publisher(address=f"tcp://127.0.0.1:{port}", classes=CLASSES, preview="jpeg", hwm=64) as pub, \
            Subscriber(address=f"tcp://127.0.0.1:{port}") as sub:
        pub.wait_for_subscribers(1, timeout_s=10)
        for i in range(N):
            h, w = images[i].shape[:2]
            labels = make_labels(i, w, h)
            assert pub.publish(FrameResult(meta=_meta(0, i, images[i]), labels=labels,
                                           instance_map=make_instances(labels), frame=images[i],
                                           tracks=make_tracks()))
        record(subscriber=sub, recorder=None, max_frames=N, idle_timeout_s=10, progress=False, sinks=[sink])
        assert sink.logged == N
    assert rrd.stat().st_size > 1000


def test_rerun_missing_is_a_clear_error(monkeypatch):
    from perception.outputs.rerun import RerunSink

    monkeypatch.setitem(sys.modules, "rerun", None)  # as if rerun-sdk were not installed
    with pytest.raises(ConfigError, match="pip install rerun-sdk"):
        RerunSink(save="x.rrd")


def _cli(*args: str):
    import subprocess

    from tests.runtime.helpers import REPO

    return subprocess.run([sys.executable, "-m", "perception.cli", "record", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_record_command_needs_a_destination():
    res = _cli("--connect", "tcp://127.0.0.1:1")
    assert res.returncode == 2 and "--out" in res.stderr


@pytest.mark.parametrize("fmt", ["foxglove", "ros2"])
def test_record_command_without_a_publisher_times_out_with_status_1(tmp_path, fmt):
    out = tmp_path / "empty.mcap"
    res = _cli("--connect", f"tcp://127.0.0.1:{free_port()}", "--out", str(out), "--format", fmt,
               "--timeout", "0.5", "--no-progress")
    assert res.returncode == 1 and "no message arrived" in res.stderr
    if fmt == "foxglove":
        with pytest.raises(SourceError, match="no image topics"):  # a valid, empty MCAP
            DriveSource(out)
    else:
        assert (tmp_path / "empty" / "metadata.yaml").is_file()  # a valid, empty bag


def test_record_stops_at_the_end_of_the_stream_without_waiting_for_the_idle_timeout(tmp_path, images):
    port = free_port()
    with Publisher(address=f"tcp://127.0.0.1:{port}", classes=CLASSES) as pub, \
            Subscriber(address=f"tcp://127.0.0.1:{port}") as sub:
        rec = open_recorder(tmp_path / "end.mcap")
        try:
            pub.wait_for_subscribers(1, timeout_s=10)
            for i in range(3):
                h, w = images[i].shape[:2]
                assert pub.publish(FrameResult(meta=_meta(0, i, images[i]), labels=make_labels(i, w, h)))
            assert pub.end_stream()
            t0 = time.monotonic()
            stats = record(subscriber=sub, recorder=rec, max_frames=None, idle_timeout_s=60, progress=False)
            assert time.monotonic() - t0 < 30  # returned at the end message, not after the 60 s idle timeout
            assert stats.frames == 3
        finally:
            rec.close()
