"""Edge-aware refinement: known answers from issue 4 (step edges snapped within 1 px), untouched
regions, purity, and the clean-up of islands and holes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.errors import ConfigError
from perception.postprocess.grid import block_grid
from perception.postprocess.labels import argmax_labels
from perception.postprocess.refine import refine_labels
from perception.postprocess.upsample import (
    Upsampler,
    upsample_bilinear,
    upsample_nearest,
)

ROAD, SIDEWALK, BUILDING, CAR = 3, 4, 1, 8
W, H, GW, GH = 320, 240, 40, 30  # 8 frame pixels per grid cell
ROAD_BGR, SIDEWALK_BGR = (90, 80, 85), (200, 170, 150)


def _cell_centres(n_cells: int, n_px: int) -> np.ndarray:
    return (np.arange(n_cells) + 0.5) * n_px / n_cells - 0.5


def _logits_split(signed_dist: np.ndarray, a: int, b: int, slope: float = 0.6) -> np.ndarray:
    """Two-class logits on the grid: class ``a`` where ``signed_dist < 0`` (frame px), ``b`` beyond,
    a smooth (blurred) transition; every other class far below."""
    logits = np.full((11, GH, GW), -8.0, np.float32)
    logits[a] = -slope * signed_dist
    logits[b] = slope * signed_dist
    return logits


def _image_split(mask_b: np.ndarray, color_a, color_b, noise: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.where(mask_b[:, :, None], np.array(color_b, np.float32), np.array(color_a, np.float32))
    img = img + rng.normal(0.0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _first_b_per_row(labels: np.ndarray, b: int) -> np.ndarray:
    return np.argmax(labels == b, axis=1)


def _refiner(**kw) -> Upsampler:
    return Upsampler(method="refine", out_size=(W, H), num_classes=11, refine_classes=(ROAD, SIDEWALK), **kw)


@pytest.mark.parametrize("pool", [0, 1, 2])
def test_vertical_step_edge_is_snapped_within_one_pixel(pool):
    edge, predicted = 163, 159  # the network puts the kerb 4 px (half a cell) too far left
    xs = _cell_centres(GW, W)[None, :].repeat(GH, 0)
    logits = _logits_split(xs - predicted, ROAD, SIDEWALK)
    X = np.arange(W)[None, :].repeat(H, 0)
    image = _image_split(X >= edge, ROAD_BGR, SIDEWALK_BGR)

    bilinear = upsample_bilinear(logits, (W, H))
    refined = _refiner(color_pool_blocks=pool)(logits, image)
    assert np.abs(_first_b_per_row(bilinear, SIDEWALK) - predicted).max() <= 1  # the error to fix
    assert np.abs(_first_b_per_row(refined, SIDEWALK) - edge).max() <= 1


@pytest.mark.parametrize("shift", [-5.0, 4.0])
def test_slanted_step_edge_moves_onto_the_edge(shift):
    # A slanted error crosses cell centres, where the default band (the blocks whose cells differ)
    # ends; band_px=8 grows it by a cell. Most rows are then snapped within 1 px, none made worse by more than 1 px.
    Y, X = np.mgrid[0:H, 0:W].astype(np.float64)
    edge_x = 140.0 + 0.35 * Y  # true boundary: x = 140 + 0.35 y
    image = _image_split(X >= edge_x, ROAD_BGR, SIDEWALK_BGR, seed=1)
    cy, cx = np.meshgrid(_cell_centres(GH, H), _cell_centres(GW, W), indexing="ij")
    logits = _logits_split(cx - (140.0 + 0.35 * cy + shift), ROAD, SIDEWALK)

    # the error reaches 5 px where these logits say 6 log-odds: the cap must let colour overturn that
    refined = _refiner(band_px=8, max_color_logodds=12.0)(logits, image)
    bilinear = upsample_bilinear(logits, (W, H))
    true_first = np.ceil(140.0 + 0.35 * np.arange(H)).astype(int)
    err_b = np.abs(_first_b_per_row(bilinear, SIDEWALK) - true_first)
    err_r = np.abs(_first_b_per_row(refined, SIDEWALK) - true_first)
    assert (err_b <= 1).mean() < 0.05 and np.median(err_b) >= 3
    assert np.median(err_r) <= 1 and (err_r <= 1).mean() >= 0.5
    assert (err_r <= err_b + 1).all()


def test_horizontal_edge_between_road_and_a_non_refined_class():
    edge, predicted = 101, 104  # building above, road below; the network's boundary is 3 px low
    ys = _cell_centres(GH, H)[:, None].repeat(GW, 1)
    logits = _logits_split(ys - predicted, BUILDING, ROAD)
    Y = np.arange(H)[:, None].repeat(W, 1)
    image = _image_split(Y >= edge, (40, 60, 140), ROAD_BGR)
    refined = _refiner()(logits, image)
    err = np.abs(np.argmax(refined == ROAD, axis=0) - edge)
    assert (err <= 1).mean() >= 0.98 and err.max() <= 2
    assert set(np.unique(refined)) == {BUILDING, ROAD}


def test_boundaries_of_other_classes_are_left_alone():
    xs = _cell_centres(GW, W)[None, :].repeat(GH, 0)
    logits = _logits_split(xs - 158, BUILDING, CAR)
    image = _image_split(np.arange(W)[None, :].repeat(H, 0) >= 163, (40, 60, 140), (20, 20, 20))
    np.testing.assert_array_equal(_refiner()(logits, image), upsample_bilinear(logits, (W, H)))


def _textured_scene(seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(8, 10, 11)).astype(np.float32)
    coarse[..., [ROAD, SIDEWALK]] += 1.0  # plenty of road and sidewalk
    logits = np.ascontiguousarray(
        cv2.resize(coarse, (GW, GH), interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1) * 3.0
    )
    image = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    return logits, image


def test_far_from_boundaries_identical_to_nearest_and_inputs_untouched():
    logits, image = _textured_scene()
    logits_copy, image_copy = logits.copy(), image.copy()
    refined = _refiner()(logits, image).copy()
    labels = argmax_labels(logits)
    near = upsample_nearest(labels, (W, H))
    g = block_grid((GW, GH), (W, H))
    near_boundary = cv2.dilate(g.nonuniform(labels).view(np.uint8), np.ones((3, 3), np.uint8)) != 0
    by, bx = np.nonzero(g.occupied() & ~near_boundary)  # more than one block (the band) away
    far = g.flat_pixels(by, bx).reshape(-1)
    assert far.size > W * H // 10
    np.testing.assert_array_equal(refined.reshape(-1)[far], near.reshape(-1)[far])
    assert (refined != upsample_bilinear(logits, (W, H))).any()  # refinement did change something
    np.testing.assert_array_equal(logits, logits_copy)
    np.testing.assert_array_equal(image, image_copy)


def test_refine_labels_is_pure_and_matches_the_upsampler():
    logits, image = _textured_scene(seed=7)
    bilinear = upsample_bilinear(logits, (W, H))
    copies = logits.copy(), bilinear.copy(), image.copy()
    out = refine_labels(logits, bilinear, image, refine_classes=(ROAD, SIDEWALK))
    np.testing.assert_array_equal(out, _refiner()(logits, image))
    for a, b in zip(copies, (logits, bilinear, image)):
        np.testing.assert_array_equal(a, b)


def test_zero_colour_weight_gives_back_bilinear():
    logits, image = _textured_scene(seed=8)
    np.testing.assert_array_equal(_refiner(color_weight=0.0)(logits, image), upsample_bilinear(logits, (W, H)))


def _new_small_regions(labels: np.ndarray, bilinear: np.ndarray, min_px: int) -> int:
    """4-connected regions of one class, smaller than min_px, made only of pixels the refinement changed."""
    changed = labels != bilinear
    count = 0
    for c in np.unique(labels):
        n, comp, stats, _ = cv2.connectedComponentsWithStats((labels == c).view(np.uint8), connectivity=4)
        all_changed = np.bincount(comp[labels == c], weights=~changed[labels == c], minlength=n) == 0
        count += int(((stats[:, cv2.CC_STAT_AREA] < min_px) & all_changed)[1:].sum())
    return count


def test_small_islands_and_holes_are_not_created():
    edge, predicted = 163, 158
    xs = _cell_centres(GW, W)[None, :].repeat(GH, 0)
    logits = _logits_split(xs - predicted, ROAD, SIDEWALK, slope=0.25)
    X = np.arange(W)[None, :].repeat(H, 0)
    mask = X >= edge
    rng = np.random.default_rng(3)
    for _ in range(40):  # specks of the other colour on both sides near the boundary
        y, x = int(rng.integers(2, H - 4)), int(rng.integers(146, 178))
        mask[y : y + 3, x : x + 3] = ~mask[y, x]
    image = _image_split(mask, ROAD_BGR, SIDEWALK_BGR, seed=5)
    bilinear = upsample_bilinear(logits, (W, H))
    raw = _refiner(min_region_px=0)(logits, image).copy()
    refiner = _refiner(min_region_px=64)
    clean = refiner(logits, image).copy()
    assert _new_small_regions(raw, bilinear, 64) > 0  # without the clean-up, specks become islands / holes
    assert _new_small_regions(clean, bilinear, 64) == 0
    # the Upsampler's look-up scratch and the pure function's binary search agree, call after call
    np.testing.assert_array_equal(refiner(logits, image), clean)
    pure = refine_labels(logits, bilinear, image, refine_classes=(ROAD, SIDEWALK), min_region_px=64)
    np.testing.assert_array_equal(pure, clean)
    assert np.median(np.abs(_first_b_per_row(clean, SIDEWALK) - edge)) <= 1  # and the kerb is still snapped


def test_refine_labels_rejects_bad_arguments():
    logits, image = _textured_scene()
    bilinear = upsample_bilinear(logits, (W, H))
    with pytest.raises(ValueError, match="image_bgr"):
        refine_labels(logits, bilinear, image[:, :-1], refine_classes=(ROAD,))
    with pytest.raises(ValueError, match="labels_full"):
        refine_labels(logits, bilinear.astype(np.int32), image, refine_classes=(ROAD,))
    with pytest.raises(ValueError, match="outside"):
        refine_labels(logits, bilinear, image, refine_classes=(42,))
    with pytest.raises(ConfigError, match="color_sigma"):
        refine_labels(logits, bilinear, image, refine_classes=(ROAD,), color_sigma=float("nan"))
    with pytest.raises(ConfigError, match="color_pool_blocks"):
        refine_labels(logits, bilinear, image, refine_classes=(ROAD,), color_pool_blocks=-1)


def test_junction_blocks_refine_the_pair_and_keep_a_further_class():
    edge, predicted = 163, 159
    cy, cx = np.meshgrid(_cell_centres(GH, H), _cell_centres(GW, W), indexing="ij")
    logits = _logits_split(cx - predicted, ROAD, SIDEWALK)
    car = (cy < 100) & (cx > 120) & (cx < 200)  # a car over the kerb: road, sidewalk and car meet
    logits[CAR][car] = 20.0
    X = np.arange(W)[None, :].repeat(H, 0)
    image = _image_split(X >= edge, ROAD_BGR, SIDEWALK_BGR)
    Y = np.arange(H)[:, None].repeat(W, 1)
    image[(Y < 100) & (X > 120) & (X < 200)] = (20, 20, 20)

    bilinear = upsample_bilinear(logits, (W, H))
    refined = _refiner()(logits, image)
    g = block_grid((GW, GH), (W, H))
    labels = argmax_labels(logits)
    by, bx = np.nonzero(g.nonuniform(labels))
    corners = np.sort(labels.reshape(-1)[g.corner_cells(by, bx)], axis=1)
    n_classes = 1 + (np.diff(corners, axis=1) != 0).sum(axis=1)
    junction = g.flat_pixels(by[n_classes >= 3], bx[n_classes >= 3]).reshape(-1)
    assert junction.size > 0
    # in the junction blocks the pair is road / sidewalk: the car (a further class there) is untouched
    np.testing.assert_array_equal(refined.reshape(-1)[junction] == CAR, bilinear.reshape(-1)[junction] == CAR)
    changed = (refined != bilinear).reshape(-1)
    assert changed[junction].any()  # the road / sidewalk pair is refined inside junction blocks too
    rows = np.flatnonzero(np.arange(H) > 110)  # below the car: the plain kerb is snapped
    assert np.abs(_first_b_per_row(refined[rows], SIDEWALK) - edge).max() <= 1
