"""Person instance masks scored against real per-person ground truth (Penn-Fudan's layout).

Layout (``perception eval --layout pennfudan``): ``root/PNGImages/<stem>.png`` images and
``root/PedMasks/<stem>_mask.png`` masks (0 = background, 1..k = one id per person). With a
``root/<split>.txt`` list of stems (or ``split`` naming a ``.txt`` file of stems anywhere) only those
are scored; without one, every image is.

Per image the model runs as the pipeline does (backend → bilinear labels at the image's size →
:class:`~perception.postprocess.panoptic.PanopticGrouper`); the predicted persons are the instances of
the model's person classes (names ``Pedestrian``, ``Person``, ``Bicyclist``, ``Rider``: a cyclist is a
person on a bicycle, and Penn-Fudan labels every person). Scores, all fractions:

* ``person_recall50`` / ``person_precision50``: true persons / predicted persons matched at mask IoU
  >= 0.5, matching as COCO does (per image, predictions by decreasing score, each to the unmatched true
  person it overlaps most);
* ``person_ap50``: COCO's average precision at IoU 0.5 (101-point interpolated precision over all
  images' predictions ranked by score); ``pycocotools`` gives the same (tests/eval/test_instances.py);
* ``person_pq``: panoptic quality of the person class (pairs with IoU > 0.5 match, uniquely;
  ``sum IoU / (TP + FP/2 + FN/2)``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from perception.errors import DataError

PERSON_CLASS_NAMES = ("pedestrian", "person", "bicyclist", "rider")
"""Model classes (lower case) whose instances are persons."""

RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
"""COCO's recall points for the interpolated precision."""


# ------------------------------------------------------------------------------------------ matching
def mask_ious(pred_map: np.ndarray, pred_ids: Sequence[int], gt_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of every (predicted, true) instance pair, from two id maps in one joint count.

    Args:
        pred_map: ``uint16[H, W]`` predicted ids (0 = none); only ``pred_ids`` are scored.
        pred_ids: the predicted ids to score, in the order of the returned rows.
        gt_map: ``uint8/uint16[H, W]`` true ids ``1..G`` (0 = background).

    Returns:
        ``(iou float64[P, G], gt_ids int64[G])``; column ``g`` is true id ``gt_ids[g]``.
    """
    if pred_map.shape != gt_map.shape:
        raise DataError(f"prediction {pred_map.shape} and truth {gt_map.shape} differ in size")
    gt_ids = np.unique(gt_map)
    gt_ids = gt_ids[gt_ids > 0].astype(np.int64)
    pids = np.asarray(pred_ids, np.int64)
    p_lut = np.zeros(int(pred_map.max()) + 2 if pred_map.size else 2, np.int64)
    p_lut[pids] = np.arange(1, len(pids) + 1)
    g_lut = np.zeros(int(gt_map.max()) + 2 if gt_map.size else 2, np.int64)
    g_lut[gt_ids] = np.arange(1, len(gt_ids) + 1)
    p = p_lut[pred_map.ravel()]
    g = g_lut[gt_map.ravel()]
    ng = len(gt_ids) + 1
    joint = np.bincount(p * ng + g, minlength=(len(pids) + 1) * ng).reshape(len(pids) + 1, ng)
    inter = joint[1:, 1:].astype(np.float64)
    area_p = joint[1:, :].sum(axis=1).astype(np.float64)
    area_g = joint[:, 1:].sum(axis=0).astype(np.float64)
    union = area_p[:, None] + area_g[None, :] - inter
    return inter / np.maximum(union, 1.0), gt_ids


@dataclass
class InstanceTally:
    """Counts over images; :meth:`add` one image's IoU matrix and prediction scores."""

    scores: list[float] = field(default_factory=list)
    tp: list[bool] = field(default_factory=list)
    gt: int = 0
    pq_iou: float = 0.0
    pq_tp: int = 0
    pq_fp: int = 0
    pq_fn: int = 0

    def add(self, iou: np.ndarray, scores: Sequence[float]) -> None:
        """``iou``: ``float64[P, G]`` of one image; ``scores``: ``[P]`` prediction scores."""
        p, g = iou.shape
        self.gt += g
        order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
        taken = np.zeros(g, bool)
        for i in order:  # COCO's greedy match: best-IoU unmatched truth at IoU >= 0.5
            cand = np.where(taken, -1.0, iou[i]) if g else np.zeros(0)
            j = int(np.argmax(cand)) if g else -1
            hit = g > 0 and cand[j] >= 0.5
            if hit:
                taken[j] = True
            self.scores.append(float(scores[i]))
            self.tp.append(bool(hit))
        match = iou > 0.5  # PQ: unique by construction
        self.pq_tp += int(match.sum())
        self.pq_iou += float(iou[match].sum())
        self.pq_fp += int(p - match.any(axis=1).sum())
        self.pq_fn += int(g - match.any(axis=0).sum())

    def scores_dict(self) -> dict[str, float]:
        tp = int(sum(self.tp))
        n = len(self.tp)
        denom = self.pq_tp + 0.5 * self.pq_fp + 0.5 * self.pq_fn
        return {
            "person_recall50": tp / self.gt if self.gt else math.nan,
            "person_precision50": tp / n if n else math.nan,
            "person_ap50": average_precision(self.scores, self.tp, self.gt),
            "person_pq": self.pq_iou / denom if denom else math.nan,
        }


def average_precision(scores: Sequence[float], tp: Sequence[bool], num_gt: int) -> float:
    """COCO's interpolated AP: predictions ranked by score (stable), the precision envelope sampled at
    :data:`RECALL_THRESHOLDS`; precision 0 beyond the highest recall reached. NaN without truth."""
    if num_gt == 0:
        return math.nan
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    hits = np.asarray(tp, bool)[order]
    ctp = np.cumsum(hits)
    cfp = np.cumsum(~hits)
    rec = ctp / num_gt
    prec = ctp / np.maximum(ctp + cfp, np.spacing(1))
    prec = np.maximum.accumulate(prec[::-1])[::-1] if prec.size else prec
    idx = np.searchsorted(rec, RECALL_THRESHOLDS, side="left")
    q = np.zeros(len(RECALL_THRESHOLDS))
    valid = idx < len(prec)
    q[valid] = prec[idx[valid]]
    return float(np.mean(q))


# ------------------------------------------------------------------------------------------ data set
@dataclass(frozen=True, slots=True)
class InstancePair:
    name: str
    image: Path
    mask: Path


def pennfudan_pairs(root: Path, split: str | None = None, limit: int | None = None) -> list[InstancePair]:
    """Image/mask pairs of a folder in Penn-Fudan's layout (see the module docstring).

    Raises:
        DataError: no ``PNGImages``/``PedMasks`` folder, a listed stem without its image or mask, or
            nothing to score.
    """
    root = Path(root)
    images, masks = root / "PNGImages", root / "PedMasks"
    if not images.is_dir() or not masks.is_dir():
        raise DataError(f"{root}: not in Penn-Fudan's layout (expected PNGImages/ and PedMasks/ in it)")
    listed = None
    if split:
        listed = Path(split) if Path(split).suffix == ".txt" and Path(split).is_file() else root / f"{split}.txt"
    if listed is not None and listed.is_file():
        stems = [s.strip() for s in listed.read_text().split() if s.strip()]
    else:
        stems = sorted(p.stem for p in images.glob("*.png"))
    pairs = []
    for s in stems:
        img, msk = images / f"{s}.png", masks / f"{s}_mask.png"
        for p in (img, msk):
            if not p.is_file():
                raise DataError(f"{root}: {p.relative_to(root)} is missing")
        pairs.append(InstancePair(s, img, msk))
    if limit:
        pairs = pairs[:limit]
    if not pairs:
        raise DataError(f"{root}: no image to score")
    return pairs


def read_pair(pair: InstancePair) -> tuple[np.ndarray, np.ndarray]:
    """``(BGR image, mask)`` of a pair. Raises DataError naming the file that is unreadable or of another size."""
    image = cv2.imread(str(pair.image), cv2.IMREAD_COLOR)
    mask = cv2.imread(str(pair.mask), cv2.IMREAD_UNCHANGED)
    if image is None or mask is None:
        raise DataError(f"{pair.name}: cannot read {pair.image if image is None else pair.mask}")
    if mask.ndim != 2 or mask.shape != image.shape[:2]:
        raise DataError(f"{pair.mask}: expected a single-channel mask of the image's size {image.shape[:2]}")
    return image, mask


# ------------------------------------------------------------------------------------------ running
@dataclass(frozen=True)
class InstanceReport:
    scores: dict[str, float]
    images: int
    persons: int
    predictions: int
    model: str
    input_size: tuple[int, int]
    ms_per_image: float

    def to_json_dict(self) -> dict:
        out = {k: (None if math.isnan(v) else round(v, 6)) for k, v in self.scores.items()}
        out.update(images=self.images, persons=self.persons, predictions=self.predictions, model=self.model,
                   input_size=list(self.input_size), ms_per_image=round(self.ms_per_image, 2))
        return out

    def format_table(self) -> str:
        rows = [f"model {self.model} at {self.input_size[0]}x{self.input_size[1]}: {self.images} images, "
                f"{self.persons} persons, {self.predictions} predicted"]
        rows += [f"{k:<20} {v:.4f}" for k, v in self.scores.items()]
        rows.append(f"{'ms per image':<20} {self.ms_per_image:.1f}")
        return "\n".join(rows)


def person_class_ids(card) -> tuple[int, ...]:
    ids = tuple(c.id for c in card.classes if c.name.lower() in PERSON_CLASS_NAMES and c.is_thing)
    if not ids:
        raise DataError(f"model {card.name!r} has no person class (one of {', '.join(PERSON_CLASS_NAMES)})")
    return ids


def predict_persons(seg, grouper, image: np.ndarray, persons: Sequence[int], upsamplers: dict
                    ) -> tuple[np.ndarray, list[int], list[float]]:
    """``(instance_map, person ids, their scores)`` of one image, as the pipeline makes them."""
    from perception.postprocess.upsample import make_upsampler

    h, w = image.shape[:2]
    up = upsamplers.get((w, h))
    if up is None:
        up = upsamplers[(w, h)] = make_upsampler("bilinear", card=seg.card, out_size=(w, h))
    out = seg(image)
    labels = up(out.semantic_logits, image)
    imap, instances = grouper(out.semantic_logits, out.center_heatmap, out.center_offsets, labels)
    keep = [d for d in instances if d.class_id in persons]
    return imap, [d.index for d in keep], [d.score for d in keep]


def evaluate_instances(pairs: Sequence[InstancePair], backend, *, progress: bool = True) -> InstanceReport:
    """Score ``backend``'s model on ``pairs`` (see the module docstring)."""
    from perception.inference import Segmenter
    from perception.postprocess.panoptic import PanopticGrouper

    card = backend.card
    if not (card.has_output("center_heatmap") and card.has_output("center_offsets")):
        raise DataError(f"model {card.name!r} has no instance outputs (centre heatmap and offsets)")
    persons = person_class_ids(card)
    seg = Segmenter(backend=backend)
    grouper = PanopticGrouper(thing_ids=card.thing_ids(), heatmap_is_logit=False)
    tally, upsamplers, t_ns = InstanceTally(), {}, 0
    for pair in _progress(pairs, progress):
        image, gt = read_pair(pair)
        t0 = time.perf_counter_ns()
        imap, ids, scores = predict_persons(seg, grouper, image, persons, upsamplers)
        t_ns += time.perf_counter_ns() - t0
        iou, _ = mask_ious(imap, ids, gt)
        tally.add(iou, scores)
    n = len(pairs)
    return InstanceReport(scores=tally.scores_dict(), images=n, persons=tally.gt, predictions=len(tally.tp),
                          model=card.name, input_size=tuple(seg.input_size), ms_per_image=t_ns / n / 1e6)


def _progress(items: Sequence, enabled: bool) -> Iterator:
    if not enabled:
        return iter(items)
    from tqdm import tqdm

    return iter(tqdm(items, desc="pennfudan", unit="img"))
