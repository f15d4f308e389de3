"""Video files: every frame in order with correct meta, looping, offsets, and bad files."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from perception.errors import ConfigError, SourceError
from perception.sources import Source, VideoFileSource, open_source
from tests.sources.media import frame_value, write_video

LOSSY = 5
"""Tolerance on a flat grey value after mp4v compression."""


@pytest.fixture()
def video(tmp_path):
    return write_video(tmp_path / "clip.mp4", frames=20, fps=10.0)


def test_every_frame_in_order_with_meta(video):
    with open_source(str(video), camera_id="front") as src:
        assert isinstance(src, VideoFileSource) and isinstance(src, Source)
        assert (src.width, src.height, src.fps, src.is_live) == (64, 48, 10.0, False)
        got = [(meta, int(frame[0, 0, 0]), frame.shape, frame.dtype) for meta, frame in src]
    assert len(got) == 20
    for i, (meta, value, shape, dtype) in enumerate(got):
        assert meta.seq == i and meta.frame_index == i
        assert meta.camera_id == "front"
        assert (meta.width, meta.height) == (64, 48)
        assert meta.pts_ns == i * 100_000_000
        assert abs(value - frame_value(i)) <= LOSSY
        assert shape == (48, 64, 3) and dtype == np.uint8
    monos = [m.t_mono_ns for m, *_ in got]
    walls = [m.t_wall_ns for m, *_ in got]
    assert monos == sorted(monos) and walls == sorted(walls)
    assert monos[0] > 0 and walls[0] > 1_600_000_000 * 10**9  # real clocks, not zeros


def test_loop_keeps_seq_and_pts_increasing(video):
    with VideoFileSource(video, loop=True, max_frames=45) as src:
        metas, values = zip(*[(m, int(f[0, 0, 0])) for m, f in src])
    assert [m.seq for m in metas] == list(range(45))
    assert [m.frame_index for m in metas] == [i % 20 for i in range(45)]
    assert [m.pts_ns for m in metas] == [i * 100_000_000 for i in range(45)]
    assert all(abs(v - frame_value(i % 20)) <= LOSSY for i, v in enumerate(values))


def test_start_offset_and_max_frames(video):
    with VideoFileSource(video, start_s=0.5, max_frames=3) as src:
        metas, values = zip(*[(m, int(f[0, 0, 0])) for m, f in src])
    assert [m.frame_index for m in metas] == [5, 6, 7]
    assert [m.seq for m in metas] == [0, 1, 2]
    assert [m.pts_ns for m in metas] == [500_000_000, 600_000_000, 700_000_000]
    assert all(abs(v - frame_value(i)) <= LOSSY for i, v in zip((5, 6, 7), values))


def test_loop_from_start_offset(video):
    with VideoFileSource(video, start_s=1.5, loop=True, max_frames=12) as src:
        metas = [m for m, _ in src]
    assert [m.frame_index for m in metas] == [15, 16, 17, 18, 19] * 2 + [15, 16]
    pts = [m.pts_ns for m in metas]
    assert all(b - a == 100_000_000 for a, b in itertools.pairwise(pts))


def test_fps_override_sets_pts(video):
    with VideoFileSource(video, fps=20.0, max_frames=4) as src:
        assert src.fps == 20.0
        assert [m.pts_ns for m, _ in src] == [0, 50_000_000, 100_000_000, 150_000_000]


def test_avi_mjpeg_also_reads(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=7, fourcc="MJPG", width=40, height=30)
    with open_source(str(path)) as src:
        assert (src.width, src.height) == (40, 30)
        assert [m.seq for m, _ in src] == list(range(7))


def test_iterating_twice_is_refused(video):
    with VideoFileSource(video, max_frames=2) as src:
        list(src)
        with pytest.raises(SourceError, match="only once"):
            list(src)


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match=r"no such file or folder: .*nothere\.mp4"):
        open_source(str(tmp_path / "nothere.mp4"))
    with pytest.raises(SourceError, match=r"video file not found: .*nothere\.mp4"):
        VideoFileSource(tmp_path / "nothere.mp4")


def test_text_file_named_mp4(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 20)
    with pytest.raises(SourceError, match=r"cannot decode video file .*notes\.mp4"):
        open_source(str(bad))


def test_truncated_file(tmp_path, video):
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # mp4v writes its index at the end: now missing
    with pytest.raises(SourceError, match=r"cut\.mp4.*(corrupt|truncated)"):
        open_source(str(cut))


def test_zero_frames(tmp_path):
    for name, fourcc in (("empty.mp4", "mp4v"), ("empty.avi", "MJPG")):
        path = write_video(tmp_path / name, frames=0, fourcc=fourcc)
        with pytest.raises(SourceError, match=r"no decodable frames|empty") as info:
            open_source(str(path))
        assert str(path) in str(info.value)


def test_start_past_end(video):
    with pytest.raises(SourceError, match="past the end"):
        VideoFileSource(video, start_s=5.0)


def test_bad_arguments(video):
    with pytest.raises(ConfigError, match="start_s"):
        VideoFileSource(video, start_s=-1.0)
    with pytest.raises(ConfigError, match="max_frames"):
        VideoFileSource(video, max_frames=0)


def test_dashcam_clip(dashcam_video):
    with open_source(str(dashcam_video)) as src:
        assert (src.width, src.height) == (960, 540)
        count = 0
        last_pts = -1
        for meta, frame in src:
            assert frame.shape == (540, 960, 3)
            assert meta.pts_ns > last_pts
            last_pts = meta.pts_ns
            count += 1
    assert 215 <= count <= 225


def test_frames_reuse_one_buffer_and_close_ends_iteration(video):
    src = VideoFileSource(video)
    arrays = []
    for meta, frame in src:
        arrays.append(frame)
        if meta.seq == 5:
            src.close()  # e.g. from a shutdown handler: iteration ends without an error
    assert len(arrays) == 6
    assert len({id(a) for a in arrays[1:]}) == 1  # no per-frame allocation after the first frame
    src.close()  # idempotent


def _damage(src, dst, *, at: float, length: int) -> None:
    """A copy of ``src`` with ``length`` bytes at fraction ``at`` overwritten by noise (a bad sector, a
    broken download): the container is intact, some frames' data is not."""
    data = bytearray(src.read_bytes())
    start = int(len(data) * at)
    data[start:start + length] = np.random.default_rng(0).integers(0, 256, length, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))


def test_a_partly_corrupted_clip_is_decoded_past_the_damage(tmp_path, dashcam_video, caplog):
    import logging

    bad = tmp_path / "damaged.mp4"
    _damage(dashcam_video, bad, at=0.4, length=65536)
    with caplog.at_level(logging.WARNING, logger="perception.sources.video"):
        with open_source(str(bad)) as src:
            declared = src.frame_count
            indices = [meta.frame_index for meta, _ in src]
            health = src.health()
    assert declared == 221
    # before the fix: 90 frames, then the end (exit 0, one warning); now decoding resumes after the damage
    assert len(indices) > 180
    assert indices == sorted(indices) and indices[-1] == declared - 1
    gaps = [b - a - 1 for a, b in itertools.pairwise(indices) if b - a > 1]
    assert gaps and health.skipped == sum(gaps) == declared - len(indices)
    assert health.frames == len(indices) and not health.truncated
    assert "damaged data at frame" in caplog.text and "skipped" in caplog.text


def test_a_clip_cut_short_says_so_and_counts_what_is_missing(tmp_path, caplog):
    import logging

    clip = write_video(tmp_path / "clip.avi", frames=40, fourcc="MJPG")  # AVI: the index of frames comes first
    data = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 3 // 5])
    with caplog.at_level(logging.WARNING, logger="perception.sources.video"):
        src = open_source(str(cut))
        n = sum(1 for _ in src)
        src.close()
    health = src.health()
    if src.frame_count is None or src.frame_count < 40:
        pytest.skip("this FFmpeg does not report the declared length of a cut AVI")
    assert 0 < n < 40
    assert health.truncated and health.skipped == 40 - n
    assert "truncated file?" in caplog.text
