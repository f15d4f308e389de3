"""Bring the network's low-resolution class scores to a full-resolution label map.

Three methods, from cheapest to best (grid convention: :mod:`perception.postprocess.grid`, the
half-pixel-centre mapping of :func:`cv2.resize`):

* ``nearest``: argmax on the low-resolution grid, then a nearest-neighbour resize of the labels
  (``cv2.INTER_NEAREST_EXACT``). Blocky boundaries, one cell (stride × frame/input scale) wide.
* ``bilinear``: class scores bilinearly upsampled, then argmax, but computed only inside the *band*
  of 2×2-cell blocks whose cells do not all share one class. Everywhere else the bilinear argmax
  equals the nearest label (the interpolated score vector is a convex combination of four vectors
  with the same argmax), so it is copied from the nearest upsample: the cost is proportional to the
  length of the boundaries, not the frame area. At each band pixel the candidates are the classes of
  its block's four cells (a class that wins in none of them almost never wins in between; when it
  would, the result is a thin sliver that full bilinear resizing would show and this does not).
* ``refine``: ``bilinear``, then edge-aware refinement of chosen classes (road and sidewalk by
  default) guided by the full-resolution image: see :mod:`perception.postprocess.refine`.

:class:`Upsampler` is the stateful front end for the hot path (reused output buffers, cached pixel
tables, per-step timings); the module-level functions are pure and allocate their results.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Literal

import cv2
import numpy as np

from perception.errors import ConfigError, ModelCardError
from perception.modelcard import ModelCard
from perception.postprocess.grid import BlockGrid, bilerp_blocks, block_grid
from perception.postprocess.labels import argmax_labels, check_logits
from perception.postprocess.refine import (
    DEFAULT_COLOR_POOL_BLOCKS,
    DEFAULT_COLOR_SIGMA,
    DEFAULT_COLOR_WEIGHT,
    DEFAULT_CONFIDENT_LOGODDS,
    DEFAULT_MAX_COLOR_LOGODDS,
    DEFAULT_MIN_REGION_PX,
    RefineParams,
    refine_band_into,
)

Method = Literal["nearest", "bilinear", "refine"]
METHODS: tuple[str, ...] = ("nearest", "bilinear", "refine")

DEFAULT_REFINE_CLASS_NAMES: tuple[tuple[str, ...], ...] = (("road",), ("sidewalk", "pavement"))
"""Classes refined by default, each as the names it goes by in different data sets (CamVid calls
the sidewalk "Pavement"). Names are matched case-insensitively against the model card."""


def _check_size(out_size: Sequence[int], name: str = "out_size") -> tuple[int, int]:
    try:
        W, H = (int(v) for v in out_size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be (width, height), got {out_size!r}") from exc
    if W < 1 or H < 1:
        raise ValueError(f"{name} must be positive (width, height), got {out_size!r}")
    return W, H


def _check_out(out: np.ndarray | None, W: int, H: int) -> np.ndarray:
    if out is None:
        return np.empty((H, W), np.uint8)
    if out.shape != (H, W) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8[{H}, {W}], got {out.dtype}{list(out.shape)}")
    return out


def upsample_nearest(labels: np.ndarray, out_size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Nearest-neighbour upsampling of a label map (half-pixel centres, ``cv2.INTER_NEAREST_EXACT``).

    Args:
        labels: ``uint8[h, w]`` class ids on the low-resolution grid.
        out_size: ``(W, H)`` of the frame.
        out: optional C-contiguous ``uint8[H, W]`` to write into (returned).

    Returns:
        ``uint8[H, W]``.
    """
    W, H = _check_size(out_size)
    if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8[h, w], got {getattr(labels, 'dtype', type(labels))}"
                         f"{list(getattr(labels, 'shape', ()))}")
    out = _check_out(out, W, H)
    res = cv2.resize(labels, (W, H), dst=out, interpolation=cv2.INTER_NEAREST_EXACT)
    if res is not out:  # cv2 allocated instead of writing in place (should not happen for a matching dst)
        np.copyto(out, res)
    return out


def bilinear_band_into(
    logits: np.ndarray, labels: np.ndarray, grid: BlockGrid, out: np.ndarray
) -> int:
    """Overwrite the band pixels of ``out`` with the argmax of bilinearly upsampled scores.

    ``out`` must already hold the nearest upsample of ``labels`` (outside the band it is final).

    Args:
        logits: ``float32[C, h, w]`` scores; ``labels``: their ``uint8[h, w]`` argmax.
        grid: the :class:`BlockGrid` of ``(w, h)`` in ``out``'s ``(W, H)``.
        out: C-contiguous ``uint8[H, W]``, modified in place.

    Returns:
        Number of band pixels recomputed (padding repeats included).
    """
    nu = grid.nonuniform(labels)
    by, bx = np.nonzero(nu)
    if by.size == 0:
        return 0
    flat_logits = logits.reshape(logits.shape[0], -1)
    pos = grid.corner_cells(by, bx)  # [N, 4] cell indices of the corners
    cand = np.sort(labels.reshape(-1)[pos], axis=1)  # [N, 4] corner classes, ascending
    two = (cand[:, 0] != cand[:, 3]) & (
        (cand[:, 1] == cand[:, 0]) | (cand[:, 1] == cand[:, 3])
    ) & ((cand[:, 2] == cand[:, 0]) | (cand[:, 2] == cand[:, 3]))
    flat_out = out.reshape(-1)
    fy_all, fx_all = grid.weights(by, bx)
    n_pix = 0

    # Blocks with two classes (almost all): the sign of one interpolated score difference decides.
    i2 = np.nonzero(two)[0]
    if i2.size:
        lo, hi = cand[i2, 0], cand[i2, 3]
        p = pos[i2]
        diff = flat_logits[lo[:, None], p] - flat_logits[hi[:, None], p]  # [N2, 4]
        val = bilerp_blocks(diff.astype(np.float32, copy=False), fy_all[i2], fx_all[i2])
        # lo where val >= 0 (ties -> lower id, like argmax), else hi: uint8 arithmetic (wrapping, exact)
        # instead of a broadcasting np.where, which is ten times slower here
        lab = (lo - hi)[:, None, None] * (val >= 0)
        lab += hi[:, None, None]
        idx = grid.flat_pixels(by[i2], bx[i2])
        flat_out[idx] = lab
        n_pix += idx.size

    # Junction blocks with three or four classes: argmax over the four corner classes.
    i3 = np.nonzero(~two)[0]
    if i3.size:
        c3 = cand[i3]
        p = pos[i3]
        vals = flat_logits[c3[:, :, None], p[:, None, :]]  # [N3, 4 candidates, 4 corners]
        val = bilerp_blocks(vals.astype(np.float32, copy=False), fy_all[i3], fx_all[i3])  # [N3, 4, sy, sx]
        lab = _first_max_label(val, c3)
        idx = grid.flat_pixels(by[i3], bx[i3])
        flat_out[idx] = lab
        n_pix += idx.size
    return n_pix


def _first_max_label(val: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``uint8[N, sy, sx]``: per pixel the candidate ``cand[n, k]`` of the first largest ``val[n, k]``
    (``val``: ``float32[N, K, sy, sx]``, ``cand``: ``uint8[N, K]`` ascending, so ties go to the lower
    id), as ``np.argmax`` over ``K`` picks it; computed one candidate plane at a time (a NaN falls
    back to ``np.argmax``, which takes the first NaN)."""
    best = val[:, 0].copy()
    lab = np.empty(best.shape, np.uint8)
    lab[...] = cand[:, 0, None, None]
    gt = np.empty(best.shape, bool)
    for i in range(1, val.shape[1]):
        np.greater(val[:, i], best, out=gt)
        np.copyto(lab, cand[:, i, None, None], where=gt)
        np.maximum(best, val[:, i], out=best)
    if np.isnan(best).any():
        k = np.argmax(val, axis=1)
        lab = np.take_along_axis(cand[:, :, None, None], k[:, None], axis=1)[:, 0]
    return lab


def upsample_bilinear(logits: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Argmax of bilinearly upsampled class scores, computed only in the boundary band.

    Args:
        logits: ``float32[C, h, w]`` class scores on the low-resolution grid.
        out_size: ``(W, H)`` of the frame.

    Returns:
        ``uint8[H, W]`` class ids (new array). See the module docstring for the band and candidates.
    """
    check_logits(logits)
    W, H = _check_size(out_size)
    _, h, w = logits.shape
    grid = block_grid((w, h), (W, H))
    labels = argmax_labels(logits)
    out = upsample_nearest(labels, (W, H))
    bilinear_band_into(logits, labels, grid, out)
    return out


def _check_refine_classes(refine_classes: Sequence[int], num_classes: int, method: str) -> tuple[int, ...]:
    """The refined class ids as a tuple; ConfigError for an id outside ``0..num_classes - 1``, a repeat,
    or none at all for ``refine``."""
    ids = tuple(int(c) for c in refine_classes)
    for c in ids:
        if not 0 <= c < num_classes:
            raise ConfigError(f"refine_classes: class id {c} is outside 0..{num_classes - 1}")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"refine_classes lists a class twice: {ids}")
    if method == "refine" and not ids:
        raise ConfigError("upsample 'refine' needs at least one class in refine_classes")
    return ids


class Upsampler:
    """Low-resolution class scores to a full-resolution label map, with reused buffers.

    Calling it returns a **view of an internal buffer that the next call overwrites**: copy it (or
    finish with it) before calling again. Pixel tables are cached per low-resolution grid size, so
    the first call for a new grid size is slower. ``last_timing_ms`` holds the sub-step times (ms)
    of the last call: ``argmax``, ``nearest``, ``bilinear`` (band), ``refine`` (when used), ``total``.
    Not thread-safe (one per pipeline stage).
    """

    def __init__(
        self,
        *,
        method: Method,
        out_size: tuple[int, int],
        num_classes: int,
        refine_classes: Sequence[int] = (),
        band_px: int | None = None,
        color_weight: float = DEFAULT_COLOR_WEIGHT,
        color_sigma: float = DEFAULT_COLOR_SIGMA,
        max_color_logodds: float = DEFAULT_MAX_COLOR_LOGODDS,
        confident_logodds: float = DEFAULT_CONFIDENT_LOGODDS,
        min_region_px: int = DEFAULT_MIN_REGION_PX,
        color_pool_blocks: int = DEFAULT_COLOR_POOL_BLOCKS,
    ) -> None:
        """
        Args:
            method: ``"nearest" | "bilinear" | "refine"`` (see the module docstring).
            out_size: ``(W, H)`` of the frames and label maps.
            num_classes: ``C``, the number of score channels expected (1..255).
            refine_classes: class ids refined against the image (``refine`` only; required there).
            band_px: ``None`` or 0 (default): refinement works in the blocks where the network's
                classes meet, so a boundary can move anywhere between the two cell centres around it.
                ``> 0`` grows that band by ``ceil(band_px / cell)`` blocks, so that errors which cross
                a cell centre can be fixed too, but the boundary may then jump to unrelated colour
                edges nearby, and the cost grows in proportion (on CamVid train, with the trained model,
                it lost more than it gained).
            color_weight: weight of the image's colour evidence against the network's log-odds
                (``refine``). Higher snaps harder to colour edges, but shadows and lane paint pull
                the boundary too; 0 gives back plain bilinear.
            color_sigma: least spread (grey levels per BGR channel) of a side's colours around its
                mean (means and spreads come from the pixels near the boundary the network is sure
                about; a side's measured spread is used when larger). Smaller makes faint colour
                differences decisive (faint kerbs, and noise); larger needs a clear colour step
                before the boundary moves.
            max_color_logodds: cap on the colour evidence (log-odds). Lower keeps the refined
                boundary near the network's and weighs fewer pixels (faster); higher lets strong edges
                move it across most of a cell.
            confident_logodds: pixels whose interpolated log-odds exceed this (either way) give the
                colours of the two sides of a boundary. Higher: purer colours from fewer pixels;
                lower: more pixels, some from the wrong side of the network's boundary.
            min_region_px: islands and holes that the refinement would create (regions of changed
                pixels standing alone inside another class), smaller than this many full-resolution
                pixels, are not made. Larger suppresses more speckle but also small genuine
                corrections (a far kerb corner); 0 keeps every change.
            color_pool_blocks: the two sides' colour statistics are pooled over the band blocks
                within this many blocks that separate the same two classes. Larger gives steadier
                colour models (and models where one block alone has too few sure pixels), but mixes
                in colours from further along the boundary; 0 uses each block alone.
        """
        if method not in METHODS:
            raise ConfigError(f"upsample method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method: str = method
        self.out_size = _check_size(out_size)
        if not isinstance(num_classes, (int, np.integer)) or not 1 <= int(num_classes) <= 255:
            raise ConfigError(f"num_classes must be an integer in 1..255, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.refine_classes = _check_refine_classes(refine_classes, self.num_classes, method)
        self.params = RefineParams(
            band_px=band_px,
            color_weight=color_weight,
            color_sigma=color_sigma,
            max_color_logodds=max_color_logodds,
            confident_logodds=confident_logodds,
            min_region_px=min_region_px,
            color_pool_blocks=color_pool_blocks,
        )  # validates (ConfigError)
        W, H = self.out_size
        self._out = np.empty((H, W), np.uint8)
        # refine's scratch for the islands-and-holes step (int32 per pixel, -1 between uses)
        self._position = np.full(H * W, -1, np.int32) if method == "refine" else None
        self._grid: BlockGrid | None = None
        self._labels: np.ndarray | None = None
        self.last_timing_ms: dict[str, float] = {}

    def _grid_for(self, h: int, w: int) -> BlockGrid:
        if self._grid is None or self._grid.in_size != (w, h):
            self._grid = block_grid((w, h), self.out_size)
            self._labels = np.empty((h, w), np.uint8)
        return self._grid

    def __call__(self, logits: np.ndarray, image_bgr: np.ndarray | None = None) -> np.ndarray:
        """Label map ``uint8[H, W]`` (a view of the reused buffer) for scores ``float32[C, h, w]``.

        ``image_bgr`` (``uint8[H, W, 3]``, the full-resolution frame) is required for ``refine`` and
        ignored otherwise. Neither input is modified.

        Raises:
            ValueError: wrong shapes or dtypes, or a missing image for ``refine``.
        """
        t0 = time.perf_counter()
        check_logits(logits)
        C, h, w = logits.shape
        if C != self.num_classes:
            raise ValueError(f"logits have {C} classes, this upsampler was made for {self.num_classes}")
        W, H = self.out_size
        if self.method == "refine":
            if image_bgr is None:
                raise ValueError("upsample 'refine' needs the full-resolution image (image_bgr)")
            if image_bgr.shape != (H, W, 3) or image_bgr.dtype != np.uint8:
                raise ValueError(
                    f"image_bgr must be uint8[{H}, {W}, 3] (the frame), got {image_bgr.dtype}{list(image_bgr.shape)}"
                )
        timing: dict[str, float] = {}
        if self.method == "nearest":
            labels = argmax_labels(logits)
        else:
            grid = self._grid_for(h, w)
            labels = argmax_labels(logits, out=self._labels)
        t1 = time.perf_counter()
        timing["argmax"] = (t1 - t0) * 1e3
        upsample_nearest(labels, self.out_size, out=self._out)
        t2 = time.perf_counter()
        timing["nearest"] = (t2 - t1) * 1e3
        if self.method != "nearest":
            bilinear_band_into(logits, labels, grid, self._out)
            t3 = time.perf_counter()
            timing["bilinear"] = (t3 - t2) * 1e3
            if self.method == "refine":
                refine_band_into(
                    logits, labels, image_bgr, grid, self._out,
                    refine_classes=self.refine_classes, params=self.params, position=self._position,
                )
                timing["refine"] = (time.perf_counter() - t3) * 1e3
        timing["total"] = (time.perf_counter() - t0) * 1e3
        self.last_timing_ms = timing
        return self._out


def refine_class_ids(
    card: ModelCard, names: Sequence[str | Sequence[str]] = DEFAULT_REFINE_CLASS_NAMES
) -> tuple[int, ...]:
    """Class ids of ``names`` in ``card`` (each entry a name or a tuple of alternative names).

    Raises:
        ConfigError: an entry none of whose names the card has (lists the card's classes).
    """
    ids: list[int] = []
    for entry in names:
        alts = (entry,) if isinstance(entry, str) else tuple(entry)
        found = None
        for name in alts:
            try:
                found = card.class_id(name)
                break
            except ModelCardError:
                continue
        if found is None:
            raise ConfigError(
                f"refine class {' / '.join(alts)!r} is not in model card {card.name!r}; "
                f"it has {[c.name for c in card.classes]}"
            )
        ids.append(found)
    return tuple(ids)


def make_upsampler(
    method: Method,
    *,
    card: ModelCard,
    out_size: tuple[int, int],
    refine_class_names: Sequence[str | Sequence[str]] | None = None,
    **overrides: object,
) -> Upsampler:
    """An :class:`Upsampler` for ``card``'s model.

    ``refine_class_names`` (``refine`` only) defaults to road and sidewalk (CamVid: "Road",
    "Pavement"); names are mapped to ids through the card. ``overrides`` are passed on to
    :class:`Upsampler` (``band_px``, ``color_weight``, ``color_sigma``, ``max_color_logodds``,
    ``confident_logodds``, ``min_region_px``, ``color_pool_blocks``, or ``refine_classes`` as ids).

    Raises:
        ConfigError: unknown method, unknown override, or a class the card does not have.
    """
    if method not in METHODS:
        raise ConfigError(f"upsample method must be one of {', '.join(METHODS)}, got {method!r}")
    allowed = {"band_px", "color_weight", "color_sigma", "max_color_logodds", "confident_logodds", "min_region_px",
               "color_pool_blocks", "refine_classes"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ConfigError(f"unknown upsampler option(s) {unknown}; allowed: {sorted(allowed)}")
    kwargs: dict[str, object] = dict(overrides)
    if method == "refine" and "refine_classes" not in kwargs:
        names = DEFAULT_REFINE_CLASS_NAMES if refine_class_names is None else refine_class_names
        kwargs["refine_classes"] = refine_class_ids(card, names)
    return Upsampler(method=method, out_size=out_size, num_classes=card.num_classes, **kwargs)  # type: ignore[arg-type]


def timing_header(upsampler: Upsampler) -> Mapping[str, float]:
    """The last call's sub-step times, rounded to µs, for the published header."""
    return {k: round(v, 3) for k, v in upsampler.last_timing_ms.items()}


__all__ = [
    "DEFAULT_REFINE_CLASS_NAMES",
    "METHODS",
    "Upsampler",
    "bilinear_band_into",
    "make_upsampler",
    "refine_class_ids",
    "timing_header",
    "upsample_bilinear",
    "upsample_nearest",
]
