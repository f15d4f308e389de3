"""Multi-object tracking metrics: CLEAR MOT (MOTA, MOTP, ID switches), identity metrics (IDF1) and HOTA.

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
* **HOTA** (Luiten et al. 2021), exactly as TrackEval's ``HOTA`` metric computes it, with similarity
  ``1 - dist`` (0 where ``dist`` is nan), so HOTA needs distances in [0, 1]. A first pass sums each
  (ground truth, hypothesis) id pair's per-frame normalised similarity into a global alignment score
  ``A``; then every frame is matched by maximum total ``A * similarity`` (Hungarian). For each
  threshold ``alpha`` in :data:`HOTA_ALPHAS` a matched pair with similarity >= alpha is a true
  positive; ``DetA = TP / (TP + FN + FP)``, ``AssA`` = mean over true positives of their id pair's
  Jaccard index ``TPA / (TPA + FNA + FPA)``, ``LocA`` = mean similarity of true positives and
  ``HOTA_alpha = sqrt(DetA * AssA)``. Reported figures are means over the 19 thresholds.

Counts from several sequences add up with :meth:`TrackingCounts.__add__` (IDF1 and MOTA are then
computed over the pooled counts, as motmetrics' ``generate_overall`` does; HOTA's per-threshold
TP/FN/FP add up and AssA and LocA are averaged weighted by TP, as TrackEval's ``combine_sequences``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from perception.errors import DataError

__all__ = ["HOTA_ALPHAS", "FrameMatch", "HotaCounts", "TrackingCounts", "evaluate_sequence", "iou_distance"]

HOTA_ALPHAS = np.arange(0.05, 0.99, 0.05)
"""``float64[19]`` HOTA's localisation thresholds 0.05, 0.10, ..., 0.95 (TrackEval's values, read-only)."""
HOTA_ALPHAS.flags.writeable = False

_EPS = float(np.finfo(np.float64).eps)
_NA = HOTA_ALPHAS.size
_ZERO_INTS = (0,) * _NA
_ZERO_FLOATS = (0.0,) * _NA


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
class HotaCounts:
    """HOTA sums per threshold; the metrics are properties so that sequences can be pooled by addition.

    Every field is a tuple of ``len(HOTA_ALPHAS)`` plain numbers, entry ``a`` for threshold
    ``HOTA_ALPHAS[a]`` (tuples: immutable, comparable and JSON-ready).
    """

    tp: tuple[int, ...] = _ZERO_INTS
    """Matched (ground truth, hypothesis) detections with similarity >= alpha."""
    fn: tuple[int, ...] = _ZERO_INTS
    fp: tuple[int, ...] = _ZERO_INTS
    ass_sum: tuple[float, ...] = _ZERO_FLOATS
    """Sum over true positives of their id pair's association Jaccard index (= AssA * TP)."""
    ass_re_sum: tuple[float, ...] = _ZERO_FLOATS
    """Sum over true positives of TPA / (ground-truth id's detections) (= AssRe * TP)."""
    ass_pr_sum: tuple[float, ...] = _ZERO_FLOATS
    """Sum over true positives of TPA / (hypothesis id's detections) (= AssPr * TP)."""
    loc_sum: tuple[float, ...] = _ZERO_FLOATS
    """Sum of the similarities of the true positives (= LocA * TP)."""

    def __post_init__(self) -> None:
        for k in self.__dataclass_fields__:
            if len(getattr(self, k)) != _NA:
                n = len(getattr(self, k))
                raise DataError(f"HotaCounts.{k} has {n} values; one per HOTA_ALPHAS ({_NA}) is needed")

    def __add__(self, other: HotaCounts) -> HotaCounts:
        return HotaCounts(
            **{k: tuple(map(sum, zip(getattr(self, k), getattr(other, k)))) for k in self.__dataclass_fields__}
        )

    def per_alpha(self) -> dict[str, np.ndarray]:
        """TrackEval's per-threshold figures: ``float64[19]`` arrays (new) under TrackEval's names
        ``HOTA``, ``DetA``, ``AssA``, ``LocA``, ``DetRe``, ``DetPr``, ``AssRe``, ``AssPr``."""
        tp, fn, fp = (np.asarray(x, np.float64) for x in (self.tp, self.fn, self.fp))
        ntp = np.maximum(1.0, tp)
        det_a = tp / np.maximum(1.0, tp + fn + fp)
        ass_a = np.asarray(self.ass_sum, np.float64) / ntp
        return {
            "HOTA": np.sqrt(det_a * ass_a),
            "DetA": det_a,
            "AssA": ass_a,
            "LocA": np.maximum(1e-10, np.asarray(self.loc_sum, np.float64)) / np.maximum(1e-10, tp),
            "DetRe": tp / np.maximum(1.0, tp + fn),
            "DetPr": tp / np.maximum(1.0, tp + fp),
            "AssRe": np.asarray(self.ass_re_sum, np.float64) / ntp,
            "AssPr": np.asarray(self.ass_pr_sum, np.float64) / ntp,
        }

    def summary(self) -> dict[str, float]:
        """Means over the thresholds (``hota``, ``deta``, ``assa``, ``loca``, ``detre``, ``detpr``,
        ``assre``, ``asspr``) plus ``hota_0`` and ``loca_0`` (at the lowest threshold, 0.05)."""
        per = self.per_alpha()
        out = {k.lower(): float(v.mean()) for k, v in per.items()}
        out.update(hota_0=float(per["HOTA"][0]), loca_0=float(per["LocA"][0]))
        return out

    @property
    def hota(self) -> float:
        return float(self.per_alpha()["HOTA"].mean())

    @property
    def deta(self) -> float:
        return float(self.per_alpha()["DetA"].mean())

    @property
    def assa(self) -> float:
        return float(self.per_alpha()["AssA"].mean())

    @property
    def loca(self) -> float:
        return float(self.per_alpha()["LocA"].mean())


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
    hota_counts: HotaCounts | None = HotaCounts()
    """HOTA sums; ``None`` if not computed (``evaluate_sequence(..., hota=False)``); a sum with a
    ``None`` part is ``None``."""

    def __add__(self, other: TrackingCounts) -> TrackingCounts:
        a, b = self.hota_counts, other.hota_counts
        return TrackingCounts(
            **{k: getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__ if k != "hota_counts"},
            hota_counts=None if a is None or b is None else a + b,
        )

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

    @property
    def hota(self) -> float:
        """HOTA, mean over :data:`HOTA_ALPHAS` (nan if not computed)."""
        return self.hota_counts.hota if self.hota_counts is not None else float("nan")

    @property
    def deta(self) -> float:
        return self.hota_counts.deta if self.hota_counts is not None else float("nan")

    @property
    def assa(self) -> float:
        return self.hota_counts.assa if self.hota_counts is not None else float("nan")

    @property
    def loca(self) -> float:
        return self.hota_counts.loca if self.hota_counts is not None else float("nan")

    def as_dict(self) -> dict:
        """Counts and metrics as plain Python numbers (JSON-ready; HOTA figures nan if not computed,
        the per-threshold HOTA sums under ``hota_counts`` as lists)."""
        d = asdict(self)
        if self.hota_counts is not None:
            d["hota_counts"] = {k: list(v) for k, v in d["hota_counts"].items()}
            d.update(self.hota_counts.summary())
        else:
            d.update(dict.fromkeys(HotaCounts().summary(), float("nan")))
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


class _HotaFrames:
    """HOTA's per-frame input kept compactly for its two passes: only the pairs with similarity > 0
    (pairs with similarity 0 can neither add to the alignment score nor be a true positive)."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, ...]] = []  # per frame: (row, col, gt id, hyp id, sim)
        self._sizes: list[tuple[int, int, int]] = []  # per frame: (G, H, number of pairs kept)

    def add(self, gt: np.ndarray, hyp: np.ndarray, dist: np.ndarray, gi: np.ndarray, hi: np.ndarray) -> None:
        """``gt: int64[G]``, ``hyp: int64[H]``, ``dist: float64[G, H]``; ``gi, hi: int64[K]`` its finite entries."""
        sim = 1.0 - dist[gi, hi]
        if sim.size and (sim.min() < 0.0 or sim.max() > 1.0):
            raise DataError(
                "evaluate_sequence: HOTA needs distances in [0, 1] (similarity = 1 - distance, e.g. 1 - IoU); "
                "rescale the distances or pass hota=False to compute CLEAR MOT and IDF1 only"
            )
        keep = sim > 0.0
        self._parts.append((gi[keep], hi[keep], gt[gi[keep]], hyp[hi[keep]], sim[keep]))
        self._sizes.append((gt.size, hyp.size, int(keep.sum())))

    def counts(self, gt_count: dict[int, int], hyp_count: dict[int, int]) -> HotaCounts:
        """TrackEval's HOTA sums; ``gt_count``/``hyp_count``: detections per id over the sequence."""
        sizes = np.asarray(self._sizes, np.int64).reshape(-1, 3)
        n_gt, n_hyp = int(sizes[:, 0].sum()), int(sizes[:, 1].sum())
        if not sizes[:, 2].any():
            return HotaCounts(fn=(n_gt,) * _NA, fp=(n_hyp,) * _NA)
        r, c, gid, hid, sim = (np.concatenate(x) for x in zip(*self._parts))
        frame = np.repeat(np.arange(len(sizes)), sizes[:, 2])
        g_off = np.cumsum(sizes[:, 0]) - sizes[:, 0]
        h_off = np.cumsum(sizes[:, 1]) - sizes[:, 1]
        row, col = r + g_off[frame], c + h_off[frame]  # detection index within the sequence

        # pass 1: global alignment score A of every (gt id, hyp id) pair that ever has similarity > 0
        denom = np.bincount(row, sim, n_gt)[row] + np.bincount(col, sim, n_hyp)[col] - sim
        ok = denom > _EPS
        sim_iou = np.where(ok, sim / np.where(ok, denom, 1.0), 0.0)
        g_ids, g = np.unique(gid, return_inverse=True)
        h_ids, h = np.unique(hid, return_inverse=True)
        pairs, pair = np.unique(g * h_ids.size + h, return_inverse=True)
        g_n = np.array([gt_count[k] for k in g_ids.tolist()], np.float64)[pairs // h_ids.size]
        h_n = np.array([hyp_count[k] for k in h_ids.tolist()], np.float64)[pairs % h_ids.size]
        pot = np.bincount(pair, sim_iou, pairs.size)
        score = (pot / (g_n + h_n - pot))[pair] * sim

        # pass 2: per frame, maximum total score. A frame whose pairs share no row and no column is
        # matched as it stands; the others go through the Hungarian algorithm on the full matrix.
        once = (np.bincount(row, None, n_gt)[row] == 1) & (np.bincount(col, None, n_hyp)[col] == 1)
        busy = np.bincount(frame, (~once).astype(np.float64), len(sizes)) > 0  # bool[T]
        matched = ~busy[frame]
        start = np.cumsum(sizes[:, 2]) - sizes[:, 2]
        for t in np.flatnonzero(busy).tolist():
            e = np.arange(start[t], start[t] + sizes[t, 2])
            s_mat = np.zeros((sizes[t, 0], sizes[t, 1]))
            s_mat[r[e], c[e]] = score[e]
            e_mat = np.full(s_mat.shape, -1, np.int64)
            e_mat[r[e], c[e]] = e
            mr, mc = linear_sum_assignment(-s_mat)
            chosen = e_mat[mr, mc]
            matched[chosen[chosen >= 0]] = True

        # per threshold: true positives, their localisation, and each id pair's matches (TPA)
        ms, mp = sim[matched], pair[matched]
        hit = ms[None, :] >= HOTA_ALPHAS[:, None] - _EPS  # bool[A, M]
        tp = hit.sum(1)
        tpa = np.bincount((np.arange(_NA)[:, None] * pairs.size + mp[None, :])[hit], None, _NA * pairs.size)
        tpa = tpa.reshape(_NA, pairs.size).astype(np.float64)
        return HotaCounts(
            tp=tuple(tp.tolist()),
            fn=tuple((n_gt - tp).tolist()),
            fp=tuple((n_hyp - tp).tolist()),
            ass_sum=tuple((tpa * tpa / np.maximum(1.0, g_n + h_n - tpa)).sum(1).tolist()),
            ass_re_sum=tuple((tpa * tpa / np.maximum(1.0, g_n)).sum(1).tolist()),
            ass_pr_sum=tuple((tpa * tpa / np.maximum(1.0, h_n)).sum(1).tolist()),
            loc_sum=tuple((hit * ms[None, :]).sum(1).tolist()),
        )


class _ClearMot:
    """CLEAR MOT state of one sequence: correspondences kept from frame to frame, matches, misses,
    false positives, ID switches and the summed distance of the matches."""

    def __init__(self) -> None:
        self.last_match: dict[int, int] = {}  # gt id -> hypothesis id it was last matched to
        self.matches = self.misses = self.false_positives = self.switches = 0
        self.dist_sum = 0.0

    def add(self, gt: np.ndarray, hy: np.ndarray, dist: np.ndarray) -> None:
        """Match one frame: ``gt`` ``int64[G]``, ``hy`` ``int64[K]`` ids, ``dist`` ``float64[G, K]``."""
        g_used = np.zeros(gt.size, bool)
        h_used = np.zeros(hy.size, bool)
        if gt.size and hy.size:
            self._keep_valid(gt, hy, dist, g_used, h_used)
            self._assign_rest(gt, hy, dist, g_used, h_used)
        self.misses += int((~g_used).sum())
        self.false_positives += int((~h_used).sum())

    def _keep_valid(
        self, gt: np.ndarray, hy: np.ndarray, dist: np.ndarray, g_used: np.ndarray, h_used: np.ndarray
    ) -> None:
        """Keep the correspondences from earlier frames that are still valid (marks them used)."""
        col_of = {h: j for j, h in enumerate(hy.tolist())}
        for i, g in enumerate(gt.tolist()):
            j = col_of.get(self.last_match.get(g, -1))
            if j is not None and not h_used[j] and np.isfinite(dist[i, j]):
                g_used[i] = h_used[j] = True
                self.matches += 1
                self.dist_sum += float(dist[i, j])

    def _assign_rest(
        self, gt: np.ndarray, hy: np.ndarray, dist: np.ndarray, g_used: np.ndarray, h_used: np.ndarray
    ) -> None:
        """Hungarian on the pairs left unused; a gt matched to another hypothesis than before is a switch."""
        rest = dist.copy()
        rest[g_used, :] = np.nan
        rest[:, h_used] = np.nan
        rows, cols = _assign(rest)
        for i, j in zip(rows.tolist(), cols.tolist()):
            g, h = int(gt[i]), int(hy[j])
            if g in self.last_match and self.last_match[g] != h:
                self.switches += 1
            self.matches += 1
            self.dist_sum += float(rest[i, j])
            self.last_match[g] = h
            g_used[i] = h_used[j] = True


class _Identities:
    """Frames per gt id, per hypothesis id, and per (gt, hyp) pair within the threshold (for IDF1)."""

    def __init__(self) -> None:
        self.gt_count: dict[int, int] = {}
        self.hyp_count: dict[int, int] = {}
        self.pair_tp: dict[tuple[int, int], int] = {}

    def add(self, gt: np.ndarray, hy: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Count one frame; returns the row and column indices of its finite distances."""
        for g in gt.tolist():
            self.gt_count[g] = self.gt_count.get(g, 0) + 1
        for h in hy.tolist():
            self.hyp_count[h] = self.hyp_count.get(h, 0) + 1
        gi, hi = np.nonzero(np.isfinite(dist))
        for a, b in zip(gt[gi].tolist(), hy[hi].tolist()):
            self.pair_tp[(a, b)] = self.pair_tp.get((a, b), 0) + 1
        return gi, hi

    def idtp(self) -> int:
        """IDTP: global one-to-one assignment of gt ids to hyp ids maximising frames in agreement."""
        if not self.pair_tp:
            return 0
        g_index = {g: i for i, g in enumerate(self.gt_count)}
        h_index = {h: j for j, h in enumerate(self.hyp_count)}
        tp = np.zeros((len(g_index), len(h_index)))
        for (g, h), c in self.pair_tp.items():
            tp[g_index[g], h_index[h]] = c
        r, c = linear_sum_assignment(-tp)
        return int(tp[r, c].sum())


def evaluate_sequence(frames: Iterable[FrameMatch], *, hota: bool = True) -> TrackingCounts:
    """CLEAR MOT, identity and HOTA counts of one sequence (ids are only compared within it).

    Args:
        frames: per-frame ids and distances, in time order.
        hota: also compute HOTA (similarity ``1 - dist``; finite distances must then lie in [0, 1],
            else :class:`~perception.errors.DataError`). With False, ``hota_counts`` is None.

    Returns:
        The sequence's :class:`TrackingCounts`.
    """
    hota_frames = _HotaFrames() if hota else None
    mot = _ClearMot()
    ids = _Identities()
    n_frames = n_gt = n_hyp = 0
    for f in frames:
        gt = np.asarray(f.gt_ids, np.int64).ravel()
        hy = np.asarray(f.hyp_ids, np.int64).ravel()
        dist = np.asarray(f.dist, np.float64).reshape(gt.size, hy.size)
        if np.unique(gt).size != gt.size or np.unique(hy).size != hy.size:
            raise DataError("evaluate_sequence: ids repeat within a frame; each id must appear once per frame")
        n_frames += 1
        n_gt += gt.size
        n_hyp += hy.size
        gi, hi = ids.add(gt, hy, dist)
        if hota_frames is not None:
            hota_frames.add(gt, hy, dist, gi, hi)
        mot.add(gt, hy, dist)
    return TrackingCounts(
        num_frames=n_frames,
        num_gt=n_gt,
        num_hyp=n_hyp,
        matches=mot.matches,
        misses=mot.misses,
        false_positives=mot.false_positives,
        id_switches=mot.switches,
        dist_sum=mot.dist_sum,
        idtp=ids.idtp(),
        num_gt_ids=len(ids.gt_count),
        num_hyp_ids=len(ids.hyp_count),
        hota_counts=None if hota_frames is None else hota_frames.counts(ids.gt_count, ids.hyp_count),
    )
