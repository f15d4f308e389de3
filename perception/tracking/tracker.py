"""A thin multi-object tracker: Kalman prediction, staged (ByteTrack) association, lifecycle.

The maths lives in :mod:`perception.tracking.kalman`, :mod:`perception.tracking.matching` and
:mod:`perception.tracking.appearance`; the settings in :class:`~perception.tracking.params.TrackerParams`;
the per-track state in a :class:`~perception.tracking.table.TrackTable`. This module applies the
association stages and the lifecycle rules (:class:`Tracker`). How the defaults were chosen, with
the measurements, is in ``docs/tracking.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.errors import DataError
from perception.tracking import appearance, kalman
from perception.tracking.matching import (
    box_iou,
    buffered_box_iou,
    linear_assignment_pairs,
    normalized_center_distance_sq,
    shifted_mask_iou,
)
from perception.tracking.params import TrackerParams
from perception.tracking.table import TrackTable
from perception.types import FrameMeta, Instance, Track, TrackState

__all__ = ["Tracker", "TrackerParams", "relabel_instance_map"]

_TIME_FIELDS = {"pts": "pts_ns", "mono": "t_mono_ns", "wall": "t_wall_ns"}
_TENT, _CONF, _LOST = int(TrackState.TENTATIVE), int(TrackState.CONFIRMED), int(TrackState.LOST)
_STATES = tuple(TrackState)  # index -> member, without an enum lookup per reported track
_LITTLE_ENDIAN = sys.byteorder == "little"
_MAX_DISTANCE_SQ = 100.0
"""Cap of the squared centre distance (10 box sizes) in the cost: beyond it a pair is far anyway, and
the cap keeps one absurd prediction from dominating the assignment's total cost."""


@dataclass(slots=True, eq=False)
class _Detections:
    """One frame's detections as columns (``M`` rows, in the order of the ``instances`` given)."""

    box: np.ndarray  # float64[M, 4] (x0, y0, x1, y1)
    score: np.ndarray  # float64[M]
    cls: np.ndarray  # int64[M]
    idx: np.ndarray  # int64[M] Instance.index (id in the instance map)
    area: np.ndarray  # int64[M] pixels
    high: np.ndarray  # bool[M] score >= high_score
    low: np.ndarray  # bool[M] low_score <= score < high_score
    colours: np.ndarray  # float32[M, bins**3] colour embeddings (zero where unknown)
    has_colours: np.ndarray  # bool[M]
    embeddings: np.ndarray | None  # float32[M, D] learned re-id embeddings, if given
    grid: np.ndarray | None  # the instance map's sample grid (with masks or colours), else None
    grid_nz: np.ndarray | None  # flat indices of its non-zero samples
    use_masks: bool  # mask IoU and mask memory are on this frame

    @property
    def m(self) -> int:
        return int(self.score.shape[0])


@dataclass(slots=True, eq=False)
class _Pairs:
    """What the association knows about every (track, detection) pair (``[N, M]`` unless noted)."""

    sim: np.ndarray  # float64 box (and mask) IoU; 0 for other classes and gone tracks
    cost: np.ndarray  # float64 assignment cost of the IoU stages (before admissibility)
    cdist2: np.ndarray  # float64 squared centre distance in box sizes
    app_cost: np.ndarray | None  # float64 1 - appearance similarity (0.5 unknown); None if nowhere known
    veto: np.ndarray  # bool appearance disagrees (below appearance_gate)
    recover_veto: np.ndarray  # bool appearance disagrees for the recovery stage
    other_class: np.ndarray  # bool
    gone: np.ndarray  # bool[N] lost tracks predicted (mostly) out of the frame
    pred_box: np.ndarray  # float64[N, 4] predicted boxes
    lost_before: np.ndarray  # bool[N] LOST before this frame
    tentative_before: np.ndarray  # bool[N] TENTATIVE before this frame


@dataclass(slots=True, eq=False)
class _Matches:
    """The assignment so far: ``det_of_track[i]`` (``int64[N]``) and ``track_of_det[j]`` (``int64[M]``), -1 = none."""

    det_of_track: np.ndarray
    track_of_det: np.ndarray

    def record(self, rows: np.ndarray, cols: np.ndarray) -> None:
        """Record the matches of tracks ``rows`` to detections ``cols``."""
        self.det_of_track[rows] = cols
        self.track_of_det[cols] = rows


def _sub(pair_values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``pair_values[rows][:, cols]`` (two ``take`` calls: faster than fancy indexing)."""
    return pair_values.take(rows, 0).take(cols, 1)


def _assign(
    rows: np.ndarray, cols: np.ndarray, sub_cost: np.ndarray, max_cost: float = np.inf, saturate: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (track rows, detection columns) of the assignment of ``rows`` to ``cols`` by their costs."""
    mr, mc = linear_assignment_pairs(sub_cost, max_cost, saturate=saturate)
    return rows[mr], cols[mc]


class Tracker:
    """Multi-object tracker over per-frame :class:`~perception.types.Instance` lists.

    Each :meth:`update` runs these steps:

    1. **predict**: every track's Kalman state is moved to this frame's timestamp (a lost track
       keeps its size: its size rates are zeroed).
    2. **costs**: for every (track, detection) pair, the IoU of the predicted box, blended with the
       motion-compensated mask IoU when an instance map is given; with an image (or re-id
       embeddings), an appearance similarity (colour histograms, :mod:`~perception.tracking.appearance`,
       blended with the embeddings) that vetoes pairs below ``appearance_gate`` and adds to the
       cost. The cost also grows with the squared centre distance from the prediction, so that of
       two overlapping same-class detections the one where the motion model expects it wins. Only
       pairs of one class can match; lost tracks predicted out of the frame (``exit_fraction``)
       take part in nothing.
    3. **association**, each stage a thresholded minimum-cost assignment: (a) confirmed and lost
       tracks vs high-score detections; (b) confirmed tracks still unmatched vs low-score detections
       (ByteTrack's second stage: weak detections extend tracks through occlusion, never start
       them); (c) tentative tracks vs the remaining high-score detections; (d) *recovery*: every
       still-unmatched track vs the remaining high-score detections by size-normalised centre
       distance plus appearance cost, because IoU fails when the visible box changed shape behind
       an occluder or at the frame border; a recovery pair is dropped when another unmatched track
       near the detection looks about as much like it (``recover_margin``).
    4. **correction**: matched tracks update their filter with the detection's box, completed with
       the predicted size where it is cut by the frame border or much smaller than predicted
       (``partial_ratio``, :func:`~perception.tracking.kalman.amodal_measurements`), so a passing
       occluder neither shrinks a track nor drags it; their appearance is a running average.
    5. **lifecycle**::

           new detection (score >= new_track_score)           -> TENTATIVE
           TENTATIVE, matched `confirm_hits` times in a row   -> CONFIRMED
           TENTATIVE, not matched in a frame                  -> removed (probably a false positive)
           CONFIRMED, not matched                             -> LOST (coasts on its prediction)
           LOST, matched again                                -> CONFIRMED, same id
           TENTATIVE confirmed next to a LOST track that
           looks like it (link_distance, link_appearance)     -> takes the LOST track's id
           LOST for more than max_lost_frames (or seconds),
           or predicted (mostly) out of the frame             -> removed

       Unmatched high-score detections start tracks unless they are slivers (``min_birth_area``)
       or lie next to a just-lost track of their class (``block_birth_distance``): such a detection
       is most likely a view of that track's object.
    6. **report**: by default the CONFIRMED tracks matched in this frame (``instance_index`` > 0),
       i.e. what a consumer can draw with a mask. Tentative tracks are left out so that a false
       positive does not surface as a one-frame object (a new object appears ``confirm_hits - 1``
       frames late); ``report_tentative`` and ``report_lost`` (coasting tracks, ``instance_index``
       0, predicted box) change that.

    Ids come from a counter owned by each tracker, start at 1 and are never reused, not even after
    :meth:`reset`.

    Args:
        params: the settings (:class:`~perception.tracking.params.TrackerParams`; defaults if None).
        **overrides: settings to change, by name (``Tracker(high_score=0.6)``), validated with them.

    Raises:
        ConfigError: an unknown setting, or a value out of range (the message names it).
    """

    def __init__(self, params: TrackerParams | None = None, **overrides: Any) -> None:
        if params is None:
            params = TrackerParams(**overrides)
        elif overrides or type(params) is not TrackerParams:
            params = params.replace(**overrides)
        self.params = params
        self._time_field = _TIME_FIELDS[params.clock]
        self._next_id = 1
        self._lut = np.zeros(65536, np.int32)  # scratch: uint16 instance index -> track row + 1
        self._grid: np.ndarray | None = None  # scratch: the instance map's sample grid
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all tracks (e.g. at a scene cut or replay restart). Ids continue from the counter."""
        self._tracks = TrackTable.empty(app_dim=self.params.appearance_bins**3)
        self._t_last: int | None = None
        self._clear_masks()

    def _clear_masks(self) -> None:
        # the last frame's mask samples (y, x) (full-resolution pixels on the sample grid), and the
        # row of the track owning each: track rows stay valid until the next update's removals
        # (blending happens before them)
        self._mask_pix = np.zeros((0, 2), np.int32)
        self._mask_row = np.zeros(0, np.intp)

    @property
    def num_tracks(self) -> int:
        """Tracks currently kept (tentative, confirmed and lost)."""
        return len(self._tracks)

    # ----------------------------------------------------------------- update
    def update(
        self,
        instances: Sequence[Instance],
        meta: FrameMeta,
        instance_map: np.ndarray | None = None,
        image: np.ndarray | None = None,
        embeddings: np.ndarray | None = None,
    ) -> list[Track]:
        """Advance by one frame.

        Args:
            instances: this frame's detections (``Instance.index`` = id in ``instance_map``).
            meta: the frame's metadata; its timestamp (``clock``) gives the time step.
            instance_map: optional ``uint16[H, W]`` map of the instances, for mask IoU. Not kept:
                the pixels needed next frame are copied out.
            image: optional ``uint8[H, W, 3]`` frame the instances were found in (with
                ``instance_map``): colour appearance (:mod:`perception.tracking.appearance`) then
                ranks and vetoes pairs. Not kept.
            embeddings: optional ``float32[M, D]`` learned re-id embeddings of ``instances`` (rows in
                their order; non-negative, unit length: :class:`perception.tracking.reid.ReIdEmbedder`).
                Their similarity joins the colour one (``embedding_weight``), or stands alone
                without an image.

        Returns:
            The reported tracks (see the class docstring), each with ``instance_index`` of the
            instance it was matched to this frame (0 when coasting).
        """
        t, first_frame = self._advance_clock(meta)
        frame_wh = _frame_size(meta, instance_map)
        lost_before, tentative_before = self._predict(t)
        det = self._detections(instances, instance_map, image, embeddings)
        pairs = self._pair_costs(det, instance_map, frame_wh, lost_before, tentative_before)
        match = self._associate(det, pairs)
        self._correct(det, pairs, match, frame_wh, t)
        matched_det = self._lifecycle(det, pairs, match, frame_wh, t, first_frame)
        if det.use_masks:
            self._remember_masks(det.grid, det.grid_nz, matched_det, det.idx)
        else:
            self._forget_masks()
        return self._report(matched_det, det.box, det.idx)

    # ---------------------------------------------------------- 1. predict
    def _advance_clock(self, meta: FrameMeta) -> tuple[int, bool]:
        """This frame's timestamp (ns, of ``clock``) and whether it is the first since a reset."""
        t = int(getattr(meta, self._time_field))
        if self._t_last is not None and t < self._t_last:
            raise DataError(
                f"Tracker: {self._time_field} went backwards ({t} < {self._t_last}); call reset() when a "
                "stream restarts"
            )
        return t, self._t_last is None

    def _predict(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Move every track's filter to time ``t``; returns the lost and tentative masks before this frame."""
        tracks = self._tracks
        lost_before = tracks.state == _LOST
        if len(tracks) and self._t_last is not None:
            dt = (t - self._t_last) * 1e-9
            mean = tracks.mean
            if lost_before.any():  # a coasting box keeps its size (ByteTrack does the same)
                mean = mean.copy()
                mean[lost_before, 6:8] = 0.0
            tracks.mean, tracks.cov = kalman.predict(mean, tracks.cov, dt, self.params.kalman_params)
        self._t_last = t
        tracks.age += 1
        return lost_before, tracks.state == _TENT

    # ---------------------------------------------------------- 2. costs
    def _detections(
        self,
        instances: Sequence[Instance],
        instance_map: np.ndarray | None,
        image: np.ndarray | None,
        embeddings: np.ndarray | None,
    ) -> _Detections:
        """The detections as columns, with their colours (given an image) and checked embeddings."""
        p = self.params
        m = len(instances)
        embeddings = self._checked_embeddings(embeddings, m)
        # one pass over the detections (integers up to 2**53 survive the float64 round trip)
        rec = np.array([(*d.box, d.score, d.class_id, d.index, d.area) for d in instances], np.float64)
        rec = rec.reshape(m, 8)
        score = rec[:, 4]
        cls, idx, area = rec[:, 5:8].T.astype(np.int64, order="C")  # contiguous rows
        high = score >= p.high_score
        use_masks = p.use_mask_iou and instance_map is not None
        use_app = image is not None and instance_map is not None and m > 0
        use_app = use_app and (p.appearance_weight > 0 or p.appearance_gate > 0)
        if use_app and image.shape[:2] != instance_map.shape:
            raise DataError(f"Tracker: image {image.shape[:2]} and instance map {instance_map.shape} differ in size")
        grid = grid_nz = None
        if use_masks or use_app:  # one strided copy and one scan of the map per frame
            grid = self._sample_grid(instance_map)
            grid_nz = (grid.ravel() != 0).nonzero()[0]  # a boolean scan: much faster than on integers
        if use_app:
            colours, has_colours = self._colours(grid, grid_nz, image, idx, rec[:, 0:4])
        else:
            colours, has_colours = np.zeros((m, self._tracks.app.shape[1]), np.float32), np.zeros(m, bool)
        return _Detections(
            box=rec[:, 0:4], score=score, cls=cls, idx=idx, area=area, high=high,
            low=(score >= p.low_score) & ~high, colours=colours, has_colours=has_colours, embeddings=embeddings,
            grid=grid, grid_nz=grid_nz, use_masks=use_masks,
        )  # fmt: skip

    def _checked_embeddings(self, embeddings: np.ndarray | None, m: int) -> np.ndarray | None:
        """``embeddings`` as ``float32[m, D]``; makes room for ``D`` in the tracks on first use."""
        if embeddings is None:
            return None
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != m:
            raise DataError(f"Tracker: embeddings must be [{m}, D] for {m} instances, got {embeddings.shape}")
        tracks = self._tracks
        if tracks.emb.shape[1] != embeddings.shape[1]:
            if tracks.emb_ok.any():
                raise DataError(
                    f"Tracker: embeddings changed size from {tracks.emb.shape[1]} to {embeddings.shape[1]}; "
                    "call reset() when the re-id model changes"
                )
            tracks.resize_embeddings(embeddings.shape[1])
        return embeddings

    def _colours(
        self, grid: np.ndarray, grid_nz: np.ndarray, image: np.ndarray, det_idx: np.ndarray, det_box: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Colour embeddings of the detections (``appearance.colour_embeddings``), with their
        surroundings played down when ``appearance_context`` is on."""
        p = self.params
        weights = None
        if p.appearance_context > 0:
            weights = appearance.context_weights(
                grid, image, det_idx, det_box, stride=p.mask_stride, bins=p.appearance_bins,
                floor=p.appearance_context, grow=p.appearance_context_grow,
            )  # fmt: skip
        return appearance.colour_embeddings(
            grid, image, det_idx, stride=p.mask_stride, bins=p.appearance_bins, nonzero=grid_nz, cell_weights=weights
        )

    def _pair_costs(
        self,
        det: _Detections,
        instance_map: np.ndarray | None,
        frame_wh: tuple[int, int] | None,
        lost_before: np.ndarray,
        tentative_before: np.ndarray,
    ) -> _Pairs:
        """Similarities, appearance vetoes and assignment costs of every (track, detection) pair."""
        p, tracks = self.params, self._tracks
        n, m = len(tracks), det.m
        pred_box = kalman.measurements_to_boxes(tracks.mean) if n else np.zeros((0, 4))
        sim = self._box_similarity(pred_box, det.box)
        if det.use_masks and n and m and self._mask_pix.shape[0]:
            sim = self._blend_mask_iou(sim, instance_map, det.idx, det.area)
        other_class = tracks.cls[:, None] != det.cls[None, :]
        sim[other_class] = 0.0
        app_cost, veto, recover_veto = self._appearance_costs(det)
        # lost tracks predicted (mostly) out of the frame have left: they take no detection (an object
        # entering at the same border would otherwise inherit the id) and are removed in the lifecycle
        gone = np.zeros(n, bool)
        if frame_wh is not None and n and p.exit_fraction > 0:
            gone = lost_before & _outside_share(pred_box, frame_wh, p.exit_fraction)
            sim[gone] = 0.0
        cost = 1.0 - sim
        if p.appearance_weight > 0 and app_cost is not None:
            cost += p.appearance_weight * app_cost
        # squared centre distance in box sizes, for the cost ranking and the recovery stage
        cdist2 = normalized_center_distance_sq(pred_box, det.box) if n and m else np.zeros((n, m))
        if p.distance_weight > 0 and n and m:
            cost += p.distance_weight * np.minimum(cdist2, _MAX_DISTANCE_SQ)
        if p.lost_penalty > 0 and n and m:
            cost += p.lost_penalty * lost_before[:, None]
        return _Pairs(
            sim=sim, cost=cost, cdist2=cdist2, app_cost=app_cost, veto=veto, recover_veto=recover_veto,
            other_class=other_class, gone=gone, pred_box=pred_box, lost_before=lost_before,
            tentative_before=tentative_before,
        )  # fmt: skip

    def _box_similarity(self, pred_box: np.ndarray, det_box: np.ndarray) -> np.ndarray:
        """Box IoU of predictions and detections (``[N, M]``), buffered (C-BIoU) when ``buffer`` is on."""
        p, lost = self.params, self._tracks.lost
        if p.buffer > 0 or (p.lost_buffer > 0 and lost.any()):
            buf = np.minimum(p.buffer + p.lost_buffer * lost, p.max_buffer)
            return buffered_box_iou(pred_box, det_box, buf)
        return box_iou(pred_box, det_box)

    def _appearance_costs(self, det: _Detections) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """``(app_cost, veto, recover_veto)`` of every pair (``[N, M]``) from colours and embeddings.

        The similarity is the colours' where only they are known on both sides, the embeddings'
        where only they are, and their blend (``embedding_weight``) where both are. ``app_cost`` is
        ``1 - similarity`` (0.5 where unknown), None when no pair has appearance on both sides.
        """
        p, tracks = self.params, self._tracks
        n, m = len(tracks), det.m
        known_col = det.has_colours.any() and tracks.app_ok.any()
        known_emb = det.embeddings is not None and m > 0 and tracks.emb_ok.any()
        if not (known_col or known_emb):
            no_veto = np.zeros((n, m), bool)
            return None, no_veto, no_veto
        if known_col:
            app_sim = appearance.similarity(tracks.app, det.colours)
            known = tracks.app_ok[:, None] & det.has_colours[None, :]
        if known_emb:
            emb_sim = tracks.emb @ det.embeddings.T
            emb_known = np.broadcast_to(tracks.emb_ok[:, None], (n, m))
            if known_col:  # the blend where both are known, else whichever is
                w = np.where(known, np.where(emb_known, p.embedding_weight, 0.0), 1.0)
                app_sim = (1.0 - w) * app_sim + w * emb_sim
                known = known | emb_known
            else:
                app_sim, known = emb_sim, emb_known
        veto = known & (app_sim < p.appearance_gate)
        # the recovery stage also vetoes pairs below recover_appearance
        recover_veto = known & (app_sim < max(p.appearance_gate, p.recover_appearance))
        return np.where(known, 1.0 - app_sim, 0.5), veto, recover_veto

    # ---------------------------------------------------------- 3. association
    def _associate(self, det: _Detections, pairs: _Pairs) -> _Matches:
        """The four association stages (class docstring), each a thresholded minimum-cost assignment."""
        p, state = self.params, self._tracks.state
        match = _Matches(det_of_track=np.full(len(state), -1, np.int64), track_of_det=np.full(det.m, -1, np.int64))
        allowed = ~pairs.veto
        # costs of the admissible pairs (inf elsewhere): admissibility is decided by the similarity
        # alone, the distance term only ranks
        high_cost = np.where((pairs.sim >= p.match_iou) & allowed, pairs.cost, np.inf)  # stages a and c
        tentative = pairs.tentative_before
        # a) confirmed and lost tracks vs high-score detections
        self._iou_stage(match, (~tentative).nonzero()[0], det.high.nonzero()[0], high_cost)
        # b) still unmatched confirmed (not lost) tracks vs low-score detections
        rows = ((state == _CONF) & (match.det_of_track < 0)).nonzero()[0]
        cols = det.low.nonzero()[0]
        if rows.size and cols.size:
            low_cost = np.where((pairs.sim >= p.match_iou_low) & allowed, pairs.cost, np.inf)
            self._iou_stage(match, rows, cols, low_cost)
        # c) tentative tracks vs remaining high-score detections
        self._iou_stage(match, tentative.nonzero()[0], (det.high & (match.track_of_det < 0)).nonzero()[0], high_cost)
        # d) recovery by centre distance and appearance
        if p.recover_distance > 0:
            self._recover(match, det, pairs)
        return match

    def _iou_stage(self, match: _Matches, rows: np.ndarray, cols: np.ndarray, admissible_cost: np.ndarray) -> None:
        """Match tracks ``rows`` to detections ``cols`` by ``admissible_cost`` (inf = inadmissible)."""
        if rows.size and cols.size:
            match.record(*_assign(rows, cols, _sub(admissible_cost, rows, cols), saturate=self.params.match_cost))

    def _recover(self, match: _Matches, det: _Detections, pairs: _Pairs) -> None:
        """Recovery: every unmatched track vs the unmatched high-score detections, by size-normalised
        centre distance (which survives the shape change of partial occlusion) plus appearance cost."""
        p = self.params
        rows = ((match.det_of_track < 0) & ~pairs.gone).nonzero()[0]
        cols = (det.high & (match.track_of_det < 0)).nonzero()[0]
        if not (rows.size and cols.size):
            return
        app_cost = pairs.app_cost
        cost = np.sqrt(_sub(pairs.cdist2, rows, cols))
        reach = p.recover_distance
        w = p.recover_appearance_weight
        if w > 0 and app_cost is not None:
            cost = np.where(cost <= reach, cost + w * _sub(app_cost, rows, cols), np.inf)
            reach += w  # the most a pair within recover_distance can cost now
        cost[_sub(pairs.other_class | pairs.recover_veto, rows, cols)] = np.inf
        r, c = _assign(rows, cols, cost, reach)
        if p.recover_margin > 0 and app_cost is not None:
            excluded = pairs.other_class | pairs.gone[:, None]
            sure = self._unambiguous(r, c, match.det_of_track < 0, app_cost, pairs.cdist2, excluded)
            r, c = r[sure], c[sure]
        match.record(r, c)

    def _unambiguous(
        self,
        rows: np.ndarray,
        cols: np.ndarray,
        candidates: np.ndarray,
        app_cost: np.ndarray,
        cdist2: np.ndarray,
        excluded: np.ndarray,
    ) -> np.ndarray:
        """Which recovery pairs ``(rows[k], cols[k])`` stand out from their competitors (``bool[K]``).

        A competitor of pair ``k`` is another ``candidates`` track (``bool[N]``), not ``excluded``
        from the detection (``bool[N, M]``: other class, gone), whose prediction is within
        ``recover_distance`` box sizes of it, whatever its appearance. The pair stands out when
        every competitor's appearance cost exceeds its own by at least ``recover_margin``.
        """
        k = rows.size
        cost_k = app_cost.take(cols, 1)  # [N, K]
        rival = (cdist2.take(cols, 1) <= self.params.recover_distance**2) & ~excluded.take(cols, 1)
        rival &= candidates[:, None]
        rival[rows, np.arange(k)] = False
        best_rival = np.where(rival, cost_k, np.inf).min(axis=0, initial=np.inf)
        return best_rival - cost_k[rows, np.arange(k)] >= self.params.recover_margin

    # ---------------------------------------------------------- 4. correction
    def _correct(
        self, det: _Detections, pairs: _Pairs, match: _Matches, frame_wh: tuple[int, int] | None, t: int
    ) -> None:
        """Update the matched tracks with their detections (filter, hits, score, appearance); count
        frames lost. The table's columns are private to this tracker: matched rows change in place."""
        tracks = self._tracks
        mt = (match.det_of_track >= 0).nonzero()[0]
        if mt.size:
            d = match.det_of_track[mt]
            self._update_filters(mt, det.box.take(d, 0), pairs.pred_box, frame_wh)
            tracks.hits[mt] += 1
            tracks.score[mt] = det.score[d]
            seen = det.has_colours[d]
            if seen.any():
                self._blend_into(tracks.app, tracks.app_ok, mt[seen], det.colours.take(d[seen], 0))
            if det.embeddings is not None:
                self._blend_into(tracks.emb, tracks.emb_ok, mt, det.embeddings.take(d, 0))
        tracks.t_hit[mt] = t
        tracks.lost += 1
        tracks.lost[mt] = 0

    def _update_filters(
        self, mt: np.ndarray, box_d: np.ndarray, pred_box: np.ndarray, frame_wh: tuple[int, int] | None
    ) -> None:
        """Kalman update of tracks ``mt`` with boxes ``box_d``, completed amodally where cut or partial."""
        p, tracks = self.params, self._tracks
        # take(axis=0): several times faster than fancy indexing for a few dozen rows
        mean_mt = tracks.mean.take(mt, 0)
        held = np.zeros((mt.size, 2), bool)
        if frame_wh is not None:
            z = kalman.amodal_measurements(
                box_d, mean_mt[:, 2:4], frame_wh, predicted_boxes=pred_box.take(mt, 0),
                partial_ratio=p.partial_ratio, held=held,
            )  # fmt: skip
        else:
            z = kalman.boxes_to_measurements(box_d)
        tracks.mean[mt], tracks.cov[mt] = kalman.update(mean_mt, tracks.cov.take(mt, 0), z, p.kalman_params)
        if held.any():
            # a size completed from the prediction (border cut, partial view) says nothing about how
            # the size changes: without this, an object entering the view keeps the growth rate of
            # its visible part, its box inflates past its size, and every later full view is then
            # taken as a partial one
            vel = tracks.mean[mt, 6:8]
            vel[held] = 0.0
            tracks.mean[mt, 6:8] = vel

    def _blend_into(self, store: np.ndarray, ok: np.ndarray, rows: np.ndarray, new: np.ndarray) -> None:
        """Blend ``new`` embeddings into rows ``rows`` of a track store (colours or re-id, in place):
        a running average with ``appearance_momentum``, or ``new`` itself where a row had none."""
        keep_old = np.where(ok[rows], self.params.appearance_momentum, 0.0)
        store[rows] = appearance.blend_embeddings(store.take(rows, 0), new, keep_old)
        ok[rows] = True

    # ---------------------------------------------------------- 5. lifecycle
    def _lifecycle(
        self,
        det: _Detections,
        pairs: _Pairs,
        match: _Matches,
        frame_wh: tuple[int, int] | None,
        t: int,
        first_frame: bool,
    ) -> np.ndarray:
        """State changes, id links, removals and births; returns each remaining track's detection
        this frame (``int64[N']``, -1 = none)."""
        matched = match.det_of_track >= 0
        state = self._next_states(matched)
        linked = self._link_confirmed(pairs, match, state)
        blocked = self._blocked_births(det, pairs, match, state)
        remove = self._removals(matched, linked, pairs, frame_wh, t)
        matched_det = match.det_of_track
        if remove.any():
            keep = ~remove
            matched_det = matched_det[keep]
            self._tracks.keep(keep)
        born = (
            (match.track_of_det < 0)
            & (det.score >= self.params.birth_score)
            & det.high
            & (det.area >= self.params.min_birth_area)
            & ~blocked
        ).nonzero()[0]
        if born.size:
            self._start_tracks(det, born, t, first_frame)
            matched_det = np.concatenate([matched_det, born])
        return matched_det

    def _next_states(self, matched: np.ndarray) -> np.ndarray:
        """Matched: confirmed (tentative until ``confirm_hits``); unmatched: confirmed -> lost."""
        tracks = self._tracks
        state = tracks.state
        still_tentative = (state == _TENT) & (tracks.hits < self.params.confirm_hits)
        state = np.where(matched, np.where(still_tentative, _TENT, _CONF), np.where(state == _CONF, _LOST, state))
        tracks.state = state
        return state

    def _link_confirmed(self, pairs: _Pairs, match: _Matches, state: np.ndarray) -> np.ndarray:
        """Tracks confirmed in this frame take the id of a lost track of their object (``link_distance``);
        returns ``bool[N]``, the lost tracks whose id was taken over."""
        p = self.params
        linked = np.zeros(len(state), bool)
        if p.link_distance > 0 and pairs.app_cost is not None and p.confirm_hits > 1:
            confirmed_now = (pairs.tentative_before & (state == _CONF)).nonzero()[0]
            if confirmed_now.size:
                excluded = pairs.other_class | pairs.gone[:, None]
                linked = self._link(confirmed_now, match.det_of_track, pairs.app_cost, pairs.cdist2, excluded)
        return linked

    def _link(
        self,
        confirmed_now: np.ndarray,
        det_of_track: np.ndarray,
        app_cost: np.ndarray,
        cdist2: np.ndarray,
        excluded: np.ndarray,
    ) -> np.ndarray:
        """Give tracks confirmed in this frame the id of a lost track of their object (``link_distance``).

        A pair (lost track, newly confirmed track) qualifies when the lost track is not ``excluded``
        from the new track's detection (``bool[N, M]``: other class, gone), its prediction is within
        ``link_distance`` box sizes of that detection and their appearance similarity is at least
        ``link_appearance``; pairs are chosen by distance plus ``recover_appearance_weight`` times
        appearance cost (one lost track per new track). The new track takes the lost track's id and
        age.

        Returns:
            ``bool[N]``: the lost tracks whose id was taken over (to be removed).
        """
        p, tracks = self.params, self._tracks
        n = det_of_track.size
        lost = (tracks.state == _LOST).nonzero()[0]
        linked = np.zeros(n, bool)
        if lost.size == 0:
            return linked
        d = det_of_track[confirmed_now]
        dist = np.sqrt(cdist2[np.ix_(lost, d)])
        acost = app_cost[np.ix_(lost, d)]
        ok = (dist <= p.link_distance) & (acost <= 1.0 - p.link_appearance) & ~excluded[np.ix_(lost, d)]
        if not ok.any():
            return linked
        pair_cost = np.where(ok, dist + p.recover_appearance_weight * acost, np.inf)
        mq, mr = linear_assignment_pairs(pair_cost, np.inf)
        q, r = lost[mq], confirmed_now[mr]
        tracks.ids[r] = tracks.ids[q]
        tracks.age[r] = tracks.age[q]
        linked[q] = True
        return linked

    def _blocked_births(self, det: _Detections, pairs: _Pairs, match: _Matches, state: np.ndarray) -> np.ndarray:
        """``bool[M]``: unmatched detections close to where a recently lost track of their class is
        predicted. Such a detection is most likely a view of that track's object that failed the
        match (a sliver, a partial view whose colours differ): it starts no track, which would take
        over the object's id."""
        p = self.params
        n, m = len(state), det.m
        blocked = np.zeros(m, bool)
        if p.block_birth_distance > 0 and n and m:
            recent = (state == _LOST) & ~pairs.gone & (self._tracks.lost <= p.block_birth_lost)
            near_rows = recent.nonzero()[0]
            free_cols = ((match.track_of_det < 0) & det.high).nonzero()[0]
            if near_rows.size and free_cols.size:
                near = _sub(pairs.cdist2, near_rows, free_cols) <= p.block_birth_distance**2
                near &= ~_sub(pairs.other_class | pairs.veto, near_rows, free_cols)
                blocked[free_cols[near.any(axis=0)]] = True
        return blocked

    def _removals(
        self, matched: np.ndarray, linked: np.ndarray, pairs: _Pairs, frame_wh: tuple[int, int] | None, t: int
    ) -> np.ndarray:
        """``bool[N]``: unmatched tentative tracks, linked ones, and lost ones past their limits or gone."""
        p, tracks = self.params, self._tracks
        state = tracks.state
        lost = state == _LOST
        remove = ~matched & (state == _TENT)
        remove |= lost & (tracks.lost > p.max_lost_frames)
        remove |= linked
        if p.max_lost_seconds is not None:
            remove |= lost & ((t - tracks.t_hit) * 1e-9 > p.max_lost_seconds)
        if frame_wh is not None:
            w_img, h_img = frame_wh
            b = pairs.pred_box
            outside = (b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= w_img) | (b[:, 1] >= h_img)
            remove |= lost & (outside | pairs.gone)
        return remove

    def _start_tracks(self, det: _Detections, born: np.ndarray, t: int, first_frame: bool) -> None:
        """Append a track for each detection ``born`` (tentative, or confirmed when one hit suffices)."""
        p, tracks = self.params, self._tracks
        k = born.size
        mean0, cov0 = kalman.initiate(kalman.boxes_to_measurements(det.box.take(born, 0)), p.kalman_params)
        new_ids = np.arange(self._next_id, self._next_id + k, dtype=np.int64)
        self._next_id += k
        init_state = _CONF if p.confirm_hits <= 1 or (first_frame and p.confirm_first_frame) else _TENT
        if det.embeddings is not None:
            emb = det.embeddings.take(born, 0)
        else:
            emb = np.zeros((k, tracks.emb.shape[1]), np.float32)
        tracks.append(
            TrackTable(
                ids=new_ids, cls=det.cls[born], state=np.full(k, init_state, np.int64), hits=np.ones(k, np.int64),
                age=np.ones(k, np.int64), lost=np.zeros(k, np.int64), t_hit=np.full(k, t, np.int64),
                score=det.score[born], mean=mean0, cov=cov0, mask_ref=np.zeros((k, 2)), mask_seen=np.zeros(k, bool),
                app=det.colours.take(born, 0), app_ok=det.has_colours[born], emb=emb,
                emb_ok=np.full(k, det.embeddings is not None),
            )
        )  # fmt: skip

    # ---------------------------------------------------------- masks
    def _sample_grid(self, instance_map: np.ndarray) -> np.ndarray:
        """Every ``mask_stride``-th row and column of the map, copied into a reused contiguous buffer.

        One strided pass over the full-resolution map per frame; the masks are remembered from this
        small grid (``mask_stride**2`` times fewer pixels).
        """
        st = self.params.mask_stride
        sub = instance_map[::st, ::st]
        if self._grid is None or self._grid.shape != sub.shape or self._grid.dtype != sub.dtype:
            self._grid = np.empty(sub.shape, sub.dtype)
        rows = instance_map[::st]
        if (
            st == 4
            and _LITTLE_ENDIAN
            and instance_map.dtype == np.uint16
            and instance_map.shape[1] % 4 == 0
            and rows.strides[1] == 2
        ):
            # every 4th uint16 of a row is the low half of a uint64 read over it: a contiguous
            # 64-bit read that truncates to uint16 is much faster than a 4-element-stride gather
            np.copyto(self._grid, rows.view(np.uint64), casting="unsafe")
        else:
            np.copyto(self._grid, sub)
        return self._grid

    def _blend_mask_iou(
        self, sim: np.ndarray, instance_map: np.ndarray, det_idx: np.ndarray, det_area: np.ndarray
    ) -> np.ndarray:
        """Blend motion-compensated mask IoU into ``sim`` for tracks whose last mask is known.

        The remembered samples are moved by the predicted motion to the pixel (moving them in whole
        grid cells instead costs ID switches).
        """
        tracks = self._tracks
        shifts = tracks.mean[:, 0:2] - tracks.mask_ref
        stride = self.params.mask_stride
        miou = shifted_mask_iou(
            self._mask_pix, self._mask_row, shifts, instance_map, det_idx, det_area, pixel_weight=float(stride**2)
        )
        w = self.params.mask_weight
        blend = miou
        blend *= w
        blend += (1.0 - w) * sim
        return np.where(tracks.mask_seen[:, None], blend, sim)

    def _remember_masks(
        self, grid: np.ndarray, nz: np.ndarray, matched_det: np.ndarray, det_idx: np.ndarray
    ) -> None:
        """Keep this frame's mask samples (from the sample grid) of every matched/new track, by track row."""
        tracks = self._tracks
        has = matched_det >= 0
        # posterior centre: next frame's shift is the predicted motion
        tracks.mask_ref = np.where(has[:, None], tracks.mean[:, 0:2], 0.0)
        tracks.mask_seen = has
        rows_has = has.nonzero()[0]
        if rows_has.size == 0:
            self._clear_masks()
            return
        idx = det_idx[matched_det[rows_has]]
        vals = grid.ravel().take(nz)
        # instance index -> track row + 1 (0 = no track): one gather over the masks' samples
        if grid.dtype == np.uint16:
            lut = self._lut  # reused, all zero between calls
            lut[idx] = rows_has + 1
            row1 = lut.take(vals)
            lut[idx] = 0
        else:
            lut = np.zeros(int(max(vals.max(initial=0), idx.max())) + 1, np.int32)
            lut[idx] = rows_has + 1
            row1 = lut[vals]
        keep = (row1 != 0).nonzero()[0]
        nz = nz.take(keep).astype(np.int32)
        width = np.int32(grid.shape[1])
        gy = nz // width
        pix = np.empty((nz.size, 2), np.int32)
        pix[:, 0] = gy * self.params.mask_stride
        pix[:, 1] = (nz - gy * width) * self.params.mask_stride
        self._mask_pix = pix
        row = row1.take(keep).astype(np.intp)
        row -= 1
        self._mask_row = row

    def _forget_masks(self) -> None:
        """No masks this frame: none remembered for the next."""
        self._clear_masks()
        n = len(self._tracks)
        self._tracks.mask_ref = np.zeros((n, 2))
        self._tracks.mask_seen = np.zeros(n, bool)

    # ---------------------------------------------------------- 6. report
    def _report(self, matched_det: np.ndarray, det_box: np.ndarray, det_idx: np.ndarray) -> list[Track]:
        """The tracks to report (class docstring) as :class:`~perception.types.Track` objects."""
        tracks = self._tracks
        state = tracks.state
        has = matched_det >= 0
        rep = has & (state == _CONF)
        if self.params.report_tentative:
            rep |= has & (state == _TENT)
        if self.params.report_lost:
            rep |= state == _LOST
        rows = rep.nonzero()[0]
        if rows.size == 0:
            return []
        d = matched_det[rows]
        seen = d >= 0
        if seen.all():
            boxes = det_box.take(d, 0)
            inst = det_idx[d]
        else:  # coasting tracks (report_lost): the predicted box, no instance
            at = np.maximum(d, 0)
            boxes = det_box[at] if det_box.shape[0] else np.zeros((rows.size, 4))
            boxes[~seen] = kalman.measurements_to_boxes(tracks.mean[rows[~seen]])
            inst = np.where(seen, det_idx[at] if det_idx.size else 0, 0)
        # plain Python scalars in one conversion per column (tuples straight from the columns);
        # builds the output objects only
        return [
            Track(
                track_id=tid, instance_index=ii, class_id=c, score=sc, box=bx, velocity=v,
                age=ag, hits=hi, state=_STATES[st], extra={} if sn else {"lost_frames": lf},
            )
            for tid, ii, c, sc, bx, v, ag, hi, st, sn, lf in zip(
                tracks.ids[rows].tolist(),
                inst.tolist(),
                tracks.cls[rows].tolist(),
                tracks.score[rows].tolist(),
                zip(*boxes.T.tolist()),
                zip(*tracks.mean.take(rows, 0)[:, 4:6].T.tolist()),
                tracks.age[rows].tolist(),
                tracks.hits[rows].tolist(),
                state[rows].tolist(),
                seen.tolist(),
                tracks.lost[rows].tolist(),
            )
        ]  # fmt: skip


def _frame_size(meta: FrameMeta, instance_map: np.ndarray | None) -> tuple[int, int] | None:
    """``(width, height)`` of the frame: the instance map's, else the metadata's, else unknown."""
    if instance_map is not None:
        return (instance_map.shape[1], instance_map.shape[0])
    if meta.width > 0 and meta.height > 0:
        return (meta.width, meta.height)
    return None


def _outside_share(pred_box: np.ndarray, frame_wh: tuple[int, int], exit_fraction: float) -> np.ndarray:
    """``bool[N]``: boxes with less than ``exit_fraction`` of their area inside the frame."""
    size = np.maximum(pred_box[:, 2:] - pred_box[:, :2], 1e-9)
    lim = np.array(frame_wh, np.float64)
    inside_wh = np.minimum(pred_box[:, 2:], lim) - np.maximum(pred_box[:, :2], 0.0)
    np.maximum(inside_wh, 0.0, out=inside_wh)
    inside = inside_wh[:, 0] * inside_wh[:, 1]
    return inside < exit_fraction * (size[:, 0] * size[:, 1])


def relabel_instance_map(instance_map: np.ndarray, tracks: Sequence[Track]) -> np.ndarray:
    """Rewrite instance indices to track ids, for publishing (one LUT gather, no per-pixel Python).

    Instances without a reported track become 0. Ids above 65535 do not fit ``uint16``: the map
    carries ``(track_id - 1) % 65535 + 1`` (the message header carries the full id).

    The pipeline is moving to publishing instance indices with a per-message table instead
    (``Track.instance_index`` points at ``Instance.index``); this stays for evaluation and tools,
    which score and draw maps of track ids.

    Args:
        instance_map: ``uint16[H, W]`` instance indices (``Instance.index``).
        tracks: tracks from :meth:`Tracker.update` (``instance_index`` 0 = coasting, ignored).

    Returns:
        A new ``uint16[H, W]`` map of track ids.
    """
    if instance_map.dtype != np.uint16:
        raise DataError(f"relabel_instance_map: instance map must be uint16, got {instance_map.dtype}")
    lut = np.zeros(65536, np.uint16)
    for tr in tracks:  # a handful of entries
        if tr.instance_index > 0:
            lut[tr.instance_index] = (tr.track_id - 1) % 65535 + 1
    return lut[instance_map]
