"""open_source: the one format switch, its argument checks, and its messages."""

from __future__ import annotations

import importlib.util

import pytest

from perception.errors import ConfigError, SourceError
from perception.sources import ImageFolderSource, VideoFileSource, describe_sources, open_source
from perception.sources.factory import parse_settings
from tests.sources.media import write_image, write_video


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


def test_video_and_folder_dispatch(tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=3, fourcc="MJPG")
    with open_source(str(video), max_frames=2, loop=True, fps=5.0) as src:
        assert isinstance(src, VideoFileSource)
        assert [m.pts_ns for m, _ in src] == [0, 200_000_000]
    folder = tmp_path / "frames"
    folder.mkdir()
    write_image(folder / "0.png", 1)
    with open_source(str(folder), fps=2.0, camera_id="c9") as src:
        assert isinstance(src, ImageFolderSource)
        assert [(m.camera_id, m.pts_ns) for m, _ in src] == [("c9", 0)]


def test_missing_path():
    with pytest.raises(SourceError, match=r"^no such file or folder: /nonexistent/clip\.mp4$"):
        open_source("/nonexistent/clip.mp4")


def test_empty_and_unknown_scheme():
    with pytest.raises(ConfigError, match="empty source"):
        open_source("  ")
    with pytest.raises(SourceError, match=r"unsupported URL scheme 'ftp'.*rtsp, rtsps, http, https"):
        open_source("ftp://example.com/x.mp4")
    with pytest.raises(ConfigError, match=r"bad camera source 'camera:front'"):
        open_source("camera:front")


def test_arguments_that_do_not_apply_are_refused(tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=2)
    with pytest.raises(ConfigError, match="width, height cannot be used with a video file source"):
        open_source(str(video), width=320, height=240)
    with pytest.raises(ConfigError, match="loop cannot be used with a camera source"):
        open_source("camera:0", loop=True)
    with pytest.raises(ConfigError, match="fps cannot be used with a stream source"):
        open_source("rtsp://127.0.0.1:1/x", fps=10.0)


def test_options_are_checked_against_the_source(tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=2)
    with pytest.raises(ConfigError, match=r"unknown option 'bogus' for a video file source; allowed: \(none\)"):
        open_source(str(video), options={"bogus": 1})
    with pytest.raises(ConfigError, match=r"unknown option 'speed' for a stream source; allowed: .*stall_timeout_s"):
        open_source("rtsp://127.0.0.1:1/x", options={"speed": 2})
    with pytest.raises(ConfigError, match="set by its own argument"):
        open_source("camera:0", options={"camera_id": "x"})


def test_parse_settings():
    assert parse_settings("") == {}
    assert parse_settings("seed=3, fps=12.5,name=city,rain=off,") == {
        "seed": "3",
        "fps": "12.5",
        "name": "city",
        "rain": "off",
    }
    with pytest.raises(ConfigError, match="bad source setting 'seed'"):
        parse_settings("seed")
    with pytest.raises(ConfigError, match="bad source setting '3x=1'"):
        parse_settings("3x=1")


@pytest.mark.skipif(not _missing("perception.sources.drives.source"), reason="drive support is present")
def test_drive_without_drive_support(tmp_path):
    for name in ("run.mcap", "run.bag", "run.db3"):
        (tmp_path / name).write_bytes(b"\0")
        with pytest.raises(SourceError,
                           match=rf"cannot replay recorded drive .*{name}: drive support is not installed"):
            open_source(str(tmp_path / name))
    bag = tmp_path / "ros2bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    with pytest.raises(SourceError, match="drive support is not installed"):
        open_source(str(bag))


@pytest.mark.skipif(_missing("perception.sources.synthetic"), reason="synthetic source not written yet")
def test_synthetic_dispatch():
    with open_source("synthetic:seed=2,fps=10", camera_id="sim", width=96, height=64, max_frames=3) as src:
        assert type(src).__name__ == "SyntheticSource"
        assert (src.width, src.height, src.fps) == (96, 64, 10.0)
        metas = [m for m, _ in src]
    assert [m.seq for m in metas] == [0, 1, 2] and metas[0].camera_id == "sim"


def test_describe_sources_lists_every_form():
    text = describe_sources()
    for form in ("synthetic", "camera:N", "/dev/videoN", "rtsp://", "http", "gst:", ".mcap", "folder", "video"):
        assert form in text
