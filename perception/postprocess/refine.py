"""Edge-aware refinement of chosen class boundaries (road, sidewalk) against the full-resolution image.

The network sees a downscaled frame and answers on a grid of cells several frame pixels wide, so its
boundaries are smooth curves that can sit most of a cell away from the real kerb. Bilinear upsampling
(:mod:`perception.postprocess.upsample`) decides each pixel of a *band block* (2×2 cells whose classes
differ, :mod:`perception.postprocess.grid`) by the sign of the interpolated log-odds
``d = l_a - l_b`` of the block's two classes. Refinement adds the image's evidence to that prior,
Bayes-style, in the band blocks that involve a refined class:

1. **Colour of each side.** In a block where the network's classes ``a`` and ``b`` meet, the pixels
   whose interpolated log-odds ``d = l_a - l_b`` is beyond ``±confident_logodds`` are taken to show
   the two classes; their mean BGR colours are ``mu_a`` and ``mu_b`` and their spreads (variance per
   channel) ``v_a`` and ``v_b``, each at least ``color_sigma²`` (local to the block, so a road in
   shade and a road in sun each get theirs; a textured sidewalk gets a wider spread than smooth
   asphalt). The statistics are pooled over the band blocks within ``color_pool_blocks`` blocks
   that separate the same two classes, so that a block with few sure pixels on one side still gets
   a steady model. With ``band_px > 0`` the band grows by whole blocks around it; the colour
   statistics then also cover the blocks grown from each block.
2. **Evidence per pixel.** With the full-resolution colour ``I`` of the pixel, the log-likelihood
   ratio of two isotropic Gaussians (3 channels)::

       e = color_weight * (|I - mu_b|² / (2 v_b) - |I - mu_a|² / (2 v_a) + 1.5 ln(v_b / v_a)),
       clipped to ±max_color_logodds

   and the pixel takes class ``a`` where ``d + e >= 0``. Deep inside a block's corner cells the
   network is sure (``|d|`` large) and the colour cannot overturn it; near the network's boundary the
   pixel goes to the side whose colour it has, so the boundary snaps onto the colour edge between the
   two regions. Where both sides look alike (``mu_a ≈ mu_b``) ``e ≈ 0`` and the bilinear result
   stands. In blocks of three or four classes (junctions) the pair weighed is the two refined
   classes, or the refined class and the block's most frequent other class; pixels of a further
   class keep their bilinear label (on CamVid train this added about 0.6 points of road and 0.7 of
   sidewalk boundary F1).
3. **Islands and holes.** Changes made by step 2 that would stand alone inside another class
   (4-connected regions of pixels changed to one class, touching no unchanged pixel of it) and are
   smaller than ``min_region_px`` pixels (specks from texture or noise) are undone.

Everything is per band pixel: the cost is proportional to the length of the refined boundaries.
Pure function: :func:`refine_labels`; the in-place :func:`refine_band_into` serves
:class:`~perception.postprocess.upsample.Upsampler`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from perception.errors import ConfigError
from perception.postprocess.grid import BlockGrid, bilerp_blocks, block_grid
from perception.postprocess.labels import argmax_labels, check_logits

DEFAULT_COLOR_WEIGHT = 8.0
"""Weight of the colour log-likelihood ratio against the network's log-odds. Higher trusts the image
more (sharper snapping, but shadows and lane paint pull the boundary too), lower trusts the network
more (0 = plain bilinear). Tuned on CamVid train (tools/bench_refine_camvid.py): with the trained
model 2..16 were within 0.4 points of boundary F1 of each other (higher a little better); 8 is
the highest that kept mIoU above bilinear's."""

DEFAULT_COLOR_SIGMA = 8.0
"""Least spread (grey levels, per BGR channel) of a side's colours around its mean; each side's own
spread is measured and used when larger. Smaller makes small colour differences decisive on smooth
surfaces (follows faint kerbs, and also noise); larger needs a clear colour step before the boundary
moves. On CamVid train 4..12 were within 0.2 points of boundary F1."""

DEFAULT_MAX_COLOR_LOGODDS = 3.0
"""Cap on the colour evidence, in log-odds. Pixels where the network is surer than this keep its
class and are not even looked at, so it also sets the cost: lower keeps the refined boundary near the
network's and weighs fewer pixels, higher lets strong colour edges move it further (up to
``band_px``). With the trained CamVid model (input 256×192, train split) 3 and 4 scored as well as 12
(boundary F1 within 0.1 points) and cut the 1080p cost by about a quarter; 2 started to lose boundary
F1."""

DEFAULT_CONFIDENT_LOGODDS = 0.2
"""Pixels whose interpolated log-odds exceed this (either way) define the two sides' colours. Higher
gives purer means from fewer pixels (none, in blocks where the network is unsure throughout); lower
uses more pixels, including some on the wrong side of the network's boundary. On CamVid train with the
trained model and one block's colours (color_pool_blocks=0), 0.2 beat 0.5 by about 0.6 points of
boundary F1 on road and sidewalk at equal mIoU;
2.0 lost almost all of the gain (too few blocks had confident pixels on both sides), 0 and 0.1 cost
mIoU; with pooling (the default) 0.2 and 0.5 were within 0.15 points."""

DEFAULT_COLOR_POOL_BLOCKS = 1
"""The colours of a boundary's two sides are pooled over the band blocks within this many blocks
(3×3 for 1) that separate the same two classes. A single block (0) holds a cell's worth of pixels, often
with few or none on one side the network is sure of, and then has no colour model or a noisy one;
pooling gives steadier means and spreads, at the cost of mixing in colours up to this many cells
away (a shadow edge along the kerb). On CamVid train 1 gained about 1 point of road and 2 of sidewalk
boundary F1 over 0; 2 was no better on road."""

MIN_SIDE_PIXELS = 4
"""A block needs this many confident pixels on each side (pooled) to have a colour model; otherwise
it keeps the bilinear result."""

DEFAULT_MIN_REGION_PX = 64
"""Islands and holes that the refinement would create, smaller than this (full-resolution pixels),
are not made: 64 px is an 8×8 patch, below what a planner acts on at 1080p. Larger suppresses more
speckle but also small genuine corrections (a kerb corner at 480×360); 0 keeps every change. On CamVid
train 0 scored about 1 point more boundary F1 (the specks sit near true boundaries) but lowered
mIoU below bilinear's; 32..128 were within 0.15 points of each other."""


@dataclass(frozen=True, slots=True)
class RefineParams:
    """Refinement parameters; each one's trade-off is in the ``DEFAULT_*`` constant of its name."""

    band_px: int | None = None
    color_weight: float = DEFAULT_COLOR_WEIGHT
    color_sigma: float = DEFAULT_COLOR_SIGMA
    max_color_logodds: float = DEFAULT_MAX_COLOR_LOGODDS
    confident_logodds: float = DEFAULT_CONFIDENT_LOGODDS
    min_region_px: int = DEFAULT_MIN_REGION_PX
    color_pool_blocks: int = DEFAULT_COLOR_POOL_BLOCKS

    def __post_init__(self) -> None:
        def finite(v: object) -> bool:
            return isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v))

        if self.band_px is not None and (not isinstance(self.band_px, (int, np.integer)) or self.band_px < 0):
            raise ConfigError(f"band_px must be an integer >= 0 (pixels) or None, got {self.band_px!r}")
        if not finite(self.color_weight) or self.color_weight < 0:
            raise ConfigError(f"color_weight must be a finite number >= 0, got {self.color_weight!r}")
        if not finite(self.color_sigma) or self.color_sigma <= 0:
            raise ConfigError(f"color_sigma must be a finite number > 0 (grey levels), got {self.color_sigma!r}")
        if not finite(self.max_color_logodds) or self.max_color_logodds < 0:
            raise ConfigError(f"max_color_logodds must be a finite number >= 0, got {self.max_color_logodds!r}")
        if not finite(self.confident_logodds) or self.confident_logodds < 0:
            raise ConfigError(f"confident_logodds must be a finite number >= 0, got {self.confident_logodds!r}")
        if not isinstance(self.color_pool_blocks, (int, np.integer)) or not 0 <= self.color_pool_blocks <= 8:
            raise ConfigError(f"color_pool_blocks must be an integer in 0..8 (blocks), got {self.color_pool_blocks!r}")
        if not isinstance(self.min_region_px, (int, np.integer)) or self.min_region_px < 0:
            raise ConfigError(f"min_region_px must be an integer >= 0 (0 = keep all), got {self.min_region_px!r}")


def undo_small_changes_into(
    out: np.ndarray, changed_idx: np.ndarray, before: np.ndarray, min_px: int, position: np.ndarray | None = None
) -> int:
    """In place: undo changes that would create islands or holes smaller than ``min_px`` pixels.

    A region (4-connected) of pixels changed to the same class is undone when it is smaller than
    ``min_px`` and touches no unchanged pixel of that class: it would stand alone inside another class.
    Changes that only move an existing boundary, however small, are kept. Works on the changed pixels
    only (a sparse graph), never on a frame-sized buffer.

    Args:
        out: C-contiguous ``uint8[H, W]`` label map holding the changed values.
        changed_idx: ``int64[M]`` flat indices (``Y * W + X``) of the changed pixels, each once.
        before: ``uint8[M]`` their values before the change.
        min_px: area threshold (pixels) of the islands and holes to undo.
        position: optional scratch ``int32[H * W]`` holding -1 everywhere (it is left so): turns each
            neighbour look-up into one gather instead of a binary search. Without it the look-ups
            search the sorted changed indices (same result, slower on long boundaries).

    Returns:
        Number of pixels reverted.
    """
    if changed_idx.size == 0 or min_px <= 0:
        return 0
    H, W = out.shape
    flat = out.reshape(-1)
    order = np.argsort(changed_idx)
    idx, prev = changed_idx[order], before[order]
    new = flat[idx]
    m = idx.size
    x = idx % W

    if position is not None:
        if position.dtype != np.int32 or position.shape != (H * W,):
            raise ValueError(f"position must be int32[{H * W}], got {position.dtype}{list(position.shape)}")
        position[idx] = np.arange(m, dtype=np.int32)

    def lookup(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Position in ``idx`` of the frame pixels q, and whether they are changed pixels at all."""
        if position is not None:
            pos = position[q]
            return np.maximum(pos, 0), pos >= 0
        pos = np.minimum(np.searchsorted(idx, q), m - 1)
        return pos, idx[pos] == q

    # attached: a changed pixel next to an unchanged pixel of its new class
    attached = np.zeros(m, bool)
    edges_i, edges_j = [], []
    for off, valid in ((1, x < W - 1), (-1, x > 0), (W, idx < (H - 1) * W), (-W, idx >= W)):
        q = np.where(valid, idx + off, idx)
        pos, is_changed = lookup(q)
        same_now = flat[q] == new
        attached |= valid & ~is_changed & same_now
        if off > 0:  # graph edges between changed pixels now of the same class (each pair once)
            e = valid & is_changed & (new[pos] == new)
            edges_i.append(np.flatnonzero(e))
            edges_j.append(pos[e])
    if position is not None:
        position[idx] = -1
    if attached.all():
        return 0
    ei, ej = np.concatenate(edges_i), np.concatenate(edges_j)
    graph = coo_matrix((np.ones(ei.size, np.int8), (ei, ej)), shape=(m, m))
    n, comp = connected_components(graph, directed=False)
    area = np.bincount(comp, minlength=n)
    keep = (np.bincount(comp, weights=attached, minlength=n) > 0) | (area >= min_px)
    undo = ~keep[comp]
    if not undo.any():
        return 0
    flat[idx[undo]] = prev[undo]
    return int(np.count_nonzero(undo))


def _pool_same_pair(
    stats: np.ndarray, by: np.ndarray, bx: np.ndarray, pair: np.ndarray, blocks_shape: tuple[int, int], radius: int
) -> np.ndarray:
    """Sum each seed block's colour statistics with those of the seed blocks within ``radius`` blocks
    (Chebyshev) that separate the same two classes. ``stats``: ``float64[Ns, K]``; ``by, bx``: the
    seeds' block coordinates (distinct); ``pair``: ``int64[Ns]`` a key of their class pair;
    ``blocks_shape``: ``(h + 1, w + 1)``. Returns a new ``float64[Ns, K]``."""
    nb_h, nb_w = blocks_shape
    key = np.full((nb_h + 2 * radius, nb_w + 2 * radius), -1, np.int64)
    py, px = by + radius, bx + radius
    key[py, px] = np.arange(by.size)
    pooled = stats.copy()
    for oy in range(-radius, radius + 1):
        for ox in range(-radius, radius + 1):
            if oy == 0 and ox == 0:
                continue
            k = key[py + oy, px + ox]
            ok = k >= 0
            ok[ok] = pair[k[ok]] == pair[ok]
            pooled[ok] += stats[k[ok]]
    return pooled


def _grow_band(
    by: np.ndarray, bx: np.ndarray, uniform: np.ndarray, rings: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add ``rings`` rings of uniform neighbouring blocks (8-connected) to the seed blocks.

    Returns ``(by, bx, parent)`` of all blocks, seeds first; ``parent[i]`` is the index of the seed
    block that block ``i`` was reached from (its own index for seeds)."""
    nb_h, nb_w = uniform.shape
    taken = np.zeros((nb_h, nb_w), bool)
    taken[by, bx] = True
    seed = np.arange(by.size)
    parts = [(by, bx, seed)]
    fy, fx, fp = by, bx, seed
    for _ in range(rings):
        cy, cx, cp = [], [], []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy == 0 and dx == 0:
                    continue
                ny, nx = fy + dy, fx + dx
                ok = (ny >= 0) & (ny < nb_h) & (nx >= 0) & (nx < nb_w)
                ny, nx, np_ = ny[ok], nx[ok], fp[ok]
                ok2 = uniform[ny, nx] & ~taken[ny, nx]
                cy.append(ny[ok2]), cx.append(nx[ok2]), cp.append(np_[ok2])
        ny, nx = np.concatenate(cy), np.concatenate(cx)
        if ny.size == 0:
            break
        _, first = np.unique(ny * nb_w + nx, return_index=True)
        fy, fx, fp = ny[first], nx[first], np.concatenate(cp)[first]
        taken[fy, fx] = True
        parts.append((fy, fx, fp))
    return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _Band:
    """The band blocks of one call: seeds first (``n_seed`` of them), then the blocks grown from them.

    ``by, bx``: ``int64[N]`` block coordinates; ``parent``: ``int64[N]`` index of the seed each block
    belongs to; ``lo, hi``: ``int64[N]`` the two classes weighed (``lo < hi``); ``two``: ``bool[Ns]``
    seed blocks with exactly two classes (the others are junctions)."""

    by: np.ndarray
    bx: np.ndarray
    parent: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    two: np.ndarray
    n_seed: int


@dataclass(frozen=True, slots=True)
class _Prior:
    """Bilinear log-odds ``d`` (``float32[N, sy, sx]``) of ``lo`` over ``hi`` at every pixel of the band
    blocks, which of those pixels are real (``bool[N, sy, sx]``: blocks are padded to a common size by
    repeating their last row / column) and their flat frame indices (``[N, sy, sx]``)."""

    d: np.ndarray
    real: np.ndarray
    flat_pix: np.ndarray


@dataclass(frozen=True, slots=True)
class _Evidence:
    """Per seed block: the colour evidence as ``quad |I|² + lin·I + const`` (``float32[Ns]``,
    ``float32[Ns, 3]``, ``float32[Ns]``), and whether the block has a colour model (``bool[Ns]``)."""

    quad: np.ndarray
    lin: np.ndarray
    const: np.ndarray
    modelled: np.ndarray


def _junction_pairs(cand: np.ndarray, lut: np.ndarray, lo: np.ndarray, hi: np.ndarray, j: np.ndarray) -> None:
    """In place: the pair of classes weighed in the junction blocks ``j`` (three or four classes).

    The pair is the two refined classes when the block has both, else its refined class and its most
    frequent other class (the lowest id on a tie). ``cand``: ``uint8[N, 4]`` corner classes ascending;
    ``lut``: ``bool[256]`` refined classes; ``lo, hi``: ``[N]`` written at ``j``."""
    cj = cand[j].astype(np.int64)  # [Nj, 4] ascending
    rj = lut[cj]
    cnt = (cj[:, :, None] == cj[:, None, :]).sum(axis=2)
    first_r = np.take_along_axis(cj, np.argmax(rj, axis=1)[:, None], axis=1)[:, 0]
    last_r = np.take_along_axis(cj, 3 - np.argmax(rj[:, ::-1], axis=1)[:, None], axis=1)[:, 0]
    other = np.take_along_axis(cj, np.argmax(np.where(rj, -1, cnt), axis=1)[:, None], axis=1)[:, 0]
    partner = np.where(last_r != first_r, last_r, other)
    lo[j] = np.minimum(first_r, partner)
    hi[j] = np.maximum(first_r, partner)


def _band_blocks(labels: np.ndarray, grid: BlockGrid, lut: np.ndarray, band_px: int | None) -> _Band | None:
    """Blocks with a refined class and another one (``lut``: ``bool[256]``), with the pair weighed in
    each, grown by ``ceil(band_px / cell)`` rings of uniform blocks; None when there are none."""
    is_r = lut[labels]
    rp = grid.padded(is_r)
    any_r = rp[:-1, :-1] | rp[:-1, 1:] | rp[1:, :-1] | rp[1:, 1:]
    nonuniform = grid.nonuniform(labels)
    by, bx = np.nonzero(nonuniform & any_r)
    if by.size == 0:
        return None
    pos = grid.corner_cells(by, bx)  # [N, 4]
    cand = np.sort(labels.reshape(-1)[pos], axis=1)
    lo, hi = cand[:, 0], cand[:, 3]
    two = ((cand[:, 1] == lo) | (cand[:, 1] == hi)) & ((cand[:, 2] == lo) | (cand[:, 2] == hi))
    # junction blocks: pixels of any further class keep the bilinear label
    lo, hi = lo.copy(), hi.copy()
    j = np.nonzero(~two)[0]
    if j.size:
        _junction_pairs(cand, lut, lo, hi, j)
    lo, hi = lo.astype(np.int64), hi.astype(np.int64)
    n_seed = by.size
    rings = math.ceil(band_px / grid.cell_px) if band_px else 0
    if rings:
        by, bx, parent = _grow_band(by, bx, grid.occupied() & ~nonuniform, rings)
    else:
        parent = np.arange(n_seed)
    # a grown block is uniform, of one of its seed's two classes
    return _Band(by=by, bx=bx, parent=parent, lo=lo[parent], hi=hi[parent], two=two, n_seed=n_seed)


def _band_prior(logits: np.ndarray, grid: BlockGrid, band: _Band) -> _Prior:
    """Bilinear log-odds of ``lo`` over ``hi`` at every pixel of the band (see :class:`_Prior`)."""
    by, bx = band.by, band.bx
    pos = grid.corner_cells(by, bx)
    flat_logits = logits.reshape(logits.shape[0], -1)
    diff = (flat_logits[band.lo[:, None], pos] - flat_logits[band.hi[:, None], pos]).astype(np.float32, copy=False)
    fy, fx = grid.weights(by, bx)
    d = bilerp_blocks(diff, fy, fx)  # [N, sy, sx]
    sy, sx = d.shape[1], d.shape[2]
    # blocks are padded to a common size by repeating their last row / column: skip the repeats
    real = (np.arange(sy)[None, :] < grid.row_count[by][:, None])[:, :, None] & (
        np.arange(sx)[None, :] < grid.col_count[bx][:, None]
    )[:, None, :]
    return _Prior(d=d, real=real, flat_pix=grid.flat_pixels(by, bx))


def _side_sums(
    image_flat: np.ndarray, out: np.ndarray, band: _Band, prior: _Prior, step: int, confident: float
) -> np.ndarray:
    """``float32[N, 10]`` per band block: colour sums of side a, its count, sums of side b, its count,
    sum of ``|I|²`` of a, of b, over the pixels the network is sure about (``|d| > confident``),
    sampled every ``step`` pixels (means need no full resolution)."""
    n_all = band.by.size
    sub = (slice(None), slice(None, None, step), slice(None, None, step))
    d_s, real_s = prior.d[sub].reshape(n_all, -1), prior.real[sub].reshape(n_all, -1)
    n_p = d_s.shape[1]
    # per sampled pixel the features summed: B, G, R, 1 (the count), |I|² (all integers, so the float32
    # sums below are exact and their order does not matter)
    feat = np.empty((n_all, n_p, 5), np.float32)
    feat[:, :, :3] = np.take(image_flat, prior.flat_pix[sub].reshape(n_all, -1), axis=0)  # [N, P, 3]
    feat[:, :, 3] = 1.0
    sq = feat[:, :, 4]
    np.multiply(feat[:, :, 0], feat[:, :, 0], out=sq)
    sq += feat[:, :, 1] * feat[:, :, 1]
    sq += feat[:, :, 2] * feat[:, :, 2]
    t = np.float32(confident)
    # in junction blocks only the pixels labelled with one of the pair count for its colours (in
    # two-class blocks the sign of d already says which)
    real_a, real_b = real_s, real_s.copy()
    jb = np.flatnonzero(~band.two[band.parent])
    if jb.size:
        real_a = real_s.copy()
        lab_j = np.take(out.reshape(-1), prior.flat_pix[sub][jb].reshape(jb.size, -1))
        real_a[jb] &= lab_j == band.lo[jb, None]
        real_b[jb] &= lab_j == band.hi[jb, None]
    sides = np.empty((n_all, 2, n_p), np.float32)  # [N, side a | side b, P]
    sides[:, 0] = (d_s > t) & real_a
    sides[:, 1] = (d_s < -t) & real_b
    r = sides @ feat  # [N, 2, 5]: one small product per block instead of four
    return np.concatenate([r[:, 0, :4], r[:, 1, :4], r[:, :, 4]], axis=1)


def _colour_evidence(
    image_flat: np.ndarray, out: np.ndarray, grid: BlockGrid, band: _Band, prior: _Prior, params: RefineParams
) -> _Evidence:
    """Each seed block's colour model of its two sides (mean over the seed block and the blocks grown
    from it, pooled over ``color_pool_blocks``) as the coefficients of the evidence ``e``."""
    step = max(1, int(grid.cell_px // 5))
    stats = _side_sums(image_flat, out, band, prior, step, params.confident_logodds)
    n_seed = band.n_seed
    if band.by.size == n_seed:  # no grown blocks: each seed is its own family
        fam = stats.astype(np.float64)
    else:
        fam = np.zeros((n_seed, 10), np.float64)
        np.add.at(fam, band.parent, stats)  # over each seed's family of blocks
    if params.color_pool_blocks > 0:
        fam = _pool_same_pair(fam, band.by[:n_seed], band.bx[:n_seed], band.lo[:n_seed] * 256 + band.hi[:n_seed],
                              grid.occupied().shape, params.color_pool_blocks)
    n_a, n_b = fam[:, 3], fam[:, 7]
    mu_a64 = fam[:, :3] / np.maximum(n_a, 1.0)[:, None]
    mu_b64 = fam[:, 4:7] / np.maximum(n_b, 1.0)[:, None]
    s2 = params.color_sigma**2
    # each side's spread (variance per channel), floored at color_sigma²
    var_a = np.maximum((fam[:, 8] / np.maximum(n_a, 1.0) - (mu_a64**2).sum(1)) / 3.0, s2)
    var_b = np.maximum((fam[:, 9] / np.maximum(n_b, 1.0) - (mu_b64**2).sum(1)) / 3.0, s2)
    n_a, n_b = n_a * step * step, n_b * step * step  # in full-resolution pixels
    modelled = (n_a >= MIN_SIDE_PIXELS) & (n_b >= MIN_SIDE_PIXELS)
    # w (|I - mu_b|²/(2 vb) - |I - mu_a|²/(2 va) + 1.5 ln(vb/va)) = q |I|² + lin·I + const
    wgt = params.color_weight * modelled
    ka, kb = wgt / (2.0 * var_a), wgt / (2.0 * var_b)
    return _Evidence(
        quad=(kb - ka).astype(np.float32),
        lin=(2.0 * (ka[:, None] * mu_a64 - kb[:, None] * mu_b64)).astype(np.float32),  # [Ns, 3]
        const=(kb * (mu_b64**2).sum(1) - ka * (mu_a64**2).sum(1) + 1.5 * wgt * np.log(var_b / var_a)).astype(
            np.float32
        ),
        modelled=modelled,
    )


def _weigh_colour(
    image_flat: np.ndarray, idx: np.ndarray, par: np.ndarray, ev: _Evidence, cap: np.float32
) -> np.ndarray:
    """``float32[M]`` colour evidence of the frame pixels ``idx`` under their seed blocks' models
    ``par``, clipped to ``±cap``."""
    pix = np.take(image_flat, idx, axis=0).astype(np.float32)  # [M, 3]
    lin_p = np.take(ev.lin, par, axis=0)
    e = pix[:, 0] * lin_p[:, 0]
    e += pix[:, 1] * lin_p[:, 1]
    e += pix[:, 2] * lin_p[:, 2]
    e += np.take(ev.const, par)
    sq = pix[:, 0] * pix[:, 0]
    sq += pix[:, 1] * pix[:, 1]
    sq += pix[:, 2] * pix[:, 2]
    sq *= np.take(ev.quad, par)
    e += sq
    np.clip(e, -cap, cap, out=e)
    return e


def _decide_into(
    out: np.ndarray, image_flat: np.ndarray, band: _Band, prior: _Prior, ev: _Evidence, cap: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In place: the class of each band pixel where the colour can overturn the network (``|d| < cap``);
    elsewhere the sign of ``d``, i.e. the bilinear class, stands (and needs no write).

    Returns ``(idx, new, before)``: the flat frame indices weighed (distinct), their new and former
    classes (all empty when no pixel was weighed)."""
    d, flat_pix = prior.d, prior.flat_pix
    sy, sx = d.shape[1], d.shape[2]
    sel = np.flatnonzero((np.abs(d) < cap) & prior.real & ev.modelled[band.parent][:, None, None])
    if sel.size == 0:
        return sel, sel, sel
    blk = sel // (sy * sx)
    idx = np.take(flat_pix, sel)  # [M] frame pixels, distinct
    e = _weigh_colour(image_flat, idx, np.take(band.parent, blk), ev, cap)
    e += np.take(d, sel)
    lo_p, hi_p = np.take(band.lo.astype(np.uint8), blk), np.take(band.hi.astype(np.uint8), blk)
    new = np.where(e >= 0, lo_p, hi_p)
    flat_out = out.reshape(-1)
    before = np.take(flat_out, idx)
    if not band.two.all():  # a pixel of a further class in a junction block keeps it
        new = np.where((before == lo_p) | (before == hi_p), new, before)
    flat_out[idx] = new
    return idx, new, before


def refine_band_into(
    logits: np.ndarray,
    labels: np.ndarray,
    image_bgr: np.ndarray,
    grid: BlockGrid,
    out: np.ndarray,
    *,
    refine_classes: Sequence[int],
    params: RefineParams,
    position: np.ndarray | None = None,
) -> int:
    """Refine the boundaries of ``refine_classes`` in ``out`` in place (see the module docstring).

    Steps: the band (:func:`_band_blocks`), the network's prior in it (:func:`_band_prior`), the colour
    models of each boundary's two sides (:func:`_colour_evidence`), the decision per pixel
    (:func:`_decide_into`), then islands and holes (:func:`undo_small_changes_into`).

    Args:
        logits: ``float32[C, h, w]`` scores; ``labels``: their ``uint8[h, w]`` argmax.
        image_bgr: ``uint8[H, W, 3]`` the full-resolution frame (not modified).
        grid: :class:`BlockGrid` of ``(w, h)`` in ``(W, H)``.
        out: C-contiguous ``uint8[H, W]`` holding the bilinear result; modified in place.
        refine_classes: class ids to refine.
        params: :class:`RefineParams`.
        position: optional scratch ``int32[H * W]`` of -1 for :func:`undo_small_changes_into`
            (reused across calls by :class:`~perception.postprocess.upsample.Upsampler`).

    Returns:
        Number of pixels whose colour was weighed.
    """
    rc = np.asarray(sorted({int(c) for c in refine_classes}), np.int64)
    if rc.size == 0:
        return 0
    lut = np.zeros(256, bool)
    lut[rc] = True
    band = _band_blocks(labels, grid, lut, params.band_px)
    if band is None:
        return 0
    prior = _band_prior(logits, grid, band)
    image_flat = image_bgr.reshape(-1, 3)
    ev = _colour_evidence(image_flat, out, grid, band, prior, params)
    idx, new, before = _decide_into(out, image_flat, band, prior, ev, np.float32(params.max_color_logodds))
    if idx.size and params.min_region_px > 0:
        changed = new != before
        undo_small_changes_into(out, idx[changed], before[changed], params.min_region_px, position)
    return int(idx.size)


def refine_labels(
    logits: np.ndarray,
    labels_full: np.ndarray,
    image_bgr: np.ndarray,
    *,
    refine_classes: Sequence[int],
    band_px: int | None = None,
    color_weight: float = DEFAULT_COLOR_WEIGHT,
    color_sigma: float = DEFAULT_COLOR_SIGMA,
    max_color_logodds: float = DEFAULT_MAX_COLOR_LOGODDS,
    confident_logodds: float = DEFAULT_CONFIDENT_LOGODDS,
    min_region_px: int = DEFAULT_MIN_REGION_PX,
    color_pool_blocks: int = DEFAULT_COLOR_POOL_BLOCKS,
) -> np.ndarray:
    """Refined copy of a bilinear full-resolution label map (pure; inputs are not modified).

    Args:
        logits: ``float32[C, h, w]`` the network's class scores.
        labels_full: ``uint8[H, W]`` the bilinear upsample of ``logits``
            (:func:`~perception.postprocess.upsample.upsample_bilinear`).
        image_bgr: ``uint8[H, W, 3]`` the full-resolution frame, BGR.
        refine_classes: ids of the classes whose boundaries are refined (e.g. road, sidewalk).
        band_px, color_weight, color_sigma, max_color_logodds, confident_logodds, min_region_px,
            color_pool_blocks: see
            :class:`~perception.postprocess.upsample.Upsampler` and the ``DEFAULT_*`` constants here.

    Returns:
        ``uint8[H, W]`` refined class ids (new array).

    Raises:
        ValueError: shapes or dtypes that do not fit together. ConfigError: bad parameters.
    """
    check_logits(logits)
    C, h, w = logits.shape
    if not isinstance(labels_full, np.ndarray) or labels_full.ndim != 2 or labels_full.dtype != np.uint8:
        raise ValueError("labels_full must be uint8[H, W]")
    H, W = labels_full.shape
    if not isinstance(image_bgr, np.ndarray) or image_bgr.shape != (H, W, 3) or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"image_bgr must be uint8[{H}, {W}, 3] like labels_full, got "
            f"{getattr(image_bgr, 'dtype', type(image_bgr))}{list(getattr(image_bgr, 'shape', ()))}"
        )
    for c in refine_classes:
        if not 0 <= int(c) < C:
            raise ValueError(f"refine class {c} is outside 0..{C - 1}")
    params = RefineParams(
        band_px=band_px, color_weight=color_weight, color_sigma=color_sigma, max_color_logodds=max_color_logodds,
        confident_logodds=confident_logodds, min_region_px=min_region_px, color_pool_blocks=color_pool_blocks,
    )
    labels = argmax_labels(logits)
    out = labels_full.copy(order="C")
    refine_band_into(logits, labels, image_bgr, block_grid((w, h), (W, H)), out,
                     refine_classes=refine_classes, params=params)
    return out
