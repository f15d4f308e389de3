"""Replaying real drive files (written with rosbags / mcap, like a user's logging stack would)."""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pytest

from perception.errors import ConfigError, SourceError
from perception.sources.drives.source import DriveSource, open_drive_source
from perception.sources.factory import open_source
from tests.sources.drives.bags import (
    Frame,
    make_frames,
    write_foxglove_mcap,
    write_ros1_bag,
    write_ros2_bag,
    write_ros2_mcap,
)

WRITERS = {
    "ros1": lambda d, frames: write_ros1_bag(d / "drive.bag", frames),
    "ros2-sqlite3": lambda d, frames: write_ros2_bag(d / "bag", frames, storage="sqlite3"),
    "ros2-mcap": lambda d, frames: write_ros2_bag(d / "bag", frames, storage="mcap"),
    "mcap-ros2": lambda d, frames: write_ros2_mcap(d / "drive.mcap", frames),
    "foxglove-json": lambda d, frames: write_foxglove_mcap(d / "drive.mcap", frames, encoding="json"),
    "foxglove-protobuf": lambda d, frames: write_foxglove_mcap(d / "drive.mcap", frames, encoding="protobuf"),
}


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _two_cameras(images, small_images) -> list[Frame]:
    # /front: raw rgb8 96x72 at 10 Hz; /side: JPEG 64x48 at 10 Hz, 50 ms later: interleaved
    return (make_frames("/front", images, encoding="rgb8")
            + make_frames("/side", small_images, encoding="jpeg", offset_ns=50_000_000))


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_every_frame_of_every_topic_in_order_with_its_stamp(tmp_path, fmt, images, small_images):
    frames = _two_cameras(images, small_images)
    path = WRITERS[fmt](tmp_path, frames)
    expected = sorted(frames, key=lambda f: f.log_ns)
    with open_source(str(path)) as src:
        assert (src.width, src.height) == (96, 72)  # the larger camera
        assert src.num_frames == len(frames)
        assert src.is_live is False
        got = [(meta, frame.copy()) for meta, frame in src]
    assert len(got) == len(expected)
    t0 = expected[0].log_ns
    seq = {"/front": 0, "/side": 0}
    for (meta, frame), want in zip(got, expected):
        assert meta.camera_id == want.topic
        assert meta.t_rec_ns == want.stamp_ns
        assert meta.pts_ns == want.log_ns - t0
        assert meta.seq == seq[want.topic] == meta.frame_index
        seq[want.topic] += 1
        assert (meta.width, meta.height) == (want.image.shape[1], want.image.shape[0])
        assert frame.shape == want.image.shape and frame.dtype == np.uint8
        tolerance = 0.0 if want.encoding == "rgb8" else 4.0  # JPEG is lossy
        assert _diff(frame, want.image) <= tolerance
    assert seq == {"/front": 8, "/side": 8}


@pytest.mark.parametrize("encoding,tolerance", [
    ("bgr8", 0.0), ("rgb8", 0.0), ("mono8", None), ("mono16", None), ("bayer_rggb8", 6.0),
    ("yuv422", 8.0), ("yuyv", 8.0), ("png", 0.0), ("jpeg", 4.0),
])
@pytest.mark.parametrize("fmt", ["foxglove-json", "ros2-sqlite3"])
def test_image_encodings(tmp_path, fmt, encoding, tolerance, images):
    if fmt == "ros2-sqlite3" and encoding == "yuyv":
        encoding = "yuv422_yuy2"  # the ROS name of the same layout
    path = WRITERS[fmt](tmp_path, make_frames("/cam", images[:3], encoding=encoding))
    with DriveSource(path) as src:
        got = [frame.copy() for _, frame in src]
    assert len(got) == 3
    for frame, image in zip(got, images):
        assert frame.shape == image.shape
        if tolerance is None:  # grey: all three channels equal the luma
            grey = np.asarray(np.round(image @ np.array([0.114, 0.587, 0.299])), np.int16)
            assert np.array_equal(frame[..., 0], frame[..., 2])
            assert np.abs(frame[..., 0].astype(np.int16) - grey).max() <= 2
        else:
            assert _diff(frame, image) <= tolerance


def test_topic_selection(tmp_path, images, small_images):
    path = WRITERS["ros1"](tmp_path, _two_cameras(images, small_images))
    with open_source(str(path), options={"topics": ("/side",)}) as src:
        metas = [meta for meta, _ in src]
        assert (src.width, src.height) == (64, 48)
    assert [m.camera_id for m in metas] == ["/side"] * 8
    assert [m.pts_ns for m in metas] == [i * 100_000_000 for i in range(8)]  # from the first replayed message
    assert [m.seq for m in metas] == list(range(8))


def test_missing_topic_lists_the_image_topics(tmp_path, images, small_images):
    path = WRITERS["mcap-ros2"](tmp_path, _two_cameras(images, small_images))
    with pytest.raises(SourceError) as err:
        open_drive_source(path, topics=("/rear",))
    text = str(err.value)
    assert "/rear" in text and "/front" in text and "/side" in text and str(path) in text


def test_no_image_topics(tmp_path):
    from mcap.writer import Writer

    path = tmp_path / "imu.mcap"
    with path.open("wb") as fh:
        w = Writer(fh)
        w.start()
        sid = w.register_schema("perception.Imu", "jsonschema", b'{"type": "object"}')
        cid = w.register_channel("/imu", "json", sid)
        for i in range(3):
            w.add_message(cid, log_time=i, publish_time=i, data=json.dumps({"ax": i}).encode())
        w.finish()
    with pytest.raises(SourceError, match=r"no image topics.*/imu"):
        DriveSource(path)


@pytest.mark.parametrize("fmt", ["ros1", "ros2-sqlite3", "mcap-ros2", "foxglove-json"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "zeroed-middle"])
def test_corrupt_or_truncated_file_is_a_source_error_naming_the_file(tmp_path, fmt, damage, images):
    path = WRITERS[fmt](tmp_path, make_frames("/cam", images, encoding="png"))
    target = path if path.is_file() else next(path.glob("*.db3"))
    data = target.read_bytes()
    n = len(data)
    bad = {
        "truncated": data[: n // 2],
        "garbage": data[:64] + bytes(range(256)) * 8,
        "zeroed-middle": data[: n // 3] + bytes(n // 3) + data[2 * (n // 3):],
    }[damage]
    target.write_bytes(bad)
    if fmt == "ros1" and damage == "truncated":  # read up to the damage instead: see the tests below
        with DriveSource(path) as src:
            assert 0 < sum(1 for _ in src) < len(images) and src.health().truncated
        return
    if fmt == "ros1" and damage == "zeroed-middle":
        # where the zeroes land decides: in the index (nothing can be trusted: an error naming the file)
        # or in a chunk after some frames (read up to the damage, flagged truncated)
        try:
            with DriveSource(path) as src:
                got = sum(1 for _ in src)
        except SourceError as exc:
            assert str(path) in str(exc)
        else:
            assert got < len(images) and src.health().truncated
        return
    with pytest.raises(SourceError) as err:
        with DriveSource(path) as src:
            for _ in src:
                pass
    assert str(path) in str(err.value)


@pytest.mark.parametrize("chunking", [{}, {"chunk_bytes": 60_000}, {"chunk_bytes": 60_000, "compression": "lz4"},
                                      {"chunk_bytes": 60_000, "compression": "bz2"}],
                         ids=["one-chunk", "chunks", "lz4-chunks", "bz2-chunks"])
def test_a_ros1_bag_truncated_by_a_crash_is_replayed_up_to_the_damage(tmp_path, chunking, caplog):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (72, 96, 3), np.uint8) for _ in range(30)]  # noise: ~20 kB per PNG
    path = write_ros1_bag(tmp_path / "drive.bag", make_frames("/cam", images, encoding="png"), **chunking)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 98 // 100])  # the recorder died: no index, the last chunk cut
    with caplog.at_level(logging.WARNING, logger="perception.sources.drives.source"):
        with open_source(str(path)) as src:
            got = [(meta, frame.copy()) for meta, frame in src]
            health = src.health()
    assert 20 <= len(got) < 30  # was: the whole bag refused
    for (meta, frame), image in zip(got, images):
        assert meta.seq == meta.frame_index and np.array_equal(frame, image)
    assert health.truncated and health.frames == len(got) and health.state.value == "ended"
    assert "is damaged" in caplog.text and "replaying the" in caplog.text and str(path) in caplog.text


def test_a_damaged_chunk_of_an_indexed_ros1_bag_is_skipped_and_counted(tmp_path, caplog):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (72, 96, 3), np.uint8) for _ in range(30)]
    path = write_ros1_bag(tmp_path / "drive.bag", make_frames("/cam", images, encoding="png"), chunk_bytes=60_000)
    data = bytearray(path.read_bytes())
    chunk_ops = [i for i in range(len(data)) if data.startswith(b"op=\x05", i)]  # chunk record headers
    assert len(chunk_ops) >= 4
    at = chunk_ops[2] - 40
    data[at:at + 200] = bytes(200)  # a bad sector over the third chunk's header; the index is intact
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="perception.sources.drives.source"):
        with DriveSource(path) as src:
            n = sum(1 for _ in src)
            health = src.health()
    assert 0 < n < 30 and health.skipped == 30 - n  # the lost messages are known from the index
    assert "message(s) lost" in caplog.text


def test_a_bag_with_nothing_readable_is_one_source_error(tmp_path, images):
    path = write_ros1_bag(tmp_path / "drive.bag", make_frames("/cam", images, encoding="png"))
    data = path.read_bytes()
    path.write_bytes(data[:4200])  # the bag header and the first bytes of the first chunk
    with pytest.raises(SourceError, match=r"drive\.bag.*no message could be recovered"):
        DriveSource(path)


def test_a_bad_topic_does_not_stop_the_others(tmp_path, images, small_images, caplog):
    good = make_frames("/good", images, encoding="rgb8")
    unknown = make_frames("/thermal", small_images, encoding="weird16", offset_ns=10_000_000)
    # /mixed: every other message is a corrupt JPEG
    mixed = [Frame(f.topic, f.stamp_ns, f.log_ns, f.image, "jpeg")
             for f in make_frames("/mixed", images, offset_ns=20_000_000)]
    path = write_foxglove_mcap(tmp_path / "drive.mcap", good + unknown + mixed)
    raw = path.read_bytes()
    # corrupt the odd /mixed messages by rewriting the file with broken payloads
    from mcap.reader import make_reader
    from mcap.writer import Writer

    with path.open("rb") as f:
        records = list(make_reader(f).iter_messages(log_time_order=True))
    assert raw  # written
    with path.open("wb") as fh:
        w = Writer(fh)
        w.start()
        schema_ids: dict[int, int] = {}
        channel_ids: dict[int, int] = {}
        counts: dict[str, int] = {}
        for schema, channel, message in records:
            if schema.id not in schema_ids:
                schema_ids[schema.id] = w.register_schema(schema.name, schema.encoding, schema.data)
            if channel.id not in channel_ids:
                channel_ids[channel.id] = w.register_channel(channel.topic, channel.message_encoding,
                                                             schema_ids[schema.id])
            data = message.data
            k = counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == "/mixed" and k % 2 == 0:
                body = json.loads(data)
                body["data"] = "bm90IGEganBlZw=="  # base64 of "not a jpeg"
                data = json.dumps(body).encode()
            w.add_message(channel_ids[channel.id], log_time=message.log_time, publish_time=message.publish_time,
                          data=data)
        w.finish()

    with caplog.at_level(logging.WARNING, logger="perception.sources.drives.source"):
        with DriveSource(path) as src:
            metas = [meta for meta, _ in src]
            stats = src.stats
    topics = [m.camera_id for m in metas]
    assert topics.count("/good") == 8
    assert topics.count("/mixed") == 4
    assert topics.count("/thermal") == 0
    assert stats["/thermal"].failed == 8 and stats["/thermal"].delivered == 0
    assert stats["/mixed"].failed == 4 and stats["/mixed"].delivered == 4
    assert [m.frame_index for m in metas if m.camera_id == "/mixed"] == [0, 2, 4, 6]
    assert [m.seq for m in metas if m.camera_id == "/mixed"] == [0, 1, 2, 3]
    assert "weird16" in caplog.text and "/thermal delivered no frames" in caplog.text


def test_only_bad_topics_is_a_source_error(tmp_path, images):
    path = write_foxglove_mcap(tmp_path / "d.mcap", make_frames("/cam", images, encoding="weird16"))
    with pytest.raises(SourceError, match=r"weird16"):
        DriveSource(path)


def test_start_offset_max_frames_and_loop(tmp_path, images):
    frames = make_frames("/cam", images, encoding="png")  # 10 Hz, 8 frames
    path = WRITERS["ros2-mcap"](tmp_path, frames)
    with DriveSource(path, start_s=0.35) as src:
        metas = [m for m, _ in src]
    assert [m.t_rec_ns for m in metas] == [f.stamp_ns for f in frames[4:]]
    assert [m.pts_ns for m in metas] == [f.log_ns - frames[4].log_ns for f in frames[4:]]

    with DriveSource(path, max_frames=3) as src:
        assert src.num_frames == 3
        assert [m.frame_index for m, _ in src] == [0, 1, 2]

    with DriveSource(path, loop=True, max_frames=20) as src:
        metas = [m for m, _ in src]
    assert len(metas) == 20
    assert [m.frame_index for m in metas] == [i % 8 for i in range(20)]
    assert [m.seq for m in metas] == list(range(20))
    pts = [m.pts_ns for m in metas]
    assert all(b > a for a, b in itertools.pairwise(pts))

    with pytest.raises(SourceError, match="past the end"):
        DriveSource(path, start_s=5.0)


def test_missing_header_stamp_falls_back_to_log_time(tmp_path, images):
    frames = [Frame(f.topic, 0, f.log_ns, f.image, f.encoding) for f in make_frames("/cam", images[:3])]
    path = WRITERS["ros1"](tmp_path, frames)
    with DriveSource(path) as src:
        metas = [m for m, _ in src]
        assert src.stats["/cam"].stamp_fallbacks == 3
    assert [m.t_rec_ns for m in metas] == [f.log_ns for f in frames]


def test_factory_options(tmp_path, images):
    path = WRITERS["foxglove-json"](tmp_path, make_frames("/cam", images[:2]))
    with pytest.raises(ConfigError, match="unknown option"):
        open_source(str(path), options={"fps": 3})
    with pytest.raises(ConfigError):
        open_source(str(path), fps=5.0)
    with pytest.raises(SourceError, match="not found"):
        open_drive_source(tmp_path / "nope.mcap")
    src = open_source(str(path), options={"topics": "/cam"})
    with src:
        assert len(list(src)) == 2
    with pytest.raises(SourceError, match="only once"):
        list(src)


def test_ros2_db3_file_is_read_through_its_folder(tmp_path, images):
    bag = WRITERS["ros2-sqlite3"](tmp_path, make_frames("/cam", images[:3]))
    db3 = next(bag.glob("*.db3"))
    with open_source(str(db3)) as src:
        assert [m.t_rec_ns for m, _ in src] == [f.stamp_ns for f in make_frames("/cam", images[:3])]
    lone = tmp_path / "lone" / "x.db3"
    lone.parent.mkdir()
    lone.write_bytes(db3.read_bytes())
    with pytest.raises(SourceError, match=r"metadata\.yaml"):
        open_source(str(lone))
