"""The ``synthetic`` source: frame count, meta, images equal to the scene, loop, close, bad options."""

from __future__ import annotations

import time

import numpy as np
import pytest

from perception.errors import ConfigError
from perception.sources.base import Source
from perception.sources.synthetic import SyntheticSource


def test_yields_the_configured_frames_with_correct_meta():
    before_mono, before_wall = time.monotonic_ns(), time.time_ns()
    with SyntheticSource(camera_id="front", width=320, height=180, fps=10.0, num_frames=12, seed=4) as src:
        assert isinstance(src, Source)
        assert (src.camera_id, src.width, src.height, src.fps, src.is_live) == (
            "front",
            320,
            180,
            10.0,
            False,
        )
        items = [(meta, image.copy()) for meta, image in src]
        scene = src.scene
    assert len(items) == 12
    last_mono = before_mono
    for i, (meta, image) in enumerate(items):
        assert meta.seq == meta.frame_index == i
        assert meta.camera_id == "front"
        assert (meta.width, meta.height) == (320, 180)
        assert meta.pts_ns == round(i / 10.0 * 1e9)
        assert meta.t_mono_ns >= last_mono and meta.t_wall_ns >= before_wall
        last_mono = meta.t_mono_ns
        assert image.shape == (180, 320, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, scene.frame(i).image)


def test_defaults_and_ground_truth_access():
    src = SyntheticSource(num_frames=2)
    assert (src.width, src.height, src.fps, src.num_frames, src.camera_id) == (960, 540, 15.0, 2, "cam0")
    meta, image = next(iter(src))
    gt = src.scene.frame(meta.frame_index)
    assert gt.instances.shape == image.shape[:2]
    src.close()


def test_same_seed_same_frames_other_seed_other_frames():
    def first(seed: int) -> np.ndarray:
        with SyntheticSource(width=160, height=96, num_frames=1, seed=seed) as s:
            return next(iter(s))[1].copy()

    np.testing.assert_array_equal(first(1), first(1))
    assert not np.array_equal(first(1), first(2))


def test_loop_restarts_the_scene_and_keeps_counting():
    src = SyntheticSource(width=160, height=96, fps=5.0, num_frames=3, loop=True)
    got = []
    for meta, _ in src:
        got.append(meta)
        if len(got) == 8:
            src.close()
    assert len(got) == 8, "close() ends the iteration at the next frame"
    assert [m.frame_index for m in got] == [0, 1, 2, 0, 1, 2, 0, 1]
    assert [m.seq for m in got] == list(range(8))
    assert [m.pts_ns for m in got] == [round(k * 2e8) for k in range(8)]


def test_string_options_from_the_source_spec_are_converted():
    src = SyntheticSource(
        width="160",
        height="96",
        fps="7.5",
        num_frames="4",
        num_objects="2",
        car_speed="0.2:0.4",
        start_inside="false",
        loop="no",
    )
    cfg = src.scene.config
    assert (cfg.width, cfg.height, cfg.fps, cfg.num_frames, cfg.num_objects) == (160, 96, 7.5, 4, 2)
    assert cfg.car_speed == (0.2, 0.4) and cfg.start_inside is False and src.loop is False
    assert sum(1 for _ in src) == 4


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (dict(num_frames=0, loop=True), "num_frames"),
        (dict(num_frames=-5), "num_frames"),
        (dict(fps="fast"), "fps"),
        (dict(width=10), "width"),
        (dict(colour="red"), "colour"),
        (dict(camera_id=""), "camera_id"),
        (dict(loop="sometimes"), "loop"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(options, named):
    with pytest.raises(ConfigError) as err:
        SyntheticSource(**options)
    assert named in str(err.value)
