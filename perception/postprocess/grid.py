"""How the network's low-resolution output grid maps onto the full-resolution frame.

Convention (the one :func:`cv2.resize` uses, "half-pixel centres"): pixel ``i`` of an axis of
length ``n`` covers the interval ``[i, i + 1)`` and its value sits at its centre ``i + 0.5``. The
low-resolution grid (``w`` cells; the stride-``s`` output of a network whose input is a resize of the
frame, possibly with a different aspect ratio) and the frame (``W`` pixels) span the same extent, so
full-resolution pixel ``X`` sits at grid coordinate::

    x = (X + 0.5) * w / W - 0.5          (in cells; cell j's centre is at x = j)

* nearest (``cv2.INTER_NEAREST_EXACT``): cell ``min(floor((X + 0.5) * w / W), w - 1)``;
* bilinear (``cv2.INTER_LINEAR``, borders replicated): mixed between cells ``floor(x)`` and
  ``floor(x) + 1`` (each clamped to ``[0, w - 1]``) with weight ``f = x - floor(x)`` on the latter.

Every full-resolution pixel therefore belongs to exactly one *block*: the square between the centres
of four neighbouring cells (or a border half-cell); :class:`BlockGrid` lists, per block row and block
column, the pixels it holds and their weights, so that work is done only on the blocks that need it
(those whose four cells do not share one class, :meth:`BlockGrid.nonuniform`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def source_coords(n_out: int, n_in: int) -> np.ndarray:
    """``float64[n_out]`` grid coordinate (in input cells, centre of cell j = j) of each output pixel."""
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """``int64[n_out]`` input cell that ``cv2.INTER_NEAREST_EXACT`` picks for each output pixel."""
    idx = np.floor((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def _axis_blocks(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block along one axis: padded pixel indices, their weights, and how many are real.

    Block ``b`` (``0..n_in``) holds the pixels whose coordinate ``x`` lies between the centres of
    cells ``b - 1`` and ``b``; blocks 0 and ``n_in`` are the border half-cells (``x < 0`` and
    ``x > n_in - 1``), where both "cells" are the edge cell (replicated border).
    """
    x = source_coords(n_out, n_in)
    b = np.clip(np.floor(x).astype(np.int64) + 1, 0, n_in)
    f = np.clip(x - (b - 1), 0.0, 1.0).astype(np.float32)
    counts = np.bincount(b, minlength=n_in + 1)
    width = max(1, int(counts.max()))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    # pixels of block b are starts[b] .. starts[b] + counts[b] - 1 (b is non-decreasing in X);
    # pad each block to `width` by repeating its last pixel (same weight, so writing it twice is harmless).
    j = np.arange(width)
    pix = starts[:, None] + np.minimum(j[None, :], np.maximum(counts[:, None] - 1, 0))
    pix = np.minimum(pix, n_out - 1)
    return pix.astype(np.int64), f[pix], counts


@dataclass(frozen=True, slots=True, eq=False)
class BlockGrid:
    """Pixel tables of the blocks of a ``(w, h)`` grid upsampled to ``(W, H)`` (see module docstring).

    There are ``(h + 1) × (w + 1)`` blocks: block ``(by, bx)`` lies between the centres of cells
    ``(by - 1, bx - 1)`` and ``(by, bx)``, indices clamped to the grid (the outer ring of blocks
    covers the frame's border half-cells, where the edge cells are replicated).

    Attributes (all read-only by convention):
        in_size: ``(w, h)`` of the low-resolution grid.
        out_size: ``(W, H)`` of the frame.
        row_pix: ``int64[h+1, sy]`` frame rows of each block row (padded by repetition).
        row_f: ``float32[h+1, sy]`` weight of the lower cell row at those rows.
        row_count: ``int64[h+1]`` real rows per block row (0 when none, e.g. when downsampling).
        col_pix, col_f, col_count: the same for columns, ``[w+1, sx]``.
        cell_px: full-resolution pixels per grid cell, the smaller of the two axes.
    """

    in_size: tuple[int, int]
    out_size: tuple[int, int]
    row_pix: np.ndarray
    row_f: np.ndarray
    row_count: np.ndarray
    col_pix: np.ndarray
    col_f: np.ndarray
    col_count: np.ndarray
    cell_px: float
    _cells: np.ndarray
    """``int64[h+2, w+2]`` flat cell index, edge-padded by one."""

    def occupied(self) -> np.ndarray:
        """``bool[h+1, w+1]``: blocks that hold at least one frame pixel."""
        return (self.row_count > 0)[:, None] & (self.col_count > 0)[None, :]

    def padded(self, cells: np.ndarray) -> np.ndarray:
        """A ``[h, w]`` grid map edge-padded by one cell: ``[h+2, w+2]``; block (by, bx)'s corners are
        ``[by, bx], [by, bx+1], [by+1, bx], [by+1, bx+1]`` of it."""
        h, w = cells.shape
        out = np.empty((h + 2, w + 2), cells.dtype)  # np.pad(cells, 1, mode="edge"), without its overhead
        out[1:-1, 1:-1] = cells
        out[0, 1:-1] = cells[0]
        out[-1, 1:-1] = cells[-1]
        out[:, 0] = out[:, 1]
        out[:, -1] = out[:, -2]
        return out

    def nonuniform(self, labels: np.ndarray) -> np.ndarray:
        """``bool[h+1, w+1]``: occupied blocks whose four corner cells do not all carry one class.

        Inside a uniform block every bilinearly interpolated score vector is a convex combination of
        four vectors with the same argmax, so the interpolated argmax is that class too.
        """
        p = self.padded(labels)
        a = p[:-1, :-1]
        nu = (a != p[:-1, 1:]) | (a != p[1:, :-1]) | (a != p[1:, 1:])
        return nu & self.occupied()

    def corner_cells(self, by: np.ndarray, bx: np.ndarray) -> np.ndarray:
        """``int64[N, 4]`` flat cell indices (``y * w + x``) of the corners (top-left, top-right,
        bottom-left, bottom-right) of blocks ``(by, bx)``."""
        c = self._cells
        return np.stack((c[by, bx], c[by, bx + 1], c[by + 1, bx], c[by + 1, bx + 1]), axis=1)

    def flat_pixels(self, by: np.ndarray, bx: np.ndarray) -> np.ndarray:
        """``int64[N, sy, sx]`` flat frame indices (``Y * W + X``) of the pixels of blocks ``(by, bx)``."""
        W = self.out_size[0]
        return (self.row_pix[by] * W)[:, :, None] + self.col_pix[bx][:, None, :]

    def weights(self, by: np.ndarray, bx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(fy float32[N, sy], fx float32[N, sx])`` bilinear weights of the pixels of blocks (by, bx)."""
        return self.row_f[by], self.col_f[bx]

    def box(self, by: np.ndarray, bx: np.ndarray) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` frame bounding box (exclusive ends) of blocks ``(by, bx)`` (N >= 1)."""
        return (
            int(self.row_pix[by.min(), 0]),
            int(self.row_pix[by.max(), -1]) + 1,
            int(self.col_pix[bx.min(), 0]),
            int(self.col_pix[bx.max(), -1]) + 1,
        )


def block_grid(in_size: tuple[int, int], out_size: tuple[int, int]) -> BlockGrid:
    """Build the :class:`BlockGrid` of a ``(w, h)`` grid in a ``(W, H)`` frame.

    Raises:
        ValueError: a side below 1.
    """
    w, h = (int(v) for v in in_size)
    W, H = (int(v) for v in out_size)
    if w < 1 or h < 1:
        raise ValueError(f"the low-resolution grid must have at least 1×1 cells, got {w}×{h}")
    if W < 1 or H < 1:
        raise ValueError(f"out_size must be positive (W, H), got {out_size}")
    row_pix, row_f, row_count = _axis_blocks(H, h)
    col_pix, col_f, col_count = _axis_blocks(W, w)
    return BlockGrid(
        in_size=(w, h),
        out_size=(W, H),
        row_pix=row_pix,
        row_f=row_f,
        row_count=row_count,
        col_pix=col_pix,
        col_f=col_f,
        col_count=col_count,
        cell_px=min(W / w, H / h),
        _cells=np.pad(np.arange(h * w, dtype=np.int64).reshape(h, w), 1, mode="edge"),
    )


def bilerp_blocks(corners: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of per-block corner values over the blocks' pixels.

    Args:
        corners: ``float32[N, ..., 4]`` values at the corners ``(top-left, top-right, bottom-left,
            bottom-right)`` of each block; the middle axes (if any) are carried along.
        fy: ``float32[N, sy]`` weights of the bottom corners per pixel row.
        fx: ``float32[N, sx]`` weights of the right corners per pixel column.

    Returns:
        ``float32[N, ..., sy, sx]`` (new array).
    """
    extra = corners.ndim - 2
    shape_x = (fx.shape[0],) + (1,) * extra + (fx.shape[1],)
    shape_y = (fy.shape[0],) + (1,) * extra + (fy.shape[1], 1)
    fxb = fx.reshape(shape_x)
    c = corners[..., :, None]  # [N, ..., 4, 1]
    top = c[..., 0, :] + (c[..., 1, :] - c[..., 0, :]) * fxb  # [N, ..., sx]
    bot = c[..., 2, :] + (c[..., 3, :] - c[..., 2, :]) * fxb
    top = top[..., None, :]
    return top + (bot[..., None, :] - top) * fy.reshape(shape_y)
