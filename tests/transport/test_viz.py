"""perception.viz: palettes, colourising, blending, drawing (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from perception.viz import (
    UNKNOWN_COLOR_BGR,
    colorize,
    draw_hud,
    draw_tracks,
    generated_palette,
    overlay,
    palette,
)
from tests.transport.helpers import CLASSES, make_labels, make_tracks


def test_palette_is_bgr_lookup():
    lut = palette(CLASSES)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[1]) == (128, 64, 128)[::-1]
    assert tuple(lut[2]) == (128, 0, 64)
    assert tuple(lut[200]) == UNKNOWN_COLOR_BGR


def test_generated_palette_distinct_neighbours():
    lut = generated_palette()
    assert lut.shape == (256, 3)
    assert all((lut[i] != lut[i + 1]).any() for i in range(254))


def test_colorize_matches_lookup_and_reuses_out():
    labels = make_labels(3)
    lut = palette(CLASSES)
    img = colorize(labels, lut)
    assert img.shape == (*labels.shape, 3)
    ys, xs = np.nonzero(labels == 2)
    assert (img[ys, xs] == lut[2]).all()
    assert tuple(img[0, 0]) == UNKNOWN_COLOR_BGR  # id 255
    out = np.empty_like(img)
    assert colorize(labels, lut, out=out) is out and np.array_equal(out, img)


def test_overlay_blends_and_leaves_inputs_alone():
    labels = make_labels(0)
    lut = palette(CLASSES)
    image = np.full((*labels.shape, 3), 100, np.uint8)
    before_img, before_lab = image.copy(), labels.copy()
    out = np.empty_like(image)
    res = overlay(image, labels, lut, alpha=0.25, out=out)
    assert res is out
    expected = np.round(0.75 * 100 + 0.25 * lut[labels].astype(float)).astype(np.uint8)
    assert np.abs(res.astype(int) - expected).max() <= 1
    assert np.array_equal(image, before_img) and np.array_equal(labels, before_lab)
    assert np.array_equal(overlay(image, labels, lut, alpha=0.0), image)
    assert np.array_equal(overlay(image, labels, lut, alpha=1.0), lut[labels])


def test_overlay_rejects_bad_arguments():
    labels = make_labels(0)
    lut = palette(CLASSES)
    image = np.zeros((*labels.shape, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image[:-1], labels, lut)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, labels, lut, alpha=2)
    with pytest.raises(ValueError, match="share memory"):
        overlay(image, labels, lut, out=image)
    with pytest.raises(ValueError, match="lut"):
        colorize(labels, lut[:10])


def test_draw_tracks_and_hud_return_copies():
    image = np.zeros((48, 64, 3), np.uint8)
    drawn = draw_tracks(image, make_tracks(), CLASSES)
    assert not image.any() and drawn.any()
    car_bgr = np.array(CLASSES[2].color[::-1])
    assert (drawn == car_bgr).all(axis=2).any()  # box in the car's colour
    hud = draw_hud(image, ["12.0 fps", "latency 30 ms"])
    assert not image.any() and hud[:20].any() and not hud[-10:].any()
    inplace = image.copy()
    assert draw_tracks(inplace, make_tracks(), None, copy=False) is inplace and inplace.any()
