"""Turn a generated frame's exact ground truth into imperfect detections, at stated rates.

The simulator stands in for segmentation + panoptic grouping when testing or evaluating a tracker: it
produces what grouping produces (an instance map with ids 1..K and one
:class:`~perception.types.Instance` per id) plus, for scoring, which ground-truth object each detection
came from.

Per frame, with the simulator's own random stream (so a simulator run is deterministic for its seed
and the order of the frames it is given):

1. **Eligible objects**: the frame's visible GT objects with ``visible_fraction >= min_visible_fraction``
   and ``area >= min_area_px``. Others are never detected (they count as misses of the detector, not
   of ``miss_rate``).
2. **Misses**: each eligible object is dropped with probability ``miss_rate``, independently per
   object and per frame (no bursts), so the measured rate is ``missed / eligible``.
3. **Mask perturbation** of each kept object: its visible mask is translated by ``(dx, dy)`` drawn
   from ``N(0, box_jitter · w)`` and ``N(0, box_jitter · h)`` (``w``, ``h`` its visible box size),
   rounded to pixels, then dilated (k > 0) or eroded (k < 0) by ``|k|`` pixels with ``k`` uniform in
   ``[-mask_jitter_px, mask_jitter_px]`` (a square kernel ``2|k|+1``). An erosion that would delete the
   whole mask is not applied (the translated mask is kept): a thin object is then detected with less
   jitter, it is not turned into an extra miss.
4. **Scores**: kept objects get ``clip(N(tp_score, score_noise), 0.01, 1)``.
5. **False positives**: the number in a frame is Poisson with mean ``fp_rate · n_visible`` (``n_visible``
   = ``len(frame.objects)``, every visible GT object), so ``false positives / visible GT objects``
   tends to ``fp_rate`` over a sequence. Each is an ellipse of a random thing class (uniform) standing on a
   random row of the lower half of the frame, taller the lower it stands (like a thing seen with the
   default horizon), at a random column, with score ``clip(N(fp_score, score_noise), 0.01, 1)``. They do
   not persist from frame to frame.
6. **Instance map**: detections are painted far to near (by the bottom row of their mask box; false
   positives by theirs), a nearer one overwriting a farther one where they overlap; a detection left
   with no pixels is dropped. Ids are 1..K in painting order, and every ``Instance``'s box, area and
   centroid are measured on the final map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from perception.errors import ConfigError
from perception.sim.scenes import THING_CLASSES, GtObject, SceneFrame
from perception.types import Instance


@dataclass(frozen=True, slots=True, kw_only=True)
class Detections:
    """What the simulated detector saw in one frame."""

    instances: list[Instance]
    """``instances[k].index == k + 1``: its id in ``instance_map``."""
    instance_map: np.ndarray
    """uint16[H, W]: 0 = background, k = ``instances[k - 1]``."""
    gt_ids: tuple[int, ...]
    """``gt_ids[k]``: the ground-truth object id ``instances[k]`` came from, 0 for a false positive."""
    missed_ids: tuple[int, ...] = ()
    """GT ids dropped by ``miss_rate`` this frame (eligible objects only)."""
    eligible_ids: tuple[int, ...] = ()
    """GT ids that passed ``min_visible_fraction`` / ``min_area_px`` this frame."""
    num_false_positives: int = 0
    """False positives drawn this frame (before any was painted over and dropped)."""


class DetectorSimulator:
    """Perturbs ground truth into detections; see the module docstring for the exact model.

    Args:
        miss_rate: probability that an eligible object is not detected in a frame (independent per object
            and frame). Higher → the tracker must coast through more gaps.
        fp_rate: mean false positives per visible GT object per frame (Poisson). Higher → more spurious
            tracks to suppress.
        box_jitter: standard deviation of the mask translation as a fraction of the object's visible box
            width/height. Higher → noisier boxes and lower IoU between frames.
        mask_jitter_px: largest dilation/erosion of a mask in pixels. Higher → ragged outlines.
        score_noise: standard deviation of detection scores around ``tp_score`` / ``fp_score``.
        min_visible_fraction: objects less visible than this are never detected (heavily occluded or
            mostly outside the frame). Lower → the tracker sees slivers.
        min_area_px: objects with fewer visible pixels are never detected.
        tp_score: mean score of true detections.
        fp_score: mean score of false positives (low-ish, so a two-stage matcher can tell them apart).
        seed: seed of the simulator's random stream.
    """

    def __init__(
        self,
        *,
        miss_rate: float = 0.1,
        fp_rate: float = 0.05,
        box_jitter: float = 0.05,
        mask_jitter_px: int = 2,
        score_noise: float = 0.1,
        min_visible_fraction: float = 0.2,
        min_area_px: int = 20,
        tp_score: float = 0.85,
        fp_score: float = 0.35,
        seed: int = 0,
    ) -> None:
        def check(name: str, value: float, lo: float, hi: float) -> None:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
                raise ConfigError(f"detector simulator: {name}={value!r} must be a number in [{lo}, {hi}]")

        check("miss_rate", miss_rate, 0.0, 1.0)
        check("fp_rate", fp_rate, 0.0, 100.0)
        check("box_jitter", box_jitter, 0.0, 1.0)
        check("score_noise", score_noise, 0.0, 1.0)
        check("min_visible_fraction", min_visible_fraction, 0.0, 1.0)
        check("tp_score", tp_score, 0.0, 1.0)
        check("fp_score", fp_score, 0.0, 1.0)
        if not isinstance(mask_jitter_px, int) or not 0 <= mask_jitter_px <= 64:
            raise ConfigError(
                f"detector simulator: mask_jitter_px={mask_jitter_px!r} must be an integer in [0, 64]"
            )
        if not isinstance(min_area_px, int) or min_area_px < 1:
            raise ConfigError(f"detector simulator: min_area_px={min_area_px!r} must be an integer >= 1")
        self.miss_rate = float(miss_rate)
        self.fp_rate = float(fp_rate)
        self.box_jitter = float(box_jitter)
        self.mask_jitter_px = mask_jitter_px
        self.score_noise = float(score_noise)
        self.min_visible_fraction = float(min_visible_fraction)
        self.min_area_px = min_area_px
        self.tp_score = float(tp_score)
        self.fp_score = float(fp_score)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Restart the random stream (the next frames get the same perturbations as after construction)."""
        self._rng = np.random.default_rng(self.seed)

    def is_eligible(self, obj: GtObject) -> bool:
        """Whether a visible GT object can be detected at all (``min_visible_fraction``, ``min_area_px``).

        Trackers are best scored against eligible objects only: the others are never detected."""
        return obj.visible_fraction >= self.min_visible_fraction and obj.area >= self.min_area_px

    def _score(self, mean: float) -> float:
        return float(np.clip(self._rng.normal(mean, self.score_noise), 0.01, 1.0))

    def __call__(self, frame: SceneFrame) -> Detections:
        """Detect the objects of one frame. ``frame`` is not modified."""
        H, W = frame.instances.shape
        eligible = [o for o in frame.objects if self.is_eligible(o)]
        missed_flags = self._rng.random(len(eligible)) < self.miss_rate
        paint = [self._perturbed(frame, obj) for obj, missed in zip(eligible, missed_flags, strict=True) if not missed]
        num_fp = int(self._rng.poisson(self.fp_rate * len(frame.objects))) if frame.objects else 0
        paint.extend(self._false_positive(H, W) for _ in range(num_fp))
        paint.sort(key=lambda p: p[0])
        instance_map, regions = _paint(paint, H, W)

        # Measure on the final map; drop detections that were painted over entirely, renumber 1..K.
        stats = _region_stats(instance_map, regions)
        keep = [i for i, s in enumerate(stats) if s is not None]
        if len(keep) != len(paint):
            lut = np.zeros(len(paint) + 1, np.uint16)
            lut[np.asarray(keep, np.int64) + 1] = np.arange(1, len(keep) + 1, dtype=np.uint16)
            instance_map = lut[instance_map]
        instances: list[Instance] = []
        gt_ids: list[int] = []
        for new_index, i in enumerate(keep, start=1):
            box, area, centroid = stats[i]  # type: ignore[misc]
            _, _, _, _, cls, score, gt = paint[i]
            instances.append(
                Instance(index=new_index, class_id=cls, score=score, box=box, area=area, centroid=centroid)
            )
            gt_ids.append(gt)
        return Detections(
            instances=instances,
            instance_map=instance_map,
            gt_ids=tuple(gt_ids),
            missed_ids=tuple(o.object_id for o, m in zip(eligible, missed_flags, strict=True) if m),
            eligible_ids=tuple(o.object_id for o in eligible),
            num_false_positives=num_fp,
        )

    def _perturbed(self, frame: SceneFrame, obj: GtObject) -> _Paint:
        """A kept object's detection: its visible mask translated, dilated or eroded, and its score."""
        rng = self._rng
        j = self.mask_jitter_px
        bx0, by0, bx1, by1 = obj.box
        w, h = bx1 - bx0, by1 - by0
        dx = int(round(rng.normal(0.0, self.box_jitter * w))) if self.box_jitter else 0
        dy = int(round(rng.normal(0.0, self.box_jitter * h))) if self.box_jitter else 0
        k = int(rng.integers(-j, j + 1)) if j else 0
        mask = frame.instances[by0:by1, bx0:bx1] == obj.object_id
        pad = abs(k) + 1
        mask = np.pad(mask, pad).view(np.uint8)
        if k > 0:
            mask = cv2.dilate(mask, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
        elif k < 0:
            eroded = cv2.erode(mask, np.ones((-2 * k + 1, -2 * k + 1), np.uint8))
            if eroded.any():
                mask = eroded
        return (
            float(by1 + dy),
            by0 - pad + dy,
            bx0 - pad + dx,
            mask.astype(bool),
            obj.class_id,
            self._score(self.tp_score),
            obj.object_id,
        )

    def _false_positive(self, H: int, W: int) -> _Paint:
        """One false positive: an ellipse of a random thing class on a random row of the lower half."""
        rng = self._rng
        cls = int(rng.choice(THING_CLASSES))
        base = float(rng.uniform(0.5, 1.0)) * H
        eh = max(4.0, 0.45 * (base / H - 0.4) * H * float(rng.uniform(0.6, 1.2)))
        ew = eh * float(rng.uniform(0.3, 1.8))
        cx = float(rng.uniform(0, W))
        mh, mw = int(math.ceil(eh)) + 2, int(math.ceil(ew)) + 2
        mask = np.zeros((mh, mw), np.uint8)
        cv2.ellipse(mask, (mw // 2, mh // 2), (max(1, int(ew / 2)), max(1, int(eh / 2))), 0, 0, 360, 1, -1)
        return (base, int(base - mh), int(cx - mw / 2), mask.astype(bool), cls, self._score(self.fp_score), 0)


_Paint = tuple[float, int, int, np.ndarray, int, float, int]
"""A detection to paint: (depth, region y0, x0, bool mask, class, score, gt id (0 = false positive))."""


def _paint(paint: list[_Paint], H: int, W: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A new ``uint16[H, W]`` map with ``paint[k]``'s mask painted as id ``k + 1``, in list order (later
    ones over earlier ones), and each detection's region ``(x0, y0, x1, y1)`` clipped to the map."""
    instance_map = np.zeros((H, W), np.uint16)
    regions: list[tuple[int, int, int, int]] = []
    for idx, (_, y0, x0, mask, _, _, _) in enumerate(paint, start=1):
        mh, mw = mask.shape
        fy0, fx0, fy1, fx1 = max(y0, 0), max(x0, 0), min(y0 + mh, H), min(x0 + mw, W)
        regions.append((fx0, fy0, fx1, fy1))
        if fy1 <= fy0 or fx1 <= fx0:
            continue
        m = mask[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
        np.copyto(instance_map[fy0:fy1, fx0:fx1], np.uint16(idx), where=m)
    return instance_map, regions


def _region_stats(
    instance_map: np.ndarray, regions: list[tuple[int, int, int, int]]
) -> list[tuple[tuple[float, float, float, float], int, tuple[float, float]] | None]:
    """Box (x1/y1 exclusive), area and centroid ``(x, y)`` of id ``k + 1`` within ``regions[k]``
    (``(x0, y0, x1, y1)`` clipped to the map), or None when it has no pixels. ``instance_map`` is not
    modified."""
    out: list = []
    for idx, (x0, y0, x1, y1) in enumerate(regions, start=1):
        if x1 <= x0 or y1 <= y0:
            out.append(None)
            continue
        m = instance_map[y0:y1, x0:x1] == idx
        area = int(np.count_nonzero(m))
        if area == 0:
            out.append(None)
            continue
        rows = np.nonzero(m.any(axis=1))[0]
        cols = np.nonzero(m.any(axis=0))[0]
        ys, xs = np.nonzero(m)
        out.append(
            (
                (
                    float(x0 + cols[0]),
                    float(y0 + rows[0]),
                    float(x0 + cols[-1] + 1),
                    float(y0 + rows[-1] + 1),
                ),
                area,
                (x0 + float(xs.mean()), y0 + float(ys.mean())),
            )
        )
    return out
