"""Fixed-camera mode: moving regions from a background model become instances where the network agrees.

A surveillance camera does not move, so what moves is what matters. OpenCV's background subtractors
(MOG2: a mixture of Gaussians per pixel; KNN: the nearest recent samples per pixel) tell, per frame,
which pixels the recent past does not explain. Their shadow detection marks pixels that are only a
darker version of the background: those are left out (shadows are not objects).

The chain, per frame and per camera::

    fg      = model.apply(frame)                          # uint8[h', w'] 1 = moving (shadows out), h' = H * scale
    regions = moving_regions(fg, min_area=..., fill=...)  # int32[h', w'] 0 = none, 1..R connected regions
    votes   = region_votes(regions, semantic_logits, ...) # per region: class probabilities summed over it
    map, instances, labels = add_motion_instances(...)    # regions the network calls a thing, or nothing in
                                                          # particular, join the instance map

A region becomes an instance when the network's thing classes hold at least ``min_thing_probability``
of the probability averaged over its pixels, or when its top class is weak on average (below
``max_stuff_confidence``: the network sees "nothing in particular"); a region confidently labelled
stuff (a swaying tree) does not. It takes the allowed thing class with the highest summed probability,
its pixels are relabelled to that class in the label map (so labels and instances agree), and it keeps
only the pixels that no network instance already holds; a region that network instances already
cover for the most part adds nothing (the network found that object). Score: ``0.5 + 0.5 x`` the mean
thing probability, so every kept region may start a track and the network's confidence ranks them.

:class:`MotionModel` holds the one stateful part (the subtractor) for one camera; the rest are pure
functions. What it cannot do: split two people walking side by side into two regions (their region
is one instance unless the centre head separates them), or see a person who stands still for longer
than ``history`` frames (they become background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from perception.errors import ConfigError, DataError
from perception.types import Instance

__all__ = [
    "COVERED_FRACTION",
    "MotionModel",
    "MotionParams",
    "RegionVotes",
    "add_motion_instances",
    "moving_regions",
    "region_votes",
]

COVERED_FRACTION = 0.5
"""A moving region whose pixels are at least this much inside network instances adds nothing."""

SHADOW = 127
"""The value OpenCV's subtractors give shadow pixels (foreground is 255)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MotionParams:
    """The background model's settings (see :class:`perception.config.BackgroundConfig` for each)."""

    method: str = "mog2"
    history: int = 200
    threshold: float | None = None
    learning_rate: float | None = None
    shadows: bool = True
    shadow_ratio: float = 0.5
    scale: float = 0.5
    min_area: int = 200
    fill_px: int = 9
    warmup_frames: int = 10
    class_ids: tuple[int, ...] = ()
    """Thing class ids a region may become (empty: every thing class)."""
    min_thing_probability: float = 0.3
    max_stuff_confidence: float = 0.5
    trust_score: float = 0.5


def _subtractor(p: MotionParams):
    if p.method == "mog2":
        sub = cv2.createBackgroundSubtractorMOG2(history=p.history, varThreshold=p.threshold or 16.0,
                                                 detectShadows=p.shadows)
    elif p.method == "knn":
        sub = cv2.createBackgroundSubtractorKNN(history=p.history, dist2Threshold=p.threshold or 400.0,
                                                detectShadows=p.shadows)
    else:
        raise ConfigError(f"postprocess.motion must be one of off, mog2, knn, got {p.method!r}")
    sub.setShadowThreshold(float(p.shadow_ratio))
    return sub


def moving_regions(fg: np.ndarray, *, min_area: float, fill: int) -> np.ndarray:
    """Connected moving regions of a foreground mask, small ones dropped.

    Args:
        fg: ``uint8[h, w]``, non-zero = moving (shadows already removed).
        min_area: regions with fewer pixels (of this mask's resolution) are dropped.
        fill: side in pixels of the closing that fills gaps inside a region (0 = none); an opening
            with a 3x3 square first removes isolated noise pixels.

    Returns:
        ``int32[h, w]``: 0 = still, ``1..R`` = region ids in raster order of their first pixel.
    """
    if fg.ndim != 2:
        raise DataError(f"moving_regions: the mask must be 2-D, got shape {fg.shape}")
    m = (fg > 0).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if fill > 1:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (fill, fill)))
    n, ids, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8, ltype=cv2.CV_32S)
    keep = stats[:, cv2.CC_STAT_AREA] >= max(float(min_area), 1.0)
    keep[0] = False
    new = np.zeros(n, np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new[ids]


@dataclass(frozen=True, slots=True)
class RegionVotes:
    """What the network says about each moving region (row ``r - 1`` describes region ``r``)."""

    class_prob: np.ndarray
    """``float64[R, C]``: each class's softmax probability summed over the region's pixels."""
    top_prob: np.ndarray
    """``float64[R]``: the top class probability averaged over the region's pixels."""
    pixels: np.ndarray
    """``int64[R]``: pixels of the region (its resolution)."""


def region_votes(regions: np.ndarray, semantic_logits: np.ndarray) -> RegionVotes:
    """Sum the network's class probabilities over each region.

    Each region pixel reads the output cell it falls in (the grids are aligned at their borders:
    cell ``floor((y + 0.5) * h / H')``); the softmax is taken over those pixels only.

    Args:
        regions: ``int32[H', W']`` from :func:`moving_regions`.
        semantic_logits: ``float32[C, h, w]`` raw class scores at the network's output grid.

    Returns:
        :class:`RegionVotes` for regions ``1..R`` (``R = regions.max()``).
    """
    c, h, w = semantic_logits.shape
    n = int(regions.max()) if regions.size else 0
    idx = np.flatnonzero(regions)
    if n == 0 or idx.size == 0:
        return RegionVotes(np.zeros((n, c)), np.zeros(n), np.zeros(n, np.int64))
    hp, wp = regions.shape
    ys, xs = np.divmod(idx, wp)
    ly = np.minimum(((ys + 0.5) * (h / hp)).astype(np.int64), h - 1)
    lx = np.minimum(((xs + 0.5) * (w / wp)).astype(np.int64), w - 1)
    logits = semantic_logits[:, ly, lx].astype(np.float64)  # [C, N]
    logits -= logits.max(axis=0)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0)
    r = regions.ravel()[idx].astype(np.int64) - 1
    pixels = np.bincount(r, minlength=n)
    class_prob = np.stack([np.bincount(r, weights=logits[k], minlength=n) for k in range(c)], axis=1)
    top = np.bincount(r, weights=logits.max(axis=0), minlength=n) / np.maximum(pixels, 1)
    return RegionVotes(class_prob=class_prob, top_prob=top, pixels=pixels)


def _decide(votes: RegionVotes, thing_ids: Sequence[int], allowed: Sequence[int], min_thing: float,
            max_stuff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keep bool[R], class int64[R], score float32[R])`` of each region."""
    things = np.asarray(thing_ids, np.int64)
    allowed_ids = np.asarray(allowed or thing_ids, np.int64)
    px = np.maximum(votes.pixels, 1).astype(np.float64)
    thing_prob = votes.class_prob[:, things].sum(axis=1) / px
    keep = (votes.pixels > 0) & ((thing_prob >= min_thing) | (votes.top_prob < max_stuff))
    cls = allowed_ids[np.argmax(votes.class_prob[:, allowed_ids], axis=1)] if len(px) else np.zeros(0, np.int64)
    score = (0.5 + 0.5 * np.clip(thing_prob, 0.0, 1.0)).astype(np.float32)
    return keep, cls.astype(np.int64), score


def add_motion_instances(
    regions: np.ndarray,
    votes: RegionVotes,
    *,
    instance_map: np.ndarray,
    instances: Sequence[Instance],
    labels: np.ndarray,
    thing_ids: Sequence[int],
    allowed_ids: Sequence[int] = (),
    min_thing_probability: float = 0.3,
    max_stuff_confidence: float = 0.5,
    min_area: int = 1,
    trust_score: float = 0.5,
) -> tuple[np.ndarray, list[Instance], np.ndarray]:
    """Moving regions the network does not contradict, added to the instance map as new instances.

    Network instances scoring at least ``trust_score`` keep their pixels: a region they cover for the
    most part (:data:`COVERED_FRACTION`) adds nothing, and a region they cover in part keeps the rest.
    Weaker network instances give way: a moving region takes their pixels, and one that loses most
    of its pixels to moving regions is dropped (the moving region is that object, seen better).

    Args:
        regions: ``int32[H', W']`` region ids (any resolution; brought to the frame's with nearest).
        votes: :func:`region_votes` of ``regions``.
        instance_map: ``uint16[H, W]`` the network's instances (1..K), not modified.
        instances: their :class:`Instance` list (``instances[k].index == k + 1``).
        labels: ``uint8[H, W]`` full-resolution labels, not modified.
        thing_ids: the model's thing class ids.
        allowed_ids: classes a region may take (empty = ``thing_ids``).
        min_thing_probability, max_stuff_confidence: see the module docstring.
        min_area: a region keeping fewer full-resolution pixels is dropped.
        trust_score: network instances at or above this score are kept whole.

    Returns:
        ``(instance_map, instances, labels)``: new arrays when a region was added (instances renumbered
        ``1..``: the network's that remain, in their order, then the regions'; the regions' pixels
        relabelled to their class), the inputs themselves otherwise.
    """
    H, W = labels.shape
    if instance_map.shape != (H, W):
        raise DataError(f"add_motion_instances: instance map {instance_map.shape} != labels {(H, W)}")
    keep, cls, score = _decide(votes, thing_ids, allowed_ids, min_thing_probability, max_stuff_confidence)
    unchanged = instance_map, list(instances), labels
    if not keep.any():
        return unchanged
    r = len(keep)
    lut = np.zeros(r + 1, np.int32)
    lut[1:][keep] = np.flatnonzero(keep) + 1
    kept = lut[regions]
    full = kept if kept.shape == (H, W) else cv2.resize(kept, (W, H), interpolation=cv2.INTER_NEAREST)
    idx = np.flatnonzero(full)  # the moving pixels (a few per cent of the frame): all work is on them
    reg = full.ravel()[idx]
    net = instance_map.ravel()[idx].astype(np.int64)
    k = len(instances)
    strong = np.zeros(k + 1, bool)
    strong[1:] = [d.score >= trust_score for d in instances]
    region_px = np.bincount(reg, minlength=r + 1)
    covered = np.bincount(reg, weights=strong[net], minlength=r + 1)
    free = ~strong[net]
    free_px = np.bincount(reg[free], minlength=r + 1)
    ok = (covered < COVERED_FRACTION * np.maximum(region_px, 1)) & (free_px >= max(min_area, 1))
    ok[0] = False
    if not ok.any():
        return unchanged
    take = free & ok[reg]
    return _merge(instance_map, instances, labels, idx[take], reg[take], net[take], ok, cls, score)


def _merge(instance_map: np.ndarray, instances: Sequence[Instance], labels: np.ndarray, idx: np.ndarray,
           reg: np.ndarray, net: np.ndarray, ok: np.ndarray, cls: np.ndarray, score: np.ndarray
           ) -> tuple[np.ndarray, list[Instance], np.ndarray]:
    """The regions ``ok`` take the flat pixels ``idx`` (region ``reg``, network id ``net`` there); weak
    network instances that lose most of their pixels are dropped; everything is renumbered."""
    k, r = len(instances), len(ok) - 1
    lost = np.bincount(net, minlength=k + 1)
    before = np.array([0, *(d.area for d in instances)], np.int64)
    stays = np.ones(k + 1, bool)
    stays[1:] = lost[1:] * 2 < np.maximum(before[1:], 1)
    n_net, m = int(stays[1:].sum()), int(ok.sum())
    if n_net + m > 65535:
        raise DataError("add_motion_instances: more than 65535 instances do not fit a uint16 map")
    renum = np.zeros(k + 1 + r + 1, np.int64)  # network ids 0..k, then region ids at k+1+region
    renum[1:k + 1][stays[1:]] = np.arange(1, n_net + 1)
    renum[k + 1 + np.flatnonzero(ok)] = np.arange(n_net + 1, n_net + m + 1)
    # renumbering the network's ids (a gather over the frame) only when one was dropped
    out_map = instance_map.copy() if stays.all() else renum[:k + 1][instance_map].astype(np.uint16)
    out_map.ravel()[idx] = renum[k + 1 + reg]
    out_labels = labels.copy()
    cls_of = np.zeros(r + 1, np.uint8)
    cls_of[1:] = cls
    out_labels.ravel()[idx] = cls_of[reg]
    old = [d for d in instances if stays[d.index]]
    scores = np.array([*(d.score for d in old), *score[np.flatnonzero(ok) - 1]], np.float32)
    classes = np.array([*(d.class_id for d in old), *cls[np.flatnonzero(ok) - 1]], np.int64)
    from perception.postprocess.panoptic import describe_instances

    return out_map, describe_instances(out_map, scores, classes), out_labels


class MotionModel:
    """The background model of one camera, and the motion instances of each of its frames."""

    def __init__(self, params: MotionParams, *, thing_ids: Sequence[int]) -> None:
        if not 0 < params.scale <= 1:
            raise ConfigError(f"postprocess.background.scale must be in (0, 1], got {params.scale}")
        self.params = params
        self.thing_ids = tuple(int(t) for t in thing_ids)
        if not self.thing_ids:
            raise ConfigError("postprocess.motion needs a model with thing classes")
        self._sub = _subtractor(params)
        self.frames = 0

    def foreground(self, frame: np.ndarray) -> np.ndarray:
        """``uint8[h', w']`` 1 = moving, 0 = still or shadow, at the model's scale; updates the model."""
        p = self.params
        small = frame
        if p.scale < 1:
            h, w = frame.shape[:2]
            small = cv2.resize(frame, (max(1, round(w * p.scale)), max(1, round(h * p.scale))),
                               interpolation=cv2.INTER_AREA)
        fg = self._sub.apply(small, learningRate=-1.0 if p.learning_rate is None else float(p.learning_rate))
        self.frames += 1
        return (fg == 255).astype(np.uint8)

    def __call__(self, frame: np.ndarray, semantic_logits: np.ndarray, labels: np.ndarray,
                 instance_map: np.ndarray | None, instances: Sequence[Instance]
                 ) -> tuple[np.ndarray, list[Instance], np.ndarray]:
        """One frame: the instance map, instances and labels with the motion instances added.

        ``frame`` is BGR ``uint8[H, W, 3]``; ``instance_map`` None means no network instances.
        """
        p = self.params
        fg = self.foreground(frame)
        if instance_map is None:
            instance_map = np.zeros(labels.shape, np.uint16)
        if self.frames <= p.warmup_frames:
            return instance_map, list(instances), labels
        s2 = p.scale * p.scale
        regions = moving_regions(fg, min_area=p.min_area * s2, fill=round(p.fill_px * p.scale))
        if not regions.any():
            return instance_map, list(instances), labels
        votes = region_votes(regions, semantic_logits)
        return add_motion_instances(
            regions, votes, instance_map=instance_map, instances=instances, labels=labels,
            thing_ids=self.thing_ids, allowed_ids=p.class_ids, min_thing_probability=p.min_thing_probability,
            max_stuff_confidence=p.max_stuff_confidence, min_area=p.min_area, trust_score=p.trust_score,
        )
