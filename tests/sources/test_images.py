"""Image folders: natural order, mixed sizes and formats, fps/pts, looping, and bad folders."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from perception.errors import ConfigError, SourceError
from perception.sources import ImageFolderSource, open_source
from perception.sources.base import natural_key
from tests.sources.media import write_image


def test_natural_key_orders_numbers_by_value():
    names = ["img10.png", "img2.png", "IMG1.png", "img2b.png", "a.png", "img02.png"]
    assert sorted(names, key=natural_key) == ["a.png", "IMG1.png", "img02.png", "img2.png", "img2b.png", "img10.png"]


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "frames"
    root.mkdir()
    # Written out of order, with mixed suffixes; value = 20 * position in natural order.
    for position, name in [(2, "frame10.png"), (0, "frame1.png"), (1, "frame2.bmp"), (3, "frame11.PNG")]:
        write_image(root / name, 20 * position)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"ignored")
    (root / "sub").mkdir()
    write_image(root / "sub" / "frame0.png", 255)
    return root


def test_natural_order_and_meta(folder):
    with open_source(str(folder), camera_id="left") as src:
        assert isinstance(src, ImageFolderSource)
        assert (src.width, src.height, src.fps, src.is_live) == (32, 24, None, False)
        assert [p.name for p in src.files] == ["frame1.png", "frame2.bmp", "frame10.png", "frame11.PNG"]
        got = [(m, int(f[0, 0, 0]), f.shape) for m, f in src]
    assert [v for _, v, _ in got] == [0, 20, 40, 60]
    assert all(shape == (24, 32, 3) for *_, shape in got)
    metas = [m for m, *_ in got]
    assert [m.seq for m in metas] == [0, 1, 2, 3]
    assert [m.frame_index for m in metas] == [0, 1, 2, 3]
    assert all(m.camera_id == "left" and (m.width, m.height) == (32, 24) for m in metas)
    for key in ("pts_ns", "t_mono_ns", "t_wall_ns"):
        values = [getattr(m, key) for m in metas]
        assert values == sorted(values)


def test_fps_gives_pts_and_start_offset(folder):
    with ImageFolderSource(folder, fps=4.0) as src:
        assert src.fps == 4.0
        assert [m.pts_ns for m, _ in src] == [0, 250_000_000, 500_000_000, 750_000_000]
    with ImageFolderSource(folder, fps=4.0, start_s=0.5) as src:
        metas = [m for m, _ in src]
    assert [m.frame_index for m in metas] == [2, 3]
    assert [m.pts_ns for m in metas] == [500_000_000, 750_000_000]


def test_loop_and_max_frames(folder):
    with ImageFolderSource(folder, fps=10.0, loop=True, max_frames=10) as src:
        got = [(m, int(f[0, 0, 0])) for m, f in src]
    assert [m.seq for m, _ in got] == list(range(10))
    assert [m.frame_index for m, _ in got] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert [v for _, v in got] == [0, 20, 40, 60, 0, 20, 40, 60, 0, 20]
    assert [m.pts_ns for m, _ in got] == [i * 100_000_000 for i in range(10)]


def test_mixed_sizes_and_channels_are_resized_with_one_warning(tmp_path, caplog):
    root = tmp_path / "mixed"
    root.mkdir()
    write_image(root / "0.png", 10, width=40, height=30)
    write_image(root / "1.png", 20, width=80, height=60)
    write_image(root / "2.png", 30, width=20, height=10)
    write_image(root / "3.png", 40, width=40, height=30, channels=1)
    write_image(root / "4.png", 50, width=40, height=30, channels=4)
    with caplog.at_level(logging.WARNING, logger="perception.sources.images"):
        with ImageFolderSource(root) as src:
            got = [(f.shape, f.dtype, int(f[5, 5, 0]), int(f[5, 5, 2])) for _, f in src]
    assert got == [((30, 40, 3), np.uint8, v, v) for v in (10, 20, 30, 40, 50)]
    warnings = [r for r in caplog.records if "resizing" in r.getMessage()]
    assert len(warnings) == 1 and "1.png" in warnings[0].getMessage()


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"empty holds no images"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match=r"text holds no images \(bmp, jpeg, jpg, png\)"):
        open_source(str(tmp_path / "text"))


def _truncated_png(path, value: int) -> None:
    """A real PNG cut short, as a crashed writer or a full disk leaves it."""
    write_image(path, value)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def test_corrupt_first_image_is_skipped_and_counted(tmp_path, caplog):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    write_image(root / "1.png", 5)
    write_image(root / "2.png", 10)
    with caplog.at_level(logging.WARNING, logger="perception.sources.images"):
        with open_source(str(root)) as src:
            metas = [m for m, _ in src]
            health = src.health()
    assert [m.frame_index for m in metas] == [1, 2] and [m.seq for m in metas] == [0, 1]
    assert health.skipped == 1 and health.frames == 2 and "0.png" in health.last_error
    assert "skipping image" in caplog.text and "0.png" in caplog.text


def test_a_truncated_png_midway_is_skipped_and_the_replay_goes_on(tmp_path, caplog):
    root = tmp_path / "bad"
    root.mkdir()
    for i in range(6):
        write_image(root / f"{i}.png", 10 * i)
    _truncated_png(root / "2.png", 20)
    (root / "4.png").write_bytes(b"")  # an empty file too
    src = ImageFolderSource(root)
    with caplog.at_level(logging.WARNING, logger="perception.sources.images"):
        seen = [(meta.frame_index, int(frame[0, 0, 0])) for meta, frame in src]
    src.close()
    assert [i for i, _ in seen] == [0, 1, 3, 5]
    assert all(abs(v - 10 * i) <= 1 for i, v in seen)
    health = src.health()
    assert health.skipped == 2 and health.frames == 4 and health.state.value == "ended"
    assert "2 image(s) skipped as undecodable, 4 delivered" in caplog.text


def test_a_folder_of_only_corrupt_images_is_a_source_error(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    for i in range(3):
        _truncated_png(root / f"{i}.png", i)
    with pytest.raises(SourceError, match=r"no image of .*bad can be decoded \(all 3 are corrupt"):
        open_source(str(root))


def test_bad_arguments(folder):
    with pytest.raises(ConfigError, match="needs fps"):
        ImageFolderSource(folder, start_s=1.0)
    with pytest.raises(ConfigError, match="fps"):
        ImageFolderSource(folder, fps=-2.0)
    with pytest.raises(SourceError, match="skips all 4 images"):
        ImageFolderSource(folder, fps=1.0, start_s=10.0)
