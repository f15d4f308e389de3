"""argmax_labels and the low-resolution → full-resolution grid mapping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.postprocess.grid import block_grid, nearest_index, source_coords
from perception.postprocess.labels import argmax_labels, softmax

SIZES = [((16, 12), (64, 48)), ((17, 13), (100, 37)), ((120, 68), (1920, 1080)), ((23, 17), (10, 9)), ((5, 4), (5, 4))]


def test_argmax_known_answer_and_ties():
    logits = np.zeros((3, 2, 2), np.float32)
    logits[1, 0, 0] = 2.0
    logits[2, 1, 1] = 5.0
    logits[0, 0, 1] = -1.0  # then classes 1 and 2 tie at 0 -> lowest id (1)
    lab = argmax_labels(logits)
    assert lab.dtype == np.uint8 and lab.shape == (2, 2)
    np.testing.assert_array_equal(lab, [[1, 1], [0, 2]])


def test_argmax_writes_into_out_and_keeps_input():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(11, 5, 7)).astype(np.float32)
    before = logits.copy()
    out = np.full((5, 7), 99, np.uint8)
    res = argmax_labels(logits, out=out)
    assert res is out
    np.testing.assert_array_equal(out, np.argmax(logits, axis=0))
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_argmax_equals_numpy_with_ties_infinities_and_nans(dtype):
    """argmax_labels goes class plane by class plane; it must give np.argmax exactly (first max, and
    the first NaN where there is one)."""
    rng = np.random.default_rng(3)
    for _ in range(100):
        logits = rng.integers(-2, 3, (int(rng.integers(1, 12)), 6, 9)).astype(dtype)  # many ties
        if rng.random() < 0.3:
            logits.flat[rng.integers(0, logits.size, 3)] = np.nan
        if rng.random() < 0.3:
            logits.flat[rng.integers(0, logits.size, 3)] = rng.choice([np.inf, -np.inf])
        np.testing.assert_array_equal(argmax_labels(logits), np.argmax(logits, axis=0))


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), np.float32), np.zeros((3, 4, 4), np.int32), np.zeros((0, 4, 4), np.float32),
     np.zeros((256, 2, 2), np.float32), [[[0.0]]]],
)
def test_argmax_rejects_bad_logits(bad):
    with pytest.raises(ValueError, match="logits"):
        argmax_labels(bad)


def test_argmax_rejects_bad_out():
    with pytest.raises(ValueError, match="out must be uint8"):
        argmax_labels(np.zeros((2, 3, 4), np.float32), out=np.zeros((3, 4), np.int32))


def test_softmax_sums_to_one_and_keeps_input():
    logits = np.random.default_rng(1).normal(size=(5, 3, 4)).astype(np.float32) * 20
    before = logits.copy()
    p = softmax(logits)
    np.testing.assert_allclose(p.sum(axis=0), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.argmax(p, 0), np.argmax(logits, 0))
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize("grid,frame", SIZES)
def test_nearest_index_is_cv2_nearest_exact(grid, frame):
    (w, h), (W, H) = grid, frame
    cells = np.arange(w * h, dtype=np.int32).reshape(h, w).astype(np.float32)
    ref = cv2.resize(cells, (W, H), interpolation=cv2.INTER_NEAREST_EXACT)
    ours = cells[nearest_index(H, h)][:, nearest_index(W, w)]
    np.testing.assert_array_equal(ours, ref)


def test_source_coords_half_pixel_centres():
    # 4 cells over 16 pixels: pixel 0 sits at -0.375 cells, pixel 15 at 3.375, pixels 1/2 straddle cell 0's centre
    x = source_coords(16, 4)
    assert x[0] == pytest.approx(-0.375) and x[-1] == pytest.approx(3.375)
    assert x[1] < 0 < x[2]


@pytest.mark.parametrize("grid,frame", SIZES)
def test_blocks_partition_the_frame(grid, frame):
    g = block_grid(grid, frame)
    W, H = frame
    by, bx = np.nonzero(g.occupied())
    idx = g.flat_pixels(by, bx)
    counts = np.bincount(np.unique(idx), minlength=W * H)
    assert counts.min() == 1 and counts.size == W * H  # every pixel in some block, none outside the frame
    # a pixel's block is unique: the real (unpadded) pixel lists add up to the frame
    assert int(g.row_count.sum()) == H and int(g.col_count.sum()) == W


def test_block_weights_reproduce_cv2_bilinear():
    rng = np.random.default_rng(2)
    w, h, W, H = 9, 7, 50, 31
    cells = rng.normal(size=(h, w)).astype(np.float32)
    ref = cv2.resize(cells, (W, H), interpolation=cv2.INTER_LINEAR)
    from perception.postprocess.grid import bilerp_blocks

    g = block_grid((w, h), (W, H))
    by, bx = np.nonzero(g.occupied())
    corners = cells.reshape(-1)[g.corner_cells(by, bx)]
    fy, fx = g.weights(by, bx)
    vals = bilerp_blocks(corners, fy, fx)
    out = np.empty(W * H, np.float32)
    out[g.flat_pixels(by, bx)] = vals
    np.testing.assert_allclose(out.reshape(H, W), ref, atol=1e-4)


def test_block_grid_rejects_empty_sizes():
    with pytest.raises(ValueError):
        block_grid((0, 3), (10, 10))
    with pytest.raises(ValueError):
        block_grid((3, 3), (0, 10))


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 1), (88, 120), (3, 7)])
@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.int64])
def test_padded_is_numpy_edge_pad(shape, dtype):
    cells = np.random.default_rng(0).integers(0, 3, shape).astype(dtype)
    g = block_grid((shape[1], shape[0]), (shape[1] * 3, shape[0] * 2))
    padded = g.padded(cells)
    assert padded.dtype == cells.dtype
    np.testing.assert_array_equal(padded, np.pad(cells, 1, mode="edge"))
