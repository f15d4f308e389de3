"""Panoptic-DeepLab style instance grouping, as a chain of small pure array functions.

The network predicts, at its output resolution ``(h, w)`` (the input size divided by its stride):

* ``semantic_logits``: ``float32[C, h, w]`` class scores, axis order (class, y, x);
* ``center_heatmap``: ``float32[h, w]`` object-centre likelihood (raw logits or sigmoid);
* ``center_offsets``: ``float32[2, h, w]`` for every pixel the ``(dy, dx)`` vector, in
  network-output pixels, from the pixel to the centre of the object it belongs to.

Grouping happens at that low resolution (it is cheap there)::

    centers = find_centers(heatmap, ...)                       # int64[K, 2] (y, x)
    ids     = group_pixels(thing_mask, offsets, centers)       # int32[h, w], 0 = none, k+1 = centre k
    ids, classes, scores = merge_semantic_and_instance(...)    # majority class, score, minimum area
    full    = instances_full_resolution(ids, labels_full, ...) # uint16[H, W] on full-res thing pixels
    insts   = describe_instances(full, scores, classes)        # list[Instance]

None of these functions modifies its arguments; none loops in Python over pixels, and the only loop
over instances is the one that builds the returned :class:`~perception.types.Instance` objects.
:class:`PanopticGrouper` strings them together with named thresholds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

from perception.errors import ConfigError, DataError
from perception.postprocess.labels import argmax_labels
from perception.types import Instance

__all__ = [
    "PanopticGrouper",
    "describe_instances",
    "find_centers",
    "group_pixels",
    "instances_full_resolution",
    "merge_semantic_and_instance",
]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float32, copy=False)))).astype(np.float32, copy=False)


def find_centers(heatmap: np.ndarray, *, threshold: float, nms_kernel: int, top_k: int) -> np.ndarray:
    """Object centres: local maxima of the centre heatmap above a threshold, best ``top_k`` first.

    Non-maximum suppression is a max-pool equality test: a pixel is a peak when it equals the maximum
    of its ``nms_kernel x nms_kernel`` neighbourhood (grey dilation). Pixels on a plateau of equal
    maxima are all peaks (as in Panoptic-DeepLab).

    Args:
        heatmap: ``float32[h, w]`` centre scores (probabilities, already passed through a sigmoid),
            axis order (y, x).
        threshold: minimum score of a centre (strictly greater than).
        nms_kernel: odd side, in heatmap pixels, of the suppression window.
        top_k: keep at most this many centres (the highest scoring).

    Returns:
        ``int64[K, 2]`` centre coordinates ``(y, x)`` in heatmap pixels, sorted by decreasing score,
        ``K <= top_k``.
    """
    if heatmap.ndim != 2:
        raise DataError(f"find_centers: heatmap must be 2-D [h, w], got shape {heatmap.shape}")
    if nms_kernel < 1 or nms_kernel % 2 == 0:
        raise ConfigError(f"find_centers: nms_kernel must be an odd integer >= 1, got {nms_kernel}")
    if top_k < 1:
        raise ConfigError(f"find_centers: top_k must be >= 1, got {top_k}")
    hm = np.ascontiguousarray(heatmap, dtype=np.float32)
    pooled = cv2.dilate(hm, np.ones((nms_kernel, nms_kernel), np.uint8), borderType=cv2.BORDER_REPLICATE)
    peaks = np.flatnonzero((hm == pooled) & (hm > threshold))
    if peaks.size > top_k:
        scores = hm.ravel()[peaks]
        keep = np.argpartition(-scores, top_k - 1)[:top_k]
        peaks = peaks[keep]
    scores = hm.ravel()[peaks]
    order = np.lexsort((peaks, -scores))  # by decreasing score, ties in raster order (deterministic)
    peaks = peaks[order]
    ys, xs = np.divmod(peaks, hm.shape[1])
    return np.stack([ys, xs], axis=1).astype(np.int64)


def group_pixels(
    thing_mask: np.ndarray,
    offsets: np.ndarray,
    centers: np.ndarray,
    *,
    max_distance: float | None = None,
) -> np.ndarray:
    """Assign every thing pixel to the centre nearest to the centre location it predicts.

    Pixel ``(y, x)`` with offset ``(dy, dx)`` votes for the location ``(y + dy, x + dx)``; it joins
    centre ``k`` minimising the Euclidean distance from that location to ``centers[k]``.

    Args:
        thing_mask: ``bool[h, w]``, True on pixels whose semantic class is a thing class.
        offsets: ``float32[2, h, w]``, axis 0 is ``(dy, dx)``, in the same pixels as the mask.
        centers: ``int64[K, 2]`` ``(y, x)``, as returned by :func:`find_centers`.
        max_distance: optional, in the same pixels: a pixel whose voted location is farther than
            this from every centre stays 0 (its offset is unreliable; it would otherwise stretch a
            far-away instance's box).

    Returns:
        ``int32[h, w]``: 0 off the thing mask (or everywhere when ``K == 0``), otherwise ``k + 1`` for
        the centre ``k`` (its row in ``centers``) the pixel was grouped to.
    """
    h, w = thing_mask.shape
    if offsets.shape != (2, h, w):
        raise DataError(f"group_pixels: offsets must be [2, {h}, {w}] (dy, dx), got {offsets.shape}")
    out = np.zeros((h, w), np.int32)
    centers = np.asarray(centers)
    if centers.shape[0] == 0:
        return out
    idx = np.flatnonzero(thing_mask)
    if idx.size == 0:
        return out
    ys, xs = np.divmod(idx, w)
    vy = ys.astype(np.float32) + offsets[0].ravel()[idx]
    vx = xs.astype(np.float32) + offsets[1].ravel()[idx]
    cy = centers[:, 0].astype(np.float32)
    cx = centers[:, 1].astype(np.float32)
    # [K, N] squared distances; K <= top_k (tens) and N = thing pixels at low resolution.
    d2 = (cy[:, None] - vy[None, :]) ** 2 + (cx[:, None] - vx[None, :]) ** 2
    best = np.argmin(d2, axis=0)
    ids = best.astype(np.int32) + 1
    if max_distance is not None:
        ids[d2[best, np.arange(idx.size)] > float(max_distance) ** 2] = 0
    out.ravel()[idx] = ids
    return out


def merge_semantic_and_instance(
    instance_ids: np.ndarray,
    labels: np.ndarray,
    *,
    center_scores: np.ndarray,
    thing_ids: Sequence[int],
    min_area: int,
    class_probs: np.ndarray | None = None,
    semantic_logits: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give each grouped instance a class (majority vote) and a score; drop small ones; renumber.

    Class: the most frequent thing class among the instance's pixels (a bincount over
    ``instance x class`` pairs; ties go to the lower class id).

    Score: ``center_score x mean probability of the voted class over the instance's pixels``. The
    probability comes from ``class_probs`` if given, else from a softmax of ``semantic_logits`` over
    the instance pixels only, else it is taken as 1 (score = centre score).

    Args:
        instance_ids: ``int32[h, w]`` from :func:`group_pixels` (0 = none, ``k + 1`` = centre ``k``).
        labels: ``uint8[h, w]`` semantic argmax at the same resolution.
        center_scores: ``float32[K]`` heatmap value (probability) at each centre, in centre order.
        thing_ids: class ids that are things; pixels of other classes never vote.
        min_area: instances with fewer pixels than this (network-output pixels) are dropped.
        class_probs: optional ``float32[C, h, w]`` softmax probabilities.
        semantic_logits: optional ``float32[C, h, w]`` raw logits (used when ``class_probs`` is None).

    Returns:
        ``(ids, class_ids, scores)``: ``ids`` ``int32[h, w]`` renumbered ``1..M`` in centre order
        (0 = none), ``class_ids`` ``int64[M]`` and ``scores`` ``float32[M]`` where entry ``m - 1``
        describes id ``m``.
    """
    h, w = instance_ids.shape
    if labels.shape != (h, w):
        raise DataError(f"merge_semantic_and_instance: labels {labels.shape} != instance ids {(h, w)}")
    k = int(np.asarray(center_scores).shape[0])
    empty = (np.zeros((h, w), np.int32), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if k == 0:
        return empty
    idx = np.flatnonzero(instance_ids)
    if idx.size == 0:
        return empty
    inst = instance_ids.ravel()[idx].astype(np.int64)  # 1..K
    lab = labels.ravel()[idx].astype(np.int64)
    n_cls = int(max(lab.max(), max(thing_ids, default=0))) + 1
    is_thing = np.zeros(n_cls, bool)
    is_thing[list(thing_ids)] = True
    votes = np.bincount(inst * n_cls + lab, weights=is_thing[lab], minlength=(k + 1) * n_cls)
    votes = votes.reshape(k + 1, n_cls)
    area = votes.sum(axis=1)  # thing pixels per instance
    cls = np.argmax(votes, axis=1)  # ties -> lower class id
    cls_of_pixel = cls[inst]
    if class_probs is not None or semantic_logits is not None:
        src = class_probs if class_probs is not None else semantic_logits
        flat = src.reshape(src.shape[0], -1)
        if flat.shape[1] != h * w:
            raise DataError(f"merge_semantic_and_instance: class scores {src.shape} do not match {(h, w)}")
        picked = flat[cls_of_pixel, idx].astype(np.float64)
        if class_probs is None:
            sub = flat[:, idx].astype(np.float64)
            mx = sub.max(axis=0)
            picked = np.exp(picked - mx) / np.exp(sub - mx).sum(axis=0)
        weights = picked * is_thing[lab]
        mean_prob = np.bincount(inst, weights=weights, minlength=k + 1) / np.maximum(area, 1)
    else:
        mean_prob = np.ones(k + 1)
    keep = area >= max(int(min_area), 1)
    keep[0] = False
    new_id = np.zeros(k + 1, np.int32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    ids = new_id[instance_ids]
    not_thing = np.ones(256, bool)
    not_thing[list(thing_ids)] = False
    ids[not_thing[labels]] = 0
    cs = np.concatenate([[0.0], np.asarray(center_scores, np.float64)])
    scores = (cs * mean_prob)[keep].astype(np.float32)
    return ids, cls[keep].astype(np.int64), scores


def instances_full_resolution(
    instance_lowres: np.ndarray,
    labels_full: np.ndarray,
    thing_ids: Sequence[int],
    out_size: tuple[int, int],
    *,
    instance_classes: np.ndarray | None = None,
) -> np.ndarray:
    """Bring a low-resolution instance map to full resolution, restricted to full-res thing pixels.

    Nearest-neighbour upsampling of ids (``cv2.INTER_NEAREST``), then every pixel whose
    full-resolution label is not a thing class is cleared. With ``instance_classes`` a pixel keeps its
    id only if its full-resolution label equals that instance's class (a car instance does not swallow
    an adjacent pedestrian's pixels). Only the window of frame pixels that the grid's non-zero cells
    reach is computed (the rest is 0): the cost follows the instances' extent, not the frame's.

    Args:
        instance_lowres: ``int32[h, w]`` or ``uint16[h, w]`` ids ``0..M``.
        labels_full: ``uint8[H, W]`` full-resolution semantic labels.
        thing_ids: thing class ids.
        out_size: ``(W, H)`` of the output, equal to ``labels_full``'s size.
        instance_classes: optional ``int64[M]``, class of id ``m`` at entry ``m - 1``.

    Returns:
        ``uint16[H, W]`` instance map, 0 = no instance.
    """
    return _full_resolution_window(instance_lowres, labels_full, thing_ids, out_size, instance_classes)[0]


@functools.lru_cache(maxsize=32)
def _nearest_tables(h: int, w: int, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows int64[H], cols int64[W])``: the grid row and column ``cv2.INTER_NEAREST`` takes for
    each frame row and column, read off ``cv2.resize`` itself (so they match it bit for bit)."""
    rows = np.repeat(np.arange(h, dtype=np.uint16)[:, None], 2, axis=1)
    cols = np.repeat(np.arange(w, dtype=np.uint16)[None, :], 2, axis=0)
    r = cv2.resize(rows, (2, H), interpolation=cv2.INTER_NEAREST)[:, 0].astype(np.int64)
    c = cv2.resize(cols, (W, 2), interpolation=cv2.INTER_NEAREST)[0].astype(np.int64)
    r.flags.writeable = False
    c.flags.writeable = False
    return r, c


def _full_resolution_window(
    instance_lowres: np.ndarray,
    labels_full: np.ndarray,
    thing_ids: Sequence[int],
    out_size: tuple[int, int],
    instance_classes: np.ndarray | None,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """:func:`instances_full_resolution` and the window ``(y0, y1, x0, x1)`` (exclusive ends) of the
    frame outside which the map is 0 (empty when there are no instances)."""
    width, height = out_size
    if labels_full.shape != (height, width):
        raise DataError(f"instances_full_resolution: labels {labels_full.shape} != out_size (W,H) {out_size}")
    if instance_lowres.size and int(instance_lowres.max()) > 65535:
        raise DataError("instances_full_resolution: more than 65535 instances do not fit a uint16 map")
    full = np.zeros((height, width), np.uint16)
    h, w = instance_lowres.shape
    occupied_rows = np.flatnonzero(instance_lowres.any(axis=1))
    occupied_cols = np.flatnonzero(instance_lowres.any(axis=0))
    if occupied_rows.size == 0:
        return full, (0, 0, 0, 0)
    rows, cols = _nearest_tables(h, w, height, width)
    # nearest tables are non-decreasing: the frame rows (columns) taken from the occupied grid rows
    # (columns) form one run
    y0, y1 = np.searchsorted(rows, [occupied_rows[0], occupied_rows[-1] + 1])
    x0, x1 = np.searchsorted(cols, [occupied_cols[0], occupied_cols[-1] + 1])
    low = instance_lowres.astype(np.uint16, copy=False)
    sub = np.take(np.take(low, rows[y0:y1], axis=0), cols[x0:x1], axis=1)
    lab = labels_full[y0:y1, x0:x1]
    if instance_classes is not None:
        # class of each id; id 0 maps to 255 (never a thing class), so background stays 0
        lut_cls = np.concatenate([[255], np.asarray(instance_classes)]).astype(np.uint8)
        sub[lut_cls[sub] != lab] = 0
    else:
        thing_lut = np.zeros(256, bool)
        thing_lut[list(thing_ids)] = True
        sub[~thing_lut[lab]] = 0
    full[y0:y1, x0:x1] = sub
    return full, (int(y0), int(y1), int(x0), int(x1))


def describe_instances(
    instance_map: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    *,
    window: tuple[int, int, int, int] | None = None,
) -> list[Instance]:
    """Box, area and centroid of every instance of a full-resolution map, as ``Instance`` objects.

    Boxes come from ``scipy.ndimage.find_objects`` (one C pass over the map, or over ``window``);
    area and centroid from the row and column sums of each instance's mask inside its box, so the work
    is proportional to the boxes' area, not the frame's. (The loop runs once per instance, as building
    the returned objects does anyway; nothing loops over pixels.) Ids with no pixels are skipped.

    Args:
        instance_map: ``uint16[H, W]`` ids ``0..M``.
        scores: ``float32[M]``, score of id ``m`` at entry ``m - 1``.
        class_ids: ``int64[M]``, class of id ``m`` at entry ``m - 1``.
        window: optional ``(y0, y1, x0, x1)`` (exclusive ends) outside which the map is known to be 0
            (as :func:`instances_full_resolution` computes it): only that part is searched.

    Returns:
        ``Instance`` list in increasing id order; boxes ``(x0, y0, x1, y1)`` exclusive, centroids
        ``(x, y)``, both in full-resolution pixels.
    """
    m = int(np.asarray(scores).shape[0])
    if m == 0:
        return []
    wy, wx = 0, 0
    part = instance_map
    if window is not None:
        wy, y1, wx, x1 = window
        part = instance_map[wy:y1, wx:x1]
    slices = ndimage.find_objects(part, max_label=m) if part.size else [None] * m
    out: list[Instance] = []
    for i, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        mask = part[sl] == i
        rows = np.count_nonzero(mask, axis=1)  # pixels per row of the box
        cols = np.count_nonzero(mask, axis=0)
        a = int(rows.sum())
        y0, y1, x0, x1 = sl[0].start + wy, sl[0].stop + wy, sl[1].start + wx, sl[1].stop + wx
        cy = float(rows @ np.arange(y0, y1)) / a
        cx = float(cols @ np.arange(x0, x1)) / a
        out.append(
            Instance(
                index=i,
                class_id=int(class_ids[i - 1]),
                score=float(scores[i - 1]),
                box=(float(x0), float(y0), float(x1), float(y1)),
                area=a,
                centroid=(cx, cy),
            )
        )
    return out


class PanopticGrouper:
    """Network outputs + full-resolution labels -> full-resolution instance map and instances.

    Keyword arguments (all thresholds at the network's output resolution):

    * ``thing_ids``: class ids that are countable objects.
    * ``center_threshold``: minimum centre probability. Lower finds more faint/occluded objects but
      also more spurious centres, which split one object into two.
    * ``nms_kernel``: odd side of the centre NMS window in output pixels. Larger merges nearby
      objects' centres (missed instances in crowds); smaller splits large objects into several.
    * ``top_k``: most centres per frame; bounds the grouping cost (``K x thing pixels``).
    * ``min_area``: instances with fewer output pixels are dropped (noise vs. small far objects;
      at stride 4 one output pixel is 16 input pixels).
    * ``max_center_distance``: a thing pixel whose offset points farther than this (output pixels)
      from every centre is left out of all instances. Smaller gives tighter masks and boxes with an
      imprecise offset head; larger keeps object edges whose offsets are poor. None = no limit.
    * ``heatmap_is_logit``: True when the model emits raw centre logits (a sigmoid is applied).
    """

    def __init__(
        self,
        *,
        thing_ids: Sequence[int],
        center_threshold: float = 0.1,
        nms_kernel: int = 7,
        top_k: int = 64,
        min_area: int = 4,
        max_center_distance: float | None = 8.0,
        heatmap_is_logit: bool = False,
    ) -> None:
        if not thing_ids:
            raise ConfigError("PanopticGrouper: thing_ids is empty; name the classes that get instances")
        if not 0.0 <= center_threshold < 1.0:
            raise ConfigError(f"PanopticGrouper: center_threshold must be in [0, 1), got {center_threshold}")
        if nms_kernel < 1 or nms_kernel % 2 == 0:
            raise ConfigError(f"PanopticGrouper: nms_kernel must be odd and >= 1, got {nms_kernel}")
        if top_k < 1 or top_k > 65535:
            raise ConfigError(f"PanopticGrouper: top_k must be in [1, 65535], got {top_k}")
        self.thing_ids = tuple(int(t) for t in thing_ids)
        self.center_threshold = float(center_threshold)
        self.nms_kernel = int(nms_kernel)
        self.top_k = int(top_k)
        self.min_area = int(min_area)
        self.max_center_distance = None if max_center_distance is None else float(max_center_distance)
        self.heatmap_is_logit = bool(heatmap_is_logit)
        self._thing_lut = np.zeros(256, bool)
        self._thing_lut[list(self.thing_ids)] = True

    def __call__(
        self,
        semantic_logits: np.ndarray,
        center_heatmap: np.ndarray,
        center_offsets: np.ndarray,
        labels_full: np.ndarray,
    ) -> tuple[np.ndarray, list[Instance]]:
        """Group instances.

        Args:
            semantic_logits: ``float32[C, h, w]``.
            center_heatmap: ``float32[h, w]`` (logits when ``heatmap_is_logit``, else probabilities).
            center_offsets: ``float32[2, h, w]`` ``(dy, dx)`` in output pixels.
            labels_full: ``uint8[H, W]`` full-resolution (refined) semantic labels.

        Returns:
            ``(instance_map uint16[H, W], instances)`` with ``Instance.index`` = id in the map.
        """
        if semantic_logits.ndim != 3:
            raise DataError(f"PanopticGrouper: semantic_logits must be [C, h, w], got {semantic_logits.shape}")
        _, h, w = semantic_logits.shape
        if center_heatmap.shape != (h, w):
            raise DataError(f"PanopticGrouper: heatmap {center_heatmap.shape} != logits' {(h, w)}")
        heat = _sigmoid(center_heatmap) if self.heatmap_is_logit else center_heatmap
        labels = argmax_labels(semantic_logits)
        thing = self._thing_lut[labels]
        centers = find_centers(heat, threshold=self.center_threshold, nms_kernel=self.nms_kernel, top_k=self.top_k)
        ids = group_pixels(thing, center_offsets, centers, max_distance=self.max_center_distance)
        center_scores = heat[centers[:, 0], centers[:, 1]] if centers.size else np.zeros(0, np.float32)
        ids, classes, scores = merge_semantic_and_instance(
            ids,
            labels,
            center_scores=center_scores,
            thing_ids=self.thing_ids,
            min_area=self.min_area,
            semantic_logits=semantic_logits,
        )
        H, W = labels_full.shape
        full, window = _full_resolution_window(ids, labels_full, self.thing_ids, (W, H), classes)
        return full, describe_instances(full, scores, classes, window=window)
