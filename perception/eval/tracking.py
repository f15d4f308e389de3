"""Multi-object tracking metrics: CLEAR MOT (MOTA, MOTP, ID switches) and identity metrics (IDF1).

Input is one :class:`FrameMatch` per frame: the ground-truth ids present, the hypothesis (track) ids
reported, and a distance matrix between them with ``nan`` for pairs that may not be matched (e.g.
IoU below 0.5). The algorithms follow the definitions used by ``py-motmetrics``:

* **CLEAR MOT** (Bernardin & Stiefelhagen 2008): per frame, correspondences from earlier frames are
  kept while still valid; the remaining pairs are matched by minimum total distance (Hungarian).
  A match of a ground-truth object to a hypothesis other than the one it was last matched to is an
  **ID switch**. ``MOTA = 1 - (misses + false positives + switches) / ground-truth detections``.
* **IDF1** (Ristani et al. 2016): one global one-to-one matching of ground-truth trajectories to
  hypothesis trajectories maximising the number of frames in which matched pairs are within the
  distance threshold (IDTP); ``IDF1 = 2 IDTP / (ground-truth detections + hypothesis detections)``.

Counts from several sequences add up with :meth:`TrackingCounts.__add__` (IDF1 and MOTA are then
computed over the pooled counts, as motmetrics' ``generate_overall`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from perception.errors import DataError

__all__ = ["FrameMatch", "TrackingCounts", "evaluate_sequence", "iou_distance"]


@dataclass(frozen=True, slots=True)
class FrameMatch:
    """One frame's evaluation input.

    ``gt_ids``: ``int[G]`` ground-truth object ids; ``hyp_ids``: ``int[H]`` track ids;
    ``dist``: ``float[G, H]`` distances (e.g. ``1 - IoU``), ``nan`` = not allowed to match.
    """

    gt_ids: np.ndarray
    hyp_ids: np.ndarray
    dist: np.ndarray


@dataclass(frozen=True, slots=True)
class TrackingCounts:
    """Raw counts; the metrics are properties so that sequences can be pooled by addition."""

    num_frames: int = 0
    num_gt: int = 0
    """Ground-truth detections (object x frame)."""
    num_hyp: int = 0
    """Reported track detections (track x frame): the ``track_frames`` of the report."""
    matches: int = 0
    misses: int = 0
    false_positives: int = 0
    id_switches: int = 0
    dist_sum: float = 0.0
    """Sum of distances of all CLEAR-MOT matches (for MOTP)."""
    idtp: int = 0
    num_gt_ids: int = 0
    num_hyp_ids: int = 0

    def __add__(self, other: TrackingCounts) -> TrackingCounts:
        return TrackingCounts(**{k: getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__})

    @property
    def mota(self) -> float:
        return 1.0 - (self.misses + self.false_positives + self.id_switches) / max(self.num_gt, 1)

    @property
    def motp(self) -> float:
        """Mean distance of matched pairs (lower is better; ``1 - IoU`` for IoU distances)."""
        return self.dist_sum / self.matches if self.matches else float("nan")

    @property
    def idfp(self) -> int:
        return self.num_hyp - self.idtp

    @property
    def idfn(self) -> int:
        return self.num_gt - self.idtp

    @property
    def idf1(self) -> float:
        denom = self.num_gt + self.num_hyp
        return 2.0 * self.idtp / denom if denom else 1.0

    @property
    def idp(self) -> float:
        return self.idtp / self.num_hyp if self.num_hyp else 1.0

    @property
    def idr(self) -> float:
        return self.idtp / self.num_gt if self.num_gt else 1.0

    @property
    def switches_per_1000_track_frames(self) -> float:
        return 1000.0 * self.id_switches / max(self.num_hyp, 1)

    def as_dict(self) -> dict:
        """Counts and metrics as plain Python numbers (JSON-ready)."""
        d = asdict(self)
        d.update(
            mota=self.mota,
            motp=self.motp,
            idf1=self.idf1,
            idp=self.idp,
            idr=self.idr,
            idfp=self.idfp,
            idfn=self.idfn,
            track_frames=self.num_hyp,
            switches_per_1000_track_frames=self.switches_per_1000_track_frames,
        )
        return d


def iou_distance(iou: np.ndarray, *, min_iou: float = 0.5) -> np.ndarray:
    """``float[G, H]`` IoU -> distance ``1 - IoU``, ``nan`` where IoU < ``min_iou``. A new array."""
    iou = np.asarray(iou, np.float64)
    return np.where(iou >= min_iou, 1.0 - iou, np.nan)


def _assign(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min-cost assignment over finite entries only (forbidden pairs never chosen)."""
    finite = np.isfinite(dist)
    if not finite.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    big = (np.abs(dist[finite]).max() + 1.0) * (min(dist.shape) + 1)
    r, c = linear_sum_assignment(np.where(finite, dist, big))
    keep = finite[r, c]
    return r[keep], c[keep]


def evaluate_sequence(frames: Iterable[FrameMatch]) -> TrackingCounts:
    """CLEAR MOT and identity counts of one sequence (ids are only compared within it).

    Args:
        frames: per-frame ids and distances, in time order.

    Returns:
        The sequence's :class:`TrackingCounts`.
    """
    last_match: dict[int, int] = {}  # gt id -> hypothesis id it was last matched to
    pair_tp: dict[tuple[int, int], int] = {}  # (gt, hyp) -> frames within threshold (for IDF1)
    gt_count: dict[int, int] = {}
    hyp_count: dict[int, int] = {}
    n_frames = n_gt = n_hyp = n_match = n_miss = n_fp = n_sw = 0
    dist_sum = 0.0
    for f in frames:
        gt = np.asarray(f.gt_ids, np.int64).ravel()
        hy = np.asarray(f.hyp_ids, np.int64).ravel()
        dist = np.asarray(f.dist, np.float64).reshape(gt.size, hy.size)
        if np.unique(gt).size != gt.size or np.unique(hy).size != hy.size:
            raise DataError("evaluate_sequence: ids repeat within a frame; each id must appear once per frame")
        n_frames += 1
        n_gt += gt.size
        n_hyp += hy.size
        for g in gt.tolist():
            gt_count[g] = gt_count.get(g, 0) + 1
        for h in hy.tolist():
            hyp_count[h] = hyp_count.get(h, 0) + 1
        gi, hi = np.nonzero(np.isfinite(dist))
        for a, b in zip(gt[gi].tolist(), hy[hi].tolist()):
            pair_tp[(a, b)] = pair_tp.get((a, b), 0) + 1

        g_used = np.zeros(gt.size, bool)
        h_used = np.zeros(hy.size, bool)
        if gt.size and hy.size:
            col_of = {h: j for j, h in enumerate(hy.tolist())}
            # 1) keep correspondences from earlier frames that are still valid
            for i, g in enumerate(gt.tolist()):
                j = col_of.get(last_match.get(g, -1))
                if j is not None and not h_used[j] and np.isfinite(dist[i, j]):
                    g_used[i] = h_used[j] = True
                    n_match += 1
                    dist_sum += float(dist[i, j])
            # 2) Hungarian on the rest
            rest = dist.copy()
            rest[g_used, :] = np.nan
            rest[:, h_used] = np.nan
            rows, cols = _assign(rest)
            for i, j in zip(rows.tolist(), cols.tolist()):
                g, h = int(gt[i]), int(hy[j])
                if g in last_match and last_match[g] != h:
                    n_sw += 1
                n_match += 1
                dist_sum += float(rest[i, j])
                last_match[g] = h
                g_used[i] = h_used[j] = True
        n_miss += int((~g_used).sum())
        n_fp += int((~h_used).sum())

    # IDF1: global one-to-one assignment of gt ids to hyp ids maximising frames in agreement
    idtp = 0
    if pair_tp:
        g_index = {g: i for i, g in enumerate(gt_count)}
        h_index = {h: j for j, h in enumerate(hyp_count)}
        tp = np.zeros((len(g_index), len(h_index)))
        for (g, h), c in pair_tp.items():
            tp[g_index[g], h_index[h]] = c
        r, c = linear_sum_assignment(-tp)
        idtp = int(tp[r, c].sum())
    return TrackingCounts(
        num_frames=n_frames,
        num_gt=n_gt,
        num_hyp=n_hyp,
        matches=n_match,
        misses=n_miss,
        false_positives=n_fp,
        id_switches=n_sw,
        dist_sum=dist_sum,
        idtp=idtp,
        num_gt_ids=len(gt_count),
        num_hyp_ids=len(hyp_count),
    )
