"""Recording published outputs to MCAP (real publisher, subscriber and sockets) and replaying them."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

from perception.errors import ConfigError, SourceError
from perception.outputs.recorder import McapRecorder, camera_topic, record
from perception.sources.drives.source import DriveSource
from perception.transport.publisher import Publisher
from perception.transport.subscriber import Subscriber
from perception.types import FrameMeta, FrameResult
from perception.viz import colorize, palette
from tests.runtime.helpers import free_port
from tests.transport.helpers import CLASSES, make_instances, make_labels, make_tracks

N = 5
T0 = 1_700_000_000_000_000_000


def _meta(i: int, image: np.ndarray) -> FrameMeta:
    h, w = image.shape[:2]
    return FrameMeta(seq=i, camera_id="/cam", frame_index=i, t_mono_ns=time.monotonic_ns(),
                     t_wall_ns=T0 + i * 100_000_000, pts_ns=i * 100_000_000, width=w, height=h)


def _publish_and_record(tmp_path, images, *, sinks=()):
    port = free_port()
    out = tmp_path / "out.mcap"
    sent = []
    with Publisher(address=f"tcp://127.0.0.1:{port}", classes=CLASSES, preview="jpeg", preview_quality=95) as pub, \
            Subscriber(address=f"tcp://127.0.0.1:{port}") as sub, \
            McapRecorder(out, with_input=True) as rec:
        pub.wait_for_subscribers(1, timeout_s=10)
        for i in range(N):
            image = images[i]
            h, w = image.shape[:2]
            labels = make_labels(i, w, h)
            meta = _meta(i, image)
            assert pub.publish(FrameResult(
                meta=meta, labels=labels, instance_map=make_instances(labels), frame=image,
                latencies_ms={"inference": 10.0 + i, "upsample": 1.5}, tracks=make_tracks()))
            sent.append((meta, labels, image))
            record(subscriber=sub, recorder=rec, max_frames=i + 1, idle_timeout_s=10, progress=False, sinks=sinks)
        assert rec.stats.frames == N
    return out, sent


def test_recording_replays_as_a_source_with_the_input_stamps(tmp_path, images):
    out, sent = _publish_and_record(tmp_path, images)
    lut = palette(CLASSES)
    labels_topic = camera_topic("/perception", "/cam", "labels")
    assert labels_topic == "/perception/cam/labels"
    with DriveSource(out, topics=(labels_topic,)) as src:
        got = [(m, f.copy()) for m, f in src]
    assert [m.t_rec_ns for m, _ in got] == [meta.t_wall_ns for meta, _, _ in sent]
    for (m, frame), (_meta, labels, _) in zip(got, sent):
        assert m.camera_id == labels_topic
        assert np.array_equal(frame, colorize(labels, lut))  # PNG is lossless
    with DriveSource(out, topics=("/perception/cam/input",)) as src:
        previews = [(m, f.copy()) for m, f in src]
    assert [m.t_rec_ns for m, _ in previews] == [meta.t_wall_ns for meta, _, _ in sent]
    for (_, frame), (_, _, image) in zip(previews, sent):
        assert frame.shape == image.shape
        assert np.abs(frame.astype(np.int16) - image.astype(np.int16)).mean() < 6  # JPEG twice
    with DriveSource(out) as src:  # every image topic: labels, instances, input
        assert set(src.topics) == {"/perception/cam/labels", "/perception/cam/instances", "/perception/cam/input"}
        assert src.num_frames == 3 * N


def test_recording_holds_tracks_latencies_and_classes(tmp_path, images):
    from mcap.reader import make_reader

    out, sent = _publish_and_record(tmp_path, images)
    with out.open("rb") as f:
        reader = make_reader(f)
        schemas = {ch.topic: reader.get_summary().schemas[ch.schema_id].name
                   for ch in reader.get_summary().channels.values()}
        msgs: dict[str, list] = {}
        for _, channel, message in reader.iter_messages():
            msgs.setdefault(channel.topic, []).append(
                (message.log_time, message.publish_time, json.loads(message.data)))
    assert schemas["/perception/cam/tracks"] == "perception.Tracks"
    assert schemas["/perception/cam/annotations"] == "foxglove.ImageAnnotations"
    assert schemas["/perception/cam/labels"] == "foxglove.CompressedImage"
    tracks = msgs["/perception/cam/tracks"]
    assert [t for t, _, _ in tracks] == [meta.t_wall_ns for meta, _, _ in sent]
    assert all(log_t == pub_t for log_t, pub_t, _ in tracks)
    first = tracks[0][2]["tracks"]
    assert [t["id"] for t in first] == [7, 9]
    assert first[0]["class_name"] == "car" and first[0]["velocity"] == {"vx": 3.5, "vy": -1.0}
    assert first[0]["box"] == {"x0": 1.0, "y0": 2.0, "x1": 17.0, "y1": 30.0}
    assert first[1]["state"] == "lost"
    latency = msgs["/perception/cam/latency"]
    assert [body["stages_ms"]["inference"] for _, _, body in latency] == [10.0 + i for i in range(N)]
    annotations = msgs["/perception/cam/annotations"][0][2]
    assert [t["text"] for t in annotations["texts"]] == ["#7 car", "#9 pedestrian"]
    classes = msgs["/perception/classes"][0][2]["classes"]
    assert [c["name"] for c in classes] == [c.name for c in CLASSES]


def test_rerun_sink_writes_an_rrd_file(tmp_path, images):
    pytest.importorskip("rerun")
    from perception.outputs.rerun import open_rerun_sink

    rrd = tmp_path / "live.rrd"
    sink = open_rerun_sink(save=rrd)
    with sink:
        _publish_and_record(tmp_path, images, sinks=[sink])
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


def test_record_command_without_a_publisher_times_out_with_status_1(tmp_path):
    out = tmp_path / "empty.mcap"
    res = _cli("--connect", f"tcp://127.0.0.1:{free_port()}", "--out", str(out), "--timeout", "0.5", "--no-progress")
    assert res.returncode == 1 and "no message arrived" in res.stderr
    with pytest.raises(SourceError, match="no image topics"):  # a valid, empty MCAP
        DriveSource(out)


def test_record_stops_at_the_end_of_the_stream_without_waiting_for_the_idle_timeout(tmp_path, images):
    port = free_port()
    with Publisher(address=f"tcp://127.0.0.1:{port}", classes=CLASSES) as pub, \
            Subscriber(address=f"tcp://127.0.0.1:{port}") as sub, \
            McapRecorder(tmp_path / "end.mcap") as rec:
        pub.wait_for_subscribers(1, timeout_s=10)
        for i in range(3):
            h, w = images[i].shape[:2]
            assert pub.publish(FrameResult(meta=_meta(i, images[i]), labels=make_labels(i, w, h)))
        assert pub.end_stream()
        t0 = time.monotonic()
        record(subscriber=sub, recorder=rec, max_frames=None, idle_timeout_s=60, progress=False)
        assert time.monotonic() - t0 < 30  # returned at the end message, not after the 60 s idle timeout
        assert rec.stats.frames == 3


def test_foxglove_messages_follow_foxglove_s_own_json_schemas(tmp_path, images):
    """Every CompressedImage / ImageAnnotations message, and the schemas we register for them, agree
    with Foxglove's published JSON schemas (tests/outputs/data/foxglove, from @foxglove/schemas)."""
    from pathlib import Path

    import jsonschema
    from mcap.reader import make_reader

    official = {
        f"foxglove.{name}": json.loads((Path(__file__).parent / "data" / "foxglove" / f"{name}.json").read_text())
        for name in ("CompressedImage", "ImageAnnotations")
    }
    out, _ = _publish_and_record(tmp_path, images)
    checked: dict[str, int] = {}
    with out.open("rb") as f:
        reader = make_reader(f)
        for schema, _channel, message in reader.iter_messages():
            if schema.name in official:
                jsonschema.validate(json.loads(message.data), official[schema.name])
                checked[schema.name] = checked.get(schema.name, 0) + 1
        registered = {s.name: json.loads(s.data) for s in reader.get_summary().schemas.values()}
    # labels, instances and input previews are CompressedImage; one annotation message per frame
    assert checked == {"foxglove.CompressedImage": 3 * N, "foxglove.ImageAnnotations": N}

    def types(schema: dict, path: str = "") -> dict[str, str]:
        """Dotted path -> JSON type of every property, array items included."""
        found = {}
        for key, sub in schema.get("properties", {}).items():
            found[path + key] = sub.get("type")
            found.update(types(sub.get("items", sub), path + key + "."))
        return found

    for name, schema in official.items():
        ours = types(registered[name])
        assert ours, name
        theirs = types(schema)
        assert {k: theirs.get(k) for k in ours} == ours, name  # every field we declare, typed as Foxglove does
    # the check can fail: a wrong type is refused
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"format": "png", "data": [1, 2]}, official["foxglove.CompressedImage"])
