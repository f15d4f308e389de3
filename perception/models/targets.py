"""Panoptic-DeepLab training targets derived from a semantic label map (CamVid has no instance ids).

Instances are the connected components (8-connectivity) of each thing class. Each gets a centre at
its centre of mass; the targets are a Gaussian centre heatmap and per-pixel offsets to the centre,
both on the network's output grid.

Output-grid convention (shared with post-processing): output pixel ``(i, j)`` of a stride-``s`` map
sits at input pixel coordinate ``(s*i + (s-1)/2, s*j + (s-1)/2)`` (the centre of the s x s block it
summarises, which is where bilinear upsampling with ``align_corners=False`` puts it). Offsets are
``(dy, dx)`` in output pixels: ``centre_out - (i, j)``.

Pure numpy (no torch), so the same code can serve evaluation tools.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CAMVID_THING_IDS: tuple[int, ...] = (8, 9, 10)
"""Car, Pedestrian, Bicyclist."""

DEFAULT_SIGMA_INPUT_PX = 8.0
"""Gaussian sigma of the centre heatmap in input pixels (Panoptic-DeepLab's value). Larger sigma makes
centres easier to learn but merges neighbouring instances; smaller separates them but is harder to hit."""

DEFAULT_MIN_AREA = 16
"""Components smaller than this (input pixels) get no instance target: they are mostly label noise or
slivers cut by a crop, and their centres are meaningless. Larger values drop genuinely distant objects."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceTargets:
    instance_map: np.ndarray
    """uint16[H, W] at input resolution: 0 = no instance, k = k-th component (1-based)."""
    classes: np.ndarray
    """int64[K]: class id of instance k+1."""
    centers: np.ndarray
    """float32[K, 2] (y, x) centre of mass in **input** pixels."""
    heatmap: np.ndarray
    """float32[h, w] at the output grid: max over instances of exp(-d^2 / (2 sigma^2)), peak 1."""
    offsets: np.ndarray
    """float32[2, h, w] (dy, dx) in output pixels from each output pixel to its instance's centre; 0 elsewhere."""
    offset_mask: np.ndarray
    """bool[h, w]: output pixels that belong to an instance (where the offset loss applies)."""


def instance_targets(
    labels: np.ndarray,
    *,
    thing_ids: tuple[int, ...] = CAMVID_THING_IDS,
    stride: int = 4,
    sigma: float = DEFAULT_SIGMA_INPUT_PX,
    min_area: int = DEFAULT_MIN_AREA,
) -> InstanceTargets:
    """Derive instance targets from ``labels``: uint8[H, W] class ids, H and W multiples of ``stride``.

    Does not modify ``labels``. ``sigma`` is in input pixels (the heatmap uses ``sigma / stride`` on the
    output grid). Returns :class:`InstanceTargets`; with no thing pixels, K = 0 and all maps are zero.
    """
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8[H, W], got {labels.dtype}{list(labels.shape)}")
    H, W = labels.shape
    if H % stride or W % stride:
        raise ValueError(f"label size {W}x{H} is not a multiple of the stride {stride}")
    instance_map, classes = thing_components(labels, thing_ids, min_area)
    return targets_from_instances(instance_map, classes, stride=stride, sigma=sigma)


def targets_from_instances(
    instance_map: np.ndarray,
    classes: list[int] | np.ndarray,
    *,
    stride: int = 4,
    sigma: float = DEFAULT_SIGMA_INPUT_PX,
) -> InstanceTargets:
    """Targets of given instances: ``instance_map`` uint16[H, W] (0 = none, k = instance k, ids 1..K
    consecutive) and ``classes`` (K class ids), e.g. a data set's own per-object masks. H and W must be
    multiples of ``stride``. Does not modify its arguments (the returned map is the same array)."""
    if instance_map.ndim != 2 or instance_map.dtype != np.uint16:
        raise ValueError(f"instance_map must be uint16[H, W], got {instance_map.dtype}{list(instance_map.shape)}")
    H, W = instance_map.shape
    if H % stride or W % stride:
        raise ValueError(f"instance map size {W}x{H} is not a multiple of the stride {stride}")
    h, w = H // stride, W // stride
    K = len(classes)
    if K and int(instance_map.max()) > K:
        raise ValueError(f"instance_map has id {int(instance_map.max())} but only {K} classes were given")
    if K == 0:
        return InstanceTargets(
            instance_map=instance_map,
            classes=np.zeros(0, dtype=np.int64),
            centers=np.zeros((0, 2), dtype=np.float32),
            heatmap=np.zeros((h, w), dtype=np.float32),
            offsets=np.zeros((2, h, w), dtype=np.float32),
            offset_mask=np.zeros((h, w), dtype=bool),
        )

    flat = instance_map.ravel().astype(np.int64)
    ys, xs = np.divmod(np.arange(H * W, dtype=np.int64), W)
    area = np.bincount(flat, minlength=K + 1).astype(np.float64)
    cy = np.bincount(flat, weights=ys, minlength=K + 1) / np.maximum(area, 1)
    cx = np.bincount(flat, weights=xs, minlength=K + 1) / np.maximum(area, 1)
    present = area[1:] > 0  # an instance cropped away entirely gets no centre
    centers = np.stack([cy[1:], cx[1:]], axis=1).astype(np.float32)

    # Centres on the output grid: input coordinate c maps to output coordinate (c - (s-1)/2) / s.
    half = (stride - 1) / 2.0
    cyo = (cy - half) / stride  # [K+1], index 0 unused
    cxo = (cx - half) / stride
    heatmap = (_centre_heatmap(cyo[1:][present], cxo[1:][present], h, w, sigma / stride) if present.any()
               else np.zeros((h, w), dtype=np.float32))
    offsets, offset_mask = _centre_offsets(instance_map, cyo, cxo, stride, h, w)
    return InstanceTargets(
        instance_map=instance_map,
        classes=np.asarray(classes, dtype=np.int64),
        centers=centers,
        heatmap=heatmap,
        offsets=offsets,
        offset_mask=offset_mask,
    )


def thing_components(labels: np.ndarray, thing_ids: tuple[int, ...], min_area: int) -> tuple[np.ndarray, list[int]]:
    """The instance map (``uint16[H, W]``, ids 1..K: the 8-connected components of each thing class of at
    least ``min_area`` pixels, class by class in ``thing_ids`` order) and the class of each id."""
    H, W = labels.shape
    instance_map = np.zeros((H, W), dtype=np.uint16)
    classes: list[int] = []
    next_id = 1
    for cid in thing_ids:
        mask = (labels == cid).astype(np.uint8)
        if not mask.any():
            continue
        n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
        keep = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_area) + 1  # component labels kept
        if keep.size == 0:
            continue
        remap = np.zeros(n, dtype=np.uint16)
        remap[keep] = np.arange(next_id, next_id + keep.size, dtype=np.uint16)
        sel = remap[comp]
        instance_map = np.where(sel > 0, sel, instance_map)
        classes.extend([cid] * keep.size)
        next_id += keep.size
    return instance_map, classes


def _centre_heatmap(cyo: np.ndarray, cxo: np.ndarray, h: int, w: int, s_out: float) -> np.ndarray:
    """``float32[h, w]``: max over the centres ``(cyo, cxo)`` (``float64[K]``, output pixels) of a Gaussian
    of sigma ``s_out`` output pixels, peak 1."""
    gy = np.arange(h, dtype=np.float32)[None, :, None]
    gx = np.arange(w, dtype=np.float32)[None, None, :]
    d2 = (gy - cyo[:, None, None].astype(np.float32)) ** 2 + (gx - cxo[:, None, None].astype(np.float32)) ** 2
    return np.exp(-d2 / (2.0 * s_out * s_out)).max(axis=0).astype(np.float32)


def _centre_offsets(
    instance_map: np.ndarray, cyo: np.ndarray, cxo: np.ndarray, stride: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """``float32[2, h, w]`` (dy, dx) from each output pixel to its instance's centre (``cyo, cxo``:
    ``float64[K + 1]`` by id, output pixels), 0 elsewhere, and ``bool[h, w]`` where there is an instance.
    The instance of an output pixel is that of the input pixel nearest to its centre."""
    offsets = np.zeros((2, h, w), dtype=np.float32)
    sample = stride // 2
    inst_out = instance_map[sample::stride, sample::stride][:h, :w].astype(np.int64)
    offset_mask = inst_out > 0
    oy = np.arange(h, dtype=np.float64)[:, None]
    ox = np.arange(w, dtype=np.float64)[None, :]
    offsets[0] = np.where(offset_mask, cyo[inst_out] - oy, 0.0)
    offsets[1] = np.where(offset_mask, cxo[inst_out] - ox, 0.0)
    return offsets, offset_mask
