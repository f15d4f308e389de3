"""A thin multi-object tracker: Kalman prediction, two-stage (ByteTrack) association, lifecycle.

The maths lives in :mod:`perception.tracking.kalman` and :mod:`perception.tracking.matching`; this
module only keeps per-track state (stacked in arrays so that prediction and matching are vectorised
over tracks) and applies the lifecycle rules.

Association, per frame, after every track's Kalman prediction to this frame's timestamp:

1. confirmed and lost tracks vs high-score detections (IoU of the predicted box, blended with the
   motion-compensated mask IoU when an instance map is given; among pairs above the IoU threshold
   the cost also grows with the squared centre distance from the prediction, ``distance_weight``);
2. confirmed tracks still unmatched vs low-score detections (ByteTrack's second stage);
3. tentative tracks vs the remaining high-score detections;
4. recovery: every still-unmatched track vs the remaining high-score detections of its class by
   size-normalised centre distance (IoU fails when the visible box changed shape behind an occluder
   or at the frame border), ranked by that distance plus colour disagreement when the frame's image
   is given; with appearance, a pair is dropped when another unmatched track near the detection
   looks about as much like it (``recover_margin``).

Every stage is a thresholded minimum-cost assignment and only pairs of the same class can match.
When learned re-id embeddings of the detections are given (:mod:`perception.tracking.reid`), each
track keeps a running average of them too, and their similarity is blended into the colour one
(``embedding_weight``). When the frame's image is given, each track also keeps a colour embedding
(a running average of its detections' colour histograms, optionally with the colours of each
detection's surroundings played down, :mod:`perception.tracking.appearance`): pairs whose colours
disagree (Bhattacharyya coefficient below ``appearance_gate``) are vetoed in every stage, and colour
disagreement adds to the cost, so that two overlapping objects of one class keep their ids.
Boxes cut by the frame border update the filter with the predicted size completed on the cut side,
and boxes much smaller than predicted (partly hidden by an occluder, ``partial_ratio``) with the
predicted size anchored at their side that agrees with the prediction
(:func:`perception.tracking.kalman.amodal_measurements`). Detections smaller than ``min_birth_area``
pixels never start a track.

Lifecycle::

    new detection (score >= new_track_score)           -> TENTATIVE
    TENTATIVE, matched `confirm_hits` times in a row   -> CONFIRMED
    TENTATIVE, not matched in a frame                  -> removed (it was probably a false positive)
    CONFIRMED, not matched                             -> LOST (coasts on its Kalman prediction)
    LOST, matched again                                -> CONFIRMED, same id
    TENTATIVE confirmed next to a LOST track that looks
    like it (``link_distance``, ``link_appearance``)    -> takes the LOST track's id; that one is removed
    LOST for more than max_lost_frames frames, or max_lost_seconds, or its predicted box has
    (mostly, ``exit_fraction``) left the frame         -> removed

What :meth:`Tracker.update` reports: by default the CONFIRMED tracks matched to a detection in this
frame (each carries ``instance_index`` > 0), i.e. what a downstream consumer can draw with a mask.
Tentative tracks are not reported by default: every false-positive detection would otherwise surface
as a one-frame object with a fresh id, and a consumer counting objects would over-count; the price is
that a new object appears ``confirm_hits - 1`` frames late. ``report_tentative=True`` and
``report_lost=True`` (coasting tracks, ``instance_index == 0``, predicted box) change that.

Ids come from a counter owned by each tracker instance, start at 1 and are never reused, not even
after :meth:`Tracker.reset`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from perception.errors import ConfigError, DataError
from perception.tracking import appearance, kalman
from perception.tracking.matching import (
    box_iou,
    buffered_box_iou,
    linear_assignment_pairs,
    normalized_center_distance_sq,
    shifted_mask_iou,
)
from perception.types import FrameMeta, Instance, Track, TrackState

__all__ = ["Tracker", "relabel_instance_map"]

_TIME_FIELDS = {"pts": "pts_ns", "mono": "t_mono_ns", "wall": "t_wall_ns"}
_TENT, _CONF, _LOST = int(TrackState.TENTATIVE), int(TrackState.CONFIRMED), int(TrackState.LOST)
_STATES = tuple(TrackState)  # index -> member, without an enum lookup per reported track
_LITTLE_ENDIAN = sys.byteorder == "little"
_MAX_DISTANCE_SQ = 100.0
"""Cap of the squared centre distance (10 box sizes) in the cost: beyond it a pair is far anyway, and
the cap keeps one absurd prediction from dominating the assignment's total cost."""


class Tracker:
    """Multi-object tracker over per-frame :class:`~perception.types.Instance` lists.

    Keyword arguments (each a trade-off). The figures quoted were measured when each setting was
    chosen, with the other defaults of that time; ``perception eval-tracking --tracker KEY=VALUE``
    measures any of them again:

    * ``high_score``: detections at or above it are matched first and may start tracks. Higher keeps
      false positives from starting tracks but lets weak true detections only extend tracks.
    * ``low_score``: detections between ``low_score`` and ``high_score`` are used only to extend
      existing confirmed tracks (ByteTrack's second stage); below it they are ignored. Lower keeps
      tracks alive through partial occlusion but risks extending a track onto clutter.
    * ``new_track_score``: minimum score to start a track (defaults to ``high_score``; cannot be
      lower, since only high-score detections may start tracks).
    * ``match_iou``: minimum similarity (IoU) for a match in the first stage and for tentative tracks.
      Lower follows fast motion and jittery boxes better, higher avoids swapping between neighbours.
    * ``match_iou_low``: the same for the second stage (low-score detections); stricter by default
      since those detections are less reliable.
    * ``confirm_hits``: consecutive matches before a track is confirmed (and reported). More means
      fewer spurious tracks, later first reports. 2 is ByteTrack's rule (activated on the second
      match); on the generated scenes 3 costs about 1 point of IDF1 in recall.
    * ``confirm_first_frame``: tracks born on the first frame after construction or :meth:`reset`
      are confirmed at once (as ByteTrack does): objects already in view when the stream starts are
      reported from the first frame, at the risk of reporting a false positive of that frame.
    * ``max_lost_frames``: frames a confirmed track coasts without a match before it is removed.
      Longer bridges longer occlusions but lets a new object in the same place inherit the id.
    * ``max_lost_seconds``: the same limit in seconds of capture time (None = frames only), robust
      to frame drops.
    * ``use_mask_iou``: when an instance map is passed to :meth:`update`, blend motion-compensated
      mask IoU into the similarity. Masks separate overlapping objects whose boxes overlap heavily.
    * ``mask_weight``: weight of mask IoU in the blend ``(1 - w) * box IoU + w * mask IoU``.
    * ``mask_stride``: masks are remembered on every ``mask_stride``-th row and column only, and mask
      IoU and colours are estimated from that sample: ``mask_stride**2`` times less work and memory;
      the estimate degrades for objects only a few strides wide (whose box IoU then dominates
      anyway). On the generated scenes 6 gave 41 ID switches on seeds 0-19 and 45 on seeds 20-39
      against 46 and 50 at 4 (8 gave 78 on seeds 0-19), and a faster update.
    * ``buffer`` / ``lost_buffer`` / ``max_buffer``: boxes are grown by ``buffer + lost_buffer x
      frames lost`` (at most ``max_buffer``) times their size per side before the IoU (C-BIoU), so
      that fast or coasting objects still overlap their prediction. Larger reaches further but blurs
      neighbours together. 0 = plain IoU (the default; the recovery stage below covers long gaps).
    * ``recover_distance``: a last association stage pairs still-unmatched tracks with unmatched
      high-score detections of the same class whose centre is within this many box sizes of the
      prediction (:func:`~perception.tracking.matching.normalized_center_distance`). It re-finds
      objects whose visible box changed shape behind an occluder or at the frame border, where IoU
      fails. Larger bridges worse predictions but may hand an id to a neighbour; 0 disables it.
    * ``partial_ratio``: a matched detection whose width (or height) is below this fraction of the
      track's predicted one, without touching the frame border, is taken as a partial view (an
      occluder covers one side): that axis updates the filter with the predicted size, anchored at
      the visible side that agrees better with the prediction
      (:func:`~perception.tracking.kalman.amodal_measurements`), so a passing occluder neither
      shrinks the track nor drags its centre and velocity. Higher treats milder shrinking as
      occlusion (and on the generated scenes costs ID switches from mis-anchored boxes: 0.75 gave
      38 switches on seeds 0-4 against 23 at 0.6); 0 disables it.
    * ``distance_weight``: in the IoU stages, a pair's cost ``1 - similarity`` gains this weight times
      the squared size-normalised centre distance (capped at 10 box sizes). Pairs still have to
      reach ``match_iou`` / ``match_iou_low`` to be admissible; the distance only ranks admissible
      pairs, preferring the detection whose centre is where the motion model expects it when two
      overlapping objects of a class give similar IoUs. Larger trusts the centre prediction more
      than box overlap (1 and 3 gave more switches than 0.3 on the generated scenes); 0 = IoU only.
    * ``min_birth_area``: unmatched detections with fewer pixels than this (``Instance.area``) do not
      start tracks: slivers of a mostly hidden object or of one entering the view give a track a
      tiny size and an unknown velocity that then steals its neighbours' detections. Larger
      suppresses more slivers but delays tracks of small, far objects; 0 disables it.
    * ``exit_fraction``: a LOST track whose predicted box has less than this fraction of its area
      inside the frame has left the view: it takes part in no association and is removed. Without
      it, a track coasting out at a border hands its id to the next object entering there (on
      seeds 0-9 of the generated scenes 0.35 raised IDF1 from 0.916 to 0.926 and removed 3 of 39
      ID switches). Higher gives up on objects still partly in view (0.5 and above cost switches:
      they come back as new tracks); 0 removes a lost track only once its box is wholly outside.
      With colour appearance (which vetoes most such hand-overs) 0.2 gave 46 switches on seeds
      0-19 against 49 at 0.35.
    * ``appearance_weight``: with an image, the cost of a pair gains this weight times ``1 - BC``
      (Bhattacharyya coefficient of the track's colour embedding and the detection's; 0.5 where
      either has none yet). Larger lets colour overrule box and mask overlap; 0 = colour only vetoes.
    * ``appearance_gate``: with an image, pairs with ``BC`` below this never match. Higher vetoes
      more wrong pairs but also more right ones seen partly or under changing light (on the
      generated scenes, seeds 0-9: 0.2 and 0.25 gave 30 ID switches, 0.4 gave 72 as partial views of
      an object were vetoed and it came back under a new id); 0 = no veto.
    * ``appearance_bins``: colour levels per channel of the histograms (``bins**3`` cells). More
      separates similar colours but splits one colour across cells under noise (4 and 5 gave more
      switches than 6 on the generated scenes).
    * ``appearance_momentum``: weight of a track's past colours when a new detection updates them
      (0.9: the embedding is an average over about the last 10 matches, so one partial view or
      one mask painted over by a neighbour changes it little).
    * ``appearance_context`` / ``appearance_context_grow``: with an image, each detection's
      histogram plays down the colours of its surroundings (its box grown by
      ``appearance_context_grow`` box sizes per side, less its own pixels): a colour filling more
      than ``appearance_context`` of them keeps only ``appearance_context`` over its share as weight
      (:func:`~perception.tracking.appearance.context_weights`). Road and wall taken in by a mask a
      few pixels off, and a neighbour's colours spilt into it, then count for little, so two
      objects of one class in one place no longer look alike through what surrounds them. Off by
      default (0): on the generated scenes 0.01 / 0.5 lowered ID switches on seeds 0-39 / 40-79 /
      80-119 from 55 / 104 / 102 to 51 / 82 / 98 and raised IDF1 on each (with
      ``recover_appearance_weight`` 4: from 51 / 89 / 93 to 51 / 75 / 79; on seeds 40-79 a reach of
      0.25 gave 93, and playing down the whole frame's background instead gave 89), but on the
      CamVid val drive (``tools/track_camvid.py``) it gave 25 reported tracks and 3 suspected ID
      switches against 22 and 1, and it costs about 0.2 ms per update with 50 objects
      (``tools/bench_tracker.py``: 1.01 ms against 0.83 ms). Lower plays down more.
    * ``recover_appearance``: with an image, the recovery stage (which pairs by centre distance,
      not overlap) only takes pairs whose colours agree at least this much (when both have colours).
      Recovery reaches up to ``recover_distance`` box sizes, where a neighbour of the same class is
      often the nearest detection; this keeps a track whose object was missed from taking it. On
      generated seeds 20-39 (not used for tuning) it and ``lost_penalty`` lowered ID switches from
      77 to 55 and raised IDF1 from 0.916 to 0.926. Higher vetoes more partial views of the
      object itself (0.5 and above gave more switches: the vetoed object came back under a new id
      and the two tracks then took turns); 0 = colours do not restrict recovery beyond
      ``appearance_gate``.
    * ``recover_appearance_weight``: with an image, a recovery pair (within ``recover_distance``)
      costs its centre distance in box sizes plus this weight times ``1 - BC`` (0.5 where either
      side has no colours yet), so that of two same-class detections near a track whose own object
      was missed, the one that looks like it wins over the one merely nearer: a pair ``d`` box
      sizes farther is preferred when its BC is higher by more than ``d / weight``. On the
      generated scenes 4 lowered ID switches on seeds 0-39 / 40-79 / 80-119 from 55 / 104 / 102 to
      51 / 89 / 93 (2 gave 50 / 92 / 97, 10 gave 94 on seeds 40-79 with one seed at IDF1 0.856), and
      on seeds 120-159, looked at only after the choice, from 96 to 82; IDF1 rose on seeds 40-79
      and 120-159 (0.927 to 0.929 on each) and moved by less than 0.001 on the others; 0 = distance
      alone.
    * ``recover_margin``: with appearance, a recovery pair is dropped unless every other track still
      unmatched (of the detection's class, within ``recover_distance`` of it, whatever its colours)
      has an appearance cost (``1 - similarity``) higher by at least this. Recovery matches by
      centre distance, which cannot tell two objects of a class side by side apart; when the
      appearance cannot either, a miss is cheaper than a guess (a wrong guess is two ID switches:
      one when the track takes its neighbour's detection, one when the detection goes back). On the
      generated scenes with re-id, 0.1 lowered ID switches on seeds 40-79 from 68 to 59 and on seeds
      120-159 from 90 to 80; with ``link_distance`` 2, 0.1 / 0.15 / 0.2 / 0.3 gave 51 / 49 / 47 / 47 on
      seeds 40-79, and 0.2 gave 60 on seeds 120-159 against 73 at 0.1. With colours alone it moves
      switches within noise (seeds 40-79 / 120-159: 85 / 78 at 0, 90 / 67 at 0.2). 0 = off.
    * ``link_distance`` / ``link_appearance``: when a tentative track is confirmed, a lost track of
      its class whose prediction is within ``link_distance`` box sizes of the new track's detection
      and whose appearance similarity with it is at least ``link_appearance`` hands it its id (and
      age) and is removed. The new track's first view failed to match the lost track (a partial
      view whose appearance was vetoed, a prediction gone astray during the gap) and was born
      instead; its second view, matched to it first by the tentative stage, is often a good one.
      Needs appearance (an image or embeddings) and ``confirm_hits`` > 1. On the generated scenes
      with re-id and ``recover_margin`` 0.1, 2 / 0.6 lowered ID switches on seeds 40-79 from 59 to 51
      and on seeds 120-159 from 80 to 73 (1 / 0.6: 53; 2 / 0.5 on seeds 0-39: 44 against 43; a
      looser 1 / 0.25 gave 63 and lower IDF1 as ids went to neighbours); with colours alone 2 / 0.6
      lowered them on seeds 40-79 from 89 to 85. With ``report_tentative`` the object's first,
      tentative id is then replaced. ``link_distance`` 0 = off.
    * ``lost_penalty``: added to the cost of every pair with a lost (coasting) track in the IoU
      stages, so that a track matched in the previous frame keeps its detection when a coasting
      track of the same object competes for it (the two would otherwise take turns, each turn an
      ID switch). Larger makes coasting tracks harder to re-find when a neighbour is near; 0 = no
      preference.
    * ``embedding_weight``: when :meth:`update` is given learned re-id ``embeddings``
      (:mod:`perception.tracking.reid`), the similarity of a pair whose sides both have colours and
      embeddings is ``(1 - w) * BC + w * (embedding dot product)``; it then vetoes and costs as the
      colour similarity alone does (``appearance_gate``, ``appearance_weight``,
      ``recover_appearance``, ``recover_appearance_weight``). Pairs with only one of the two use that
      one. On generated seeds 40-79 with the bundled model (trained on seeds 1000-1059) 0.5 gave 68
      ID switches against 89 with colours alone, 0.65 gave 70.
    * ``match_cost``: in the IoU stages a pair costing more than this counts as no better than
      this (:func:`~perception.tracking.matching.linear_assignment_pairs` ``saturate``): it is a
      fallback, taken only when it displaces no cheaper pair. Without it the assignment first
      maximises the number of matches, so a track whose detection is a sliver could push its
      neighbour's track off its own detection to make two matches instead of one, an ID switch
      each way (on seeds 0-39 of the generated scenes, measured before the size-velocity fix in
      :meth:`update`: 86 ID switches without it, 72 at 1.0; on seeds 0-29, 59 at 0.7, 48 at 1.0
      and 50 at 1.2). Lower prefers fewer, surer matches; ``inf`` = most matches first.
    * ``block_birth_distance`` / ``block_birth_lost``: an unmatched detection whose centre is within
      ``block_birth_distance`` box sizes of a track of its class that is lost (for at most
      ``block_birth_lost`` frames, this one included) and whose colours it does not veto starts no
      track. It is most likely a view of that track's object that failed to match (a sliver, or
      a partial view whose colours moved below ``recover_appearance``); a new track there would
      take the object's id over as soon as it is confirmed. The price: an object that really
      appears next to a lost track of its class is found a frame or more later. On the generated
      scenes 0.7 / 6 lowered ID switches on seeds 0-39 from 62 to 55, on seeds 40-79 from 124 to
      104, and on seeds 80-119 (not used to choose it) from 109 to 102, with IDF1 as high or higher;
      0.5 gave 58 / 118, 1.0 gave 56 / 106 with one seed of 0-39 at IDF1 0.899. 0 disables it.
    * ``report_tentative`` / ``report_lost``: see the module docstring.
    * ``clock``: which timestamp of :class:`~perception.types.FrameMeta` gives ``dt``: ``"pts"``
      (presentation time: the recorded rate for replays), ``"mono"`` (host capture time) or ``"wall"``.
    * ``kalman_params``: the filter's noise levels.
    """

    def __init__(
        self,
        *,
        high_score: float = 0.5,
        low_score: float = 0.1,
        new_track_score: float | None = None,
        match_iou: float = 0.3,
        match_iou_low: float = 0.5,
        confirm_hits: int = 2,
        confirm_first_frame: bool = True,
        max_lost_frames: int = 30,
        max_lost_seconds: float | None = None,
        use_mask_iou: bool = True,
        mask_weight: float = 0.5,
        mask_stride: int = 6,
        buffer: float = 0.0,
        lost_buffer: float = 0.0,
        max_buffer: float = 1.0,
        recover_distance: float = 2.0,
        partial_ratio: float = 0.6,
        distance_weight: float = 0.3,
        min_birth_area: int = 50,
        exit_fraction: float = 0.2,
        appearance_weight: float = 0.5,
        appearance_gate: float = 0.25,
        appearance_bins: int = 6,
        appearance_momentum: float = 0.9,
        appearance_context: float = 0.0,
        appearance_context_grow: float = 0.5,
        recover_appearance: float = 0.45,
        recover_appearance_weight: float = 4.0,
        recover_margin: float = 0.2,
        link_distance: float = 2.0,
        link_appearance: float = 0.6,
        lost_penalty: float = 0.2,
        embedding_weight: float = 0.5,
        match_cost: float = 1.0,
        block_birth_distance: float = 0.7,
        block_birth_lost: int = 6,
        report_tentative: bool = False,
        report_lost: bool = False,
        clock: str = "pts",
        kalman_params: kalman.KalmanParams | None = None,
    ) -> None:
        if block_birth_distance < 0 or block_birth_lost < 0:
            raise ConfigError("Tracker: block_birth_distance and block_birth_lost must be >= 0")
        if min(buffer, lost_buffer, max_buffer, recover_distance, distance_weight) < 0:
            raise ConfigError(
                "Tracker: buffer, lost_buffer, max_buffer, recover_distance and distance_weight must be >= 0"
            )
        if not 0.0 <= partial_ratio < 1.0:
            raise ConfigError(f"Tracker: partial_ratio must be in [0, 1), got {partial_ratio}")
        if not 0.0 <= exit_fraction <= 1.0:
            raise ConfigError(f"Tracker: exit_fraction must be in [0, 1], got {exit_fraction}")
        if appearance_weight < 0 or not 0.0 <= appearance_gate <= 1.0:
            raise ConfigError(
                f"Tracker: need appearance_weight >= 0 and appearance_gate in [0, 1], got {appearance_weight}, "
                f"{appearance_gate}"
            )
        if not 0.0 <= recover_appearance <= 1.0 or lost_penalty < 0 or recover_appearance_weight < 0:
            raise ConfigError(
                "Tracker: need recover_appearance in [0, 1], recover_appearance_weight >= 0 and lost_penalty >= 0, "
                f"got {recover_appearance}, {recover_appearance_weight}, {lost_penalty}"
            )
        if recover_margin < 0 or link_distance < 0 or not 0.0 <= link_appearance <= 1.0:
            raise ConfigError(
                "Tracker: need recover_margin >= 0, link_distance >= 0 and link_appearance in [0, 1], got "
                f"{recover_margin}, {link_distance}, {link_appearance}"
            )
        if not 2 <= appearance_bins <= 16:
            raise ConfigError(f"Tracker: appearance_bins must be in [2, 16], got {appearance_bins}")
        if not 0.0 <= appearance_context <= 1.0 or appearance_context_grow < 0:
            raise ConfigError(
                "Tracker: need appearance_context in [0, 1] and appearance_context_grow >= 0, got "
                f"{appearance_context}, {appearance_context_grow}"
            )
        if not 0.0 <= embedding_weight <= 1.0:
            raise ConfigError(f"Tracker: embedding_weight must be in [0, 1], got {embedding_weight}")
        if not 0.0 <= appearance_momentum < 1.0:
            raise ConfigError(f"Tracker: appearance_momentum must be in [0, 1), got {appearance_momentum}")
        if min_birth_area < 0:
            raise ConfigError(f"Tracker: min_birth_area must be >= 0, got {min_birth_area}")
        if not 0.0 <= low_score <= high_score <= 1.0:
            raise ConfigError(f"Tracker: need 0 <= low_score <= high_score <= 1, got {low_score}, {high_score}")
        for name, v in (("match_iou", match_iou), ("match_iou_low", match_iou_low), ("mask_weight", mask_weight)):
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"Tracker: {name} must be in [0, 1], got {v}")
        if mask_stride < 1:
            raise ConfigError(f"Tracker: mask_stride must be >= 1, got {mask_stride}")
        if confirm_hits < 1:
            raise ConfigError(f"Tracker: confirm_hits must be >= 1, got {confirm_hits}")
        if max_lost_frames < 0:
            raise ConfigError(f"Tracker: max_lost_frames must be >= 0, got {max_lost_frames}")
        if max_lost_seconds is not None and max_lost_seconds < 0:
            raise ConfigError(f"Tracker: max_lost_seconds must be >= 0 or None, got {max_lost_seconds}")
        if new_track_score is not None and new_track_score < high_score:
            raise ConfigError(f"Tracker: new_track_score ({new_track_score}) must be >= high_score ({high_score})")
        if clock not in _TIME_FIELDS:
            raise ConfigError(f"Tracker: clock must be one of {sorted(_TIME_FIELDS)}, got {clock!r}")
        self.high_score = float(high_score)
        self.low_score = float(low_score)
        self.new_track_score = float(high_score if new_track_score is None else new_track_score)
        self.match_iou = float(match_iou)
        self.match_iou_low = float(match_iou_low)
        self.confirm_hits = int(confirm_hits)
        self.confirm_first_frame = bool(confirm_first_frame)
        self.max_lost_frames = int(max_lost_frames)
        self.max_lost_seconds = None if max_lost_seconds is None else float(max_lost_seconds)
        self.use_mask_iou = bool(use_mask_iou)
        self.mask_weight = float(mask_weight)
        self.mask_stride = int(mask_stride)
        self.buffer = float(buffer)
        self.recover_distance = float(recover_distance)
        self.partial_ratio = float(partial_ratio)
        self.distance_weight = float(distance_weight)
        self.min_birth_area = int(min_birth_area)
        self.exit_fraction = float(exit_fraction)
        self.appearance_weight = float(appearance_weight)
        self.appearance_gate = float(appearance_gate)
        self.appearance_bins = int(appearance_bins)
        self.appearance_momentum = float(appearance_momentum)
        self.appearance_context = float(appearance_context)
        self.appearance_context_grow = float(appearance_context_grow)
        self.recover_appearance = float(recover_appearance)
        self.recover_appearance_weight = float(recover_appearance_weight)
        self.recover_margin = float(recover_margin)
        self.link_distance = float(link_distance)
        self.link_appearance = float(link_appearance)
        self.lost_penalty = float(lost_penalty)
        self.embedding_weight = float(embedding_weight)
        self.match_cost = float(match_cost)
        self.block_birth_distance = float(block_birth_distance)
        self.block_birth_lost = int(block_birth_lost)
        self.lost_buffer = float(lost_buffer)
        self.max_buffer = float(max_buffer)
        self.report_tentative = bool(report_tentative)
        self.report_lost = bool(report_lost)
        self.clock = clock
        self._time_field = _TIME_FIELDS[clock]
        self.kalman_params = kalman_params or kalman.KalmanParams()
        self._next_id = 1
        self._lut = np.zeros(65536, np.int32)  # scratch: uint16 instance index -> track row + 1
        self._grid: np.ndarray | None = None  # scratch: the instance map's sample grid
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all tracks (e.g. at a scene cut or replay restart). Ids continue from the counter."""
        self._ids = np.zeros(0, np.int64)
        self._cls = np.zeros(0, np.int64)
        self._state = np.zeros(0, np.int64)
        self._hits = np.zeros(0, np.int64)
        self._age = np.zeros(0, np.int64)
        self._lost = np.zeros(0, np.int64)  # frames since last match
        self._t_hit = np.zeros(0, np.int64)  # capture time of last match, ns
        self._score = np.zeros(0, np.float64)
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 4, 3))  # per-coordinate covariance blocks (kalman.py)
        self._mask_ref = np.zeros((0, 2))  # (cx, cy) of the box when the stored mask was seen
        self._mask_seen = np.zeros(0, bool)  # whether a track's mask is stored
        self._app = np.zeros((0, self.appearance_bins**3), np.float32)  # colour embeddings (appearance.py)
        self._app_ok = np.zeros(0, bool)  # whether a track has one
        self._emb = np.zeros((0, 0), np.float32)  # learned re-id embeddings (update(embeddings=...))
        self._emb_ok = np.zeros(0, bool)
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
        return int(self._ids.size)

    def _keep(self, sel: np.ndarray) -> None:
        for name in ("_ids", "_cls", "_state", "_hits", "_age", "_lost", "_t_hit", "_score", "_mean", "_cov",
                     "_mask_ref", "_mask_seen", "_app", "_app_ok", "_emb", "_emb_ok"):
            setattr(self, name, getattr(self, name)[sel])

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
            The reported tracks (see the module docstring), each with ``instance_index`` of the
            instance it was matched to this frame (0 when coasting).
        """
        t = int(getattr(meta, self._time_field))
        first_frame = self._t_last is None
        if self._t_last is not None and t < self._t_last:
            raise DataError(
                f"Tracker: {self._time_field} went backwards ({t} < {self._t_last}); call reset() when a "
                "stream restarts"
            )
        if instance_map is not None:
            frame_wh: tuple[int, int] | None = (instance_map.shape[1], instance_map.shape[0])
        elif meta.width > 0 and meta.height > 0:
            frame_wh = (meta.width, meta.height)
        else:
            frame_wh = None
        n = self._ids.size
        lost_before = self._state == _LOST
        if n and self._t_last is not None:
            dt = (t - self._t_last) * 1e-9
            mean = self._mean
            if lost_before.any():  # a coasting box keeps its size (ByteTrack does the same)
                mean = mean.copy()
                mean[lost_before, 6:8] = 0.0
            self._mean, self._cov = kalman.predict(mean, self._cov, dt, self.kalman_params)
        self._t_last = t
        self._age += 1

        m = len(instances)
        if embeddings is not None:
            embeddings = np.asarray(embeddings, np.float32)
            if embeddings.ndim != 2 or embeddings.shape[0] != m:
                raise DataError(f"Tracker: embeddings must be [{m}, D] for {m} instances, got {embeddings.shape}")
            if self._emb.shape[1] != embeddings.shape[1]:
                if self._emb_ok.any():
                    raise DataError(
                        f"Tracker: embeddings changed size from {self._emb.shape[1]} to {embeddings.shape[1]}; "
                        "call reset() when the re-id model changes"
                    )
                self._emb = np.zeros((n, embeddings.shape[1]), np.float32)
        # one pass over the detections (integers up to 2**53 survive the float64 round trip)
        rec = np.array([(*d.box, d.score, d.class_id, d.index, d.area) for d in instances], np.float64)
        rec = rec.reshape(m, 8)
        det_box = rec[:, 0:4]
        det_score = rec[:, 4]
        det_cls, det_idx, det_area = rec[:, 5:8].T.astype(np.int64, order="C")  # contiguous rows

        pred_box = kalman.measurements_to_boxes(self._mean) if n else np.zeros((0, 4))
        if self.buffer > 0 or (self.lost_buffer > 0 and self._lost.any()):
            buf = np.minimum(self.buffer + self.lost_buffer * self._lost, self.max_buffer)
            sim = buffered_box_iou(pred_box, det_box, buf)
        else:
            sim = box_iou(pred_box, det_box)
        use_masks = self.use_mask_iou and instance_map is not None
        if use_masks and n and m and self._mask_pix.shape[0]:
            sim = self._blend_mask_iou(sim, instance_map, det_idx, det_area)
        other_class = self._cls[:, None] != det_cls[None, :]
        sim[other_class] = 0.0
        use_app = image is not None and instance_map is not None and m > 0
        use_app = use_app and (self.appearance_weight > 0 or self.appearance_gate > 0)
        if use_app and image.shape[:2] != instance_map.shape:
            raise DataError(f"Tracker: image {image.shape[:2]} and instance map {instance_map.shape} differ in size")
        grid = grid_nz = None
        if use_masks or use_app:  # one strided copy and one scan of the map per frame
            grid = self._sample_grid(instance_map)
            grid_nz = (grid.ravel() != 0).nonzero()[0]  # a boolean scan: much faster than on integers
        if use_app:
            weights = None
            if self.appearance_context > 0:
                weights = appearance.context_weights(
                    grid,
                    image,
                    det_idx,
                    det_box,
                    stride=self.mask_stride,
                    bins=self.appearance_bins,
                    floor=self.appearance_context,
                    grow=self.appearance_context_grow,
                )
            det_emb, det_ok = appearance.colour_embeddings(
                grid,
                image,
                det_idx,
                stride=self.mask_stride,
                bins=self.appearance_bins,
                nonzero=grid_nz,
                cell_weights=weights,
            )
        else:
            det_emb, det_ok = np.zeros((m, self._app.shape[1]), np.float32), np.zeros(m, bool)
        # appearance of the pairs where both sides have it (colours, learned embeddings or both): a
        # veto and a cost term (none when no pair has it on both sides)
        app_cost = None
        known_col = det_ok.any() and self._app_ok.any()
        known_emb = embeddings is not None and m > 0 and self._emb_ok.any()
        if known_col or known_emb:
            if known_col:
                app_sim = appearance.similarity(self._app, det_emb)
                known = self._app_ok[:, None] & det_ok[None, :]
            if known_emb:
                emb_sim = self._emb @ embeddings.T
                emb_known = np.broadcast_to(self._emb_ok[:, None], (n, m))
                if known_col:  # the blend where both are known, else whichever is
                    w = np.where(known, np.where(emb_known, self.embedding_weight, 0.0), 1.0)
                    app_sim = (1.0 - w) * app_sim + w * emb_sim
                    known = known | emb_known
                else:
                    app_sim, known = emb_sim, emb_known
            veto = known & (app_sim < self.appearance_gate)
            # the recovery stage also vetoes pairs below recover_appearance
            recover_veto = known & (app_sim < max(self.appearance_gate, self.recover_appearance))
            app_cost = np.where(known, 1.0 - app_sim, 0.5)
        else:
            veto = recover_veto = np.zeros((n, m), bool)
        # lost tracks predicted (mostly) out of the frame have left: they take no detection (an object
        # entering at the same border would otherwise inherit the id) and are removed below
        gone = np.zeros(n, bool)
        if frame_wh is not None and n and self.exit_fraction > 0:
            size = np.maximum(pred_box[:, 2:] - pred_box[:, :2], 1e-9)
            lim = np.array(frame_wh, np.float64)
            inside_wh = np.minimum(pred_box[:, 2:], lim) - np.maximum(pred_box[:, :2], 0.0)
            np.maximum(inside_wh, 0.0, out=inside_wh)
            inside = inside_wh[:, 0] * inside_wh[:, 1]
            gone = lost_before & (inside < self.exit_fraction * (size[:, 0] * size[:, 1]))
            sim[gone] = 0.0
        cost = 1.0 - sim
        if self.appearance_weight > 0 and app_cost is not None:
            cost += self.appearance_weight * app_cost
        # squared centre distance in box sizes, for the cost ranking and the recovery stage
        cdist2 = normalized_center_distance_sq(pred_box, det_box) if n and m else np.zeros((n, m))
        if self.distance_weight > 0 and n and m:
            cost += self.distance_weight * np.minimum(cdist2, _MAX_DISTANCE_SQ)
        if self.lost_penalty > 0 and n and m:
            cost += self.lost_penalty * lost_before[:, None]
        high = det_score >= self.high_score
        low = (det_score >= self.low_score) & ~high
        track_of_det = np.full(m, -1, np.int64)
        det_of_track = np.full(n, -1, np.int64)
        allowed = ~veto

        def assign(
            rows: np.ndarray,
            cols: np.ndarray,
            sub_cost: np.ndarray,
            max_cost: float = np.inf,
            saturate: float | None = None,
        ) -> tuple[np.ndarray, np.ndarray]:
            """Pairs (track rows, detection columns) of the assignment of ``rows`` to ``cols`` by their costs."""
            mr, mc = linear_assignment_pairs(sub_cost, max_cost, saturate=saturate)
            return rows[mr], cols[mc]

        def record(r: np.ndarray, c: np.ndarray) -> None:
            """Record the matches of tracks ``r`` to detections ``c``."""
            det_of_track[r] = c
            track_of_det[c] = r

        def sub(pair_cost: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            return pair_cost.take(rows, 0).take(cols, 1)

        # costs of the admissible pairs (inf elsewhere): admissibility is decided by the similarity
        # alone, the distance term only ranks
        high_cost = np.where((sim >= self.match_iou) & allowed, cost, np.inf)  # stages 1 and 3
        tentative = self._state == _TENT
        # 1) confirmed and lost tracks vs high-score detections
        rows, cols = (~tentative).nonzero()[0], high.nonzero()[0]
        if rows.size and cols.size:
            record(*assign(rows, cols, sub(high_cost, rows, cols), saturate=self.match_cost))
        # 2) still unmatched confirmed (not lost) tracks vs low-score detections
        rows = ((self._state == _CONF) & (det_of_track < 0)).nonzero()[0]
        cols = low.nonzero()[0]
        if rows.size and cols.size:
            low_cost = np.where((sim >= self.match_iou_low) & allowed, cost, np.inf)
            record(*assign(rows, cols, sub(low_cost, rows, cols), saturate=self.match_cost))
        # 3) tentative tracks vs remaining high-score detections
        rows, cols = tentative.nonzero()[0], (high & (track_of_det < 0)).nonzero()[0]
        if rows.size and cols.size:
            record(*assign(rows, cols, sub(high_cost, rows, cols), saturate=self.match_cost))

        # 4) recovery: all unmatched tracks vs unmatched high-score detections, by
        #    size-normalised centre distance (survives the shape change of partial occlusion) plus
        #    colour disagreement
        if self.recover_distance > 0:
            rows = ((det_of_track < 0) & ~gone).nonzero()[0]
            cols = (high & (track_of_det < 0)).nonzero()[0]
            if rows.size and cols.size:
                cost4 = np.sqrt(sub(cdist2, rows, cols))
                reach = self.recover_distance
                w = self.recover_appearance_weight
                if w > 0 and app_cost is not None:
                    cost4 = np.where(cost4 <= reach, cost4 + w * sub(app_cost, rows, cols), np.inf)
                    reach += w  # the most a pair within recover_distance can cost now
                cost4[sub(other_class | recover_veto, rows, cols)] = np.inf
                r, c = assign(rows, cols, cost4, reach)
                if self.recover_margin > 0 and app_cost is not None:
                    sure = self._unambiguous(r, c, det_of_track < 0, app_cost, cdist2, other_class | gone[:, None])
                    r, c = r[sure], c[sure]
                record(r, c)

        # the state arrays are private to this tracker (nothing else holds them): matched rows are
        # updated in place
        matched = det_of_track >= 0
        mt = matched.nonzero()[0]
        if mt.size:
            d = det_of_track[mt]
            # take(axis=0): several times faster than fancy indexing for a few dozen rows
            mean_mt, box_d = self._mean.take(mt, 0), det_box.take(d, 0)
            held = np.zeros((mt.size, 2), bool)
            if frame_wh is not None:
                z = kalman.amodal_measurements(
                    box_d,
                    mean_mt[:, 2:4],
                    frame_wh,
                    predicted_boxes=pred_box.take(mt, 0),
                    partial_ratio=self.partial_ratio,
                    held=held,
                )
            else:
                z = kalman.boxes_to_measurements(box_d)
            self._mean[mt], self._cov[mt] = kalman.update(mean_mt, self._cov.take(mt, 0), z, self.kalman_params)
            if held.any():
                # a size completed from the prediction (border cut, partial view) says nothing about
                # how the size changes: without this, an object entering the view keeps the growth
                # rate of its visible part, its box inflates past its size, and every later full
                # view is then taken as a partial one (seeds 0-39 of the generated scenes: 72 -> 62
                # ID switches)
                vel = self._mean[mt, 6:8]
                vel[held] = 0.0
                self._mean[mt, 6:8] = vel
            self._hits[mt] += 1
            self._score[mt] = det_score[d]
            seen = det_ok[d]
            if seen.any():
                self._blend_into(self._app, self._app_ok, mt[seen], det_emb.take(d[seen], 0))
            if embeddings is not None:
                self._blend_into(self._emb, self._emb_ok, mt, embeddings.take(d, 0))
        self._t_hit[mt] = t
        self._lost += 1
        self._lost[mt] = 0
        # matched: confirmed (tentative until confirm_hits); unmatched: confirmed -> lost
        state = self._state
        still_tentative = (state == _TENT) & (self._hits < self.confirm_hits)
        state = np.where(matched, np.where(still_tentative, _TENT, _CONF), np.where(state == _CONF, _LOST, state))
        self._state = state
        linked = np.zeros(n, bool)
        if self.link_distance > 0 and app_cost is not None and self.confirm_hits > 1:
            confirmed_now = (tentative & (state == _CONF)).nonzero()[0]
            if confirmed_now.size:
                linked = self._link(confirmed_now, det_of_track, app_cost, cdist2, other_class | gone[:, None])

        # an unmatched detection close to where a recently lost track of its class is predicted is
        # most likely a view of that track's object that failed the match (a sliver, a partial view
        # whose colours differ): it starts no track, which would take over the object's id
        lost = state == _LOST
        blocked = np.zeros(m, bool)
        if self.block_birth_distance > 0 and n and m:
            near_rows = (lost & ~gone & (self._lost <= self.block_birth_lost)).nonzero()[0]
            free_cols = ((track_of_det < 0) & high).nonzero()[0]
            if near_rows.size and free_cols.size:
                near = sub(cdist2, near_rows, free_cols) <= self.block_birth_distance**2
                near &= ~sub(other_class | veto, near_rows, free_cols)
                blocked[free_cols[near.any(axis=0)]] = True
        # removals
        remove = ~matched & (state == _TENT)
        remove |= lost & (self._lost > self.max_lost_frames)
        remove |= linked
        if self.max_lost_seconds is not None:
            remove |= lost & ((t - self._t_hit) * 1e-9 > self.max_lost_seconds)
        if frame_wh is not None:
            w_img, h_img = frame_wh
            b = pred_box
            outside = (b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= w_img) | (b[:, 1] >= h_img)
            remove |= lost & (outside | gone)
        if remove.any():
            keep = ~remove
            matched_det = det_of_track[keep]
            self._keep(keep)
        else:
            matched_det = det_of_track

        # births: unmatched high-score detections
        born = (
            (track_of_det < 0)
            & (det_score >= self.new_track_score)
            & high
            & (det_area >= self.min_birth_area)
            & ~blocked
        ).nonzero()[0]
        if born.size:
            k = born.size
            mean0, cov0 = kalman.initiate(kalman.boxes_to_measurements(det_box.take(born, 0)), self.kalman_params)
            new_ids = np.arange(self._next_id, self._next_id + k, dtype=np.int64)
            self._next_id += k
            init_state = _CONF if self.confirm_hits <= 1 or (first_frame and self.confirm_first_frame) else _TENT
            self._ids = np.concatenate([self._ids, new_ids])
            self._cls = np.concatenate([self._cls, det_cls[born]])
            self._state = np.concatenate([self._state, np.full(k, init_state, np.int64)])
            self._hits = np.concatenate([self._hits, np.ones(k, np.int64)])
            self._age = np.concatenate([self._age, np.ones(k, np.int64)])
            self._lost = np.concatenate([self._lost, np.zeros(k, np.int64)])
            self._t_hit = np.concatenate([self._t_hit, np.full(k, t, np.int64)])
            self._score = np.concatenate([self._score, det_score[born]])
            self._mean = np.concatenate([self._mean, mean0])
            self._cov = np.concatenate([self._cov, cov0])
            self._mask_ref = np.concatenate([self._mask_ref, np.zeros((k, 2))])
            self._mask_seen = np.concatenate([self._mask_seen, np.zeros(k, bool)])
            self._app = np.concatenate([self._app, det_emb.take(born, 0)])
            self._app_ok = np.concatenate([self._app_ok, det_ok[born]])
            if embeddings is not None:
                self._emb = np.concatenate([self._emb, embeddings.take(born, 0)])
            else:
                self._emb = np.concatenate([self._emb, np.zeros((k, self._emb.shape[1]), np.float32)])
            self._emb_ok = np.concatenate([self._emb_ok, np.full(k, embeddings is not None)])
            matched_det = np.concatenate([matched_det, born])

        if use_masks:
            self._remember_masks(grid, grid_nz, matched_det, det_idx)
        else:
            self._clear_masks()
            self._mask_ref = np.zeros((self._ids.size, 2))
            self._mask_seen = np.zeros(self._ids.size, bool)

        return self._report(matched_det, det_box, det_idx)

    # ---------------------------------------------------------------- helpers
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
        ``recover_distance`` box sizes of it, whatever its colours. The pair stands out when every
        competitor's appearance cost exceeds its own by at least ``recover_margin``.
        """
        k = rows.size
        cost_k = app_cost.take(cols, 1)  # [N, K]
        rival = (cdist2.take(cols, 1) <= self.recover_distance**2) & ~excluded.take(cols, 1)
        rival &= candidates[:, None]
        rival[rows, np.arange(k)] = False
        best_rival = np.where(rival, cost_k, np.inf).min(axis=0, initial=np.inf)
        return best_rival - cost_k[rows, np.arange(k)] >= self.recover_margin

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
        n = det_of_track.size
        lost = (self._state == _LOST).nonzero()[0]
        linked = np.zeros(n, bool)
        if lost.size == 0:
            return linked
        d = det_of_track[confirmed_now]
        dist = np.sqrt(cdist2[np.ix_(lost, d)])
        acost = app_cost[np.ix_(lost, d)]
        ok = (dist <= self.link_distance) & (acost <= 1.0 - self.link_appearance) & ~excluded[np.ix_(lost, d)]
        if not ok.any():
            return linked
        pair_cost = np.where(ok, dist + self.recover_appearance_weight * acost, np.inf)
        mq, mr = linear_assignment_pairs(pair_cost, np.inf)
        q, r = lost[mq], confirmed_now[mr]
        self._ids[r] = self._ids[q]
        self._age[r] = self._age[q]
        linked[q] = True
        return linked

    def _blend_into(self, store: np.ndarray, ok: np.ndarray, rows: np.ndarray, new: np.ndarray) -> None:
        """Blend ``new`` embeddings into rows ``rows`` of a track store (colours or re-id, in place):
        a running average with ``appearance_momentum``, or ``new`` itself where a row had none."""
        keep_old = np.where(ok[rows], self.appearance_momentum, 0.0)
        store[rows] = appearance.blend_embeddings(store.take(rows, 0), new, keep_old)
        ok[rows] = True

    def _sample_grid(self, instance_map: np.ndarray) -> np.ndarray:
        """Every ``mask_stride``-th row and column of the map, copied into a reused contiguous buffer.

        One strided pass over the full-resolution map per frame; the masks are remembered from this
        small grid (``mask_stride**2`` times fewer pixels).
        """
        st = self.mask_stride
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
        grid cells instead costs ID switches: 22 against 18 on seeds 5-9 of the generated scenes).
        """
        has_mask = self._mask_seen
        shifts = self._mean[:, 0:2] - self._mask_ref
        miou = shifted_mask_iou(
            self._mask_pix,
            self._mask_row,
            shifts,
            instance_map,
            det_idx,
            det_area,
            pixel_weight=float(self.mask_stride**2),
        )
        w = self.mask_weight
        blend = miou
        blend *= w
        blend += (1.0 - w) * sim
        return np.where(has_mask[:, None], blend, sim)

    def _remember_masks(
        self, grid: np.ndarray, nz: np.ndarray, matched_det: np.ndarray, det_idx: np.ndarray
    ) -> None:
        """Keep this frame's mask samples (from the sample grid) of every matched/new track, by track row."""
        has = matched_det >= 0
        # posterior centre: next frame's shift is the predicted motion
        self._mask_ref = np.where(has[:, None], self._mean[:, 0:2], 0.0)
        self._mask_seen = has
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
        pix[:, 0] = gy * self.mask_stride
        pix[:, 1] = (nz - gy * width) * self.mask_stride
        self._mask_pix = pix
        row = row1.take(keep).astype(np.intp)
        row -= 1
        self._mask_row = row

    def _report(self, matched_det: np.ndarray, det_box: np.ndarray, det_idx: np.ndarray) -> list[Track]:
        state = self._state
        has = matched_det >= 0
        rep = has & (state == _CONF)
        if self.report_tentative:
            rep |= has & (state == _TENT)
        if self.report_lost:
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
            boxes[~seen] = kalman.measurements_to_boxes(self._mean[rows[~seen]])
            inst = np.where(seen, det_idx[at] if det_idx.size else 0, 0)
        # plain Python scalars in one conversion per column (tuples straight from the columns);
        # builds the output objects only
        return [
            Track(
                track_id=tid, instance_index=ii, class_id=c, score=sc, box=bx, velocity=v,
                age=ag, hits=hi, state=_STATES[st], extra={} if sn else {"lost_frames": lf},
            )
            for tid, ii, c, sc, bx, v, ag, hi, st, sn, lf in zip(
                self._ids[rows].tolist(),
                inst.tolist(),
                self._cls[rows].tolist(),
                self._score[rows].tolist(),
                zip(*boxes.T.tolist()),
                zip(*self._mean.take(rows, 0)[:, 4:6].T.tolist()),
                self._age[rows].tolist(),
                self._hits[rows].tolist(),
                state[rows].tolist(),
                seen.tolist(),
                self._lost[rows].tolist(),
            )
        ]


def relabel_instance_map(instance_map: np.ndarray, tracks: Sequence[Track]) -> np.ndarray:
    """Rewrite instance indices to track ids, for publishing (one LUT gather, no per-pixel Python).

    Instances without a reported track become 0. Ids above 65535 do not fit ``uint16``: the map
    carries ``(track_id - 1) % 65535 + 1`` (the message header carries the full id).

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
