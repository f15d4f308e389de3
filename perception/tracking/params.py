"""Every setting of the :class:`~perception.tracking.tracker.Tracker`, in one frozen, self-validating object.

:class:`TrackerParams` is the single home of the tracker's defaults: the tracker, the pipeline's
``tracking:`` configuration section (:class:`perception.config.TrackingConfig` is built from it) and
``perception eval-tracking --tracker KEY=VALUE`` all read them from here. Each field says what it
trades off; the measurements behind the defaults are in ``docs/tracking.md``.

A value out of range, of the wrong type, or an unknown name raises
:class:`~perception.errors.ConfigError` naming the field and what it accepts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from perception.errors import ConfigError
from perception.tracking.kalman import KalmanParams

__all__ = ["TrackerParams"]

_UNIT = {"ge": 0, "le": 1}  # the [0, 1] range of scores, IoUs, similarities and weights of a blend


class TrackerParams(BaseModel):
    """The tracker's settings (each a trade-off; see the field docstrings). Frozen; validated on creation.

    ``TrackerParams(high_score=0.6)`` overrides one setting; :meth:`replace` makes a validated copy.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    # ------------------------------------------------------------------ scores and stages
    high_score: float = Field(default=0.5, **_UNIT)
    """Detections at or above it are matched first and may start tracks. Higher keeps false positives
    from starting tracks, but weak true detections then only extend tracks."""
    low_score: float = Field(default=0.1, **_UNIT)
    """Detections between it and ``high_score`` only extend confirmed tracks (ByteTrack's second
    stage); below it they are ignored. Lower keeps tracks alive through occlusion, at the risk of
    extending a track onto clutter. Must not exceed ``high_score``."""
    new_track_score: float | None = None
    """Minimum score to start a track; None = ``high_score`` (it cannot be lower: only high-score
    detections start tracks). Higher means fewer tracks from false positives, later new objects."""
    match_iou: float = Field(default=0.3, **_UNIT)
    """Minimum similarity (IoU, blended with mask IoU) of a pair in the high-score stages. Lower
    follows fast motion and jittery boxes, higher avoids swapping neighbours."""
    match_iou_low: float = Field(default=0.5, **_UNIT)
    """The same for the low-score stage; stricter since those detections are less reliable."""
    match_cost: float = Field(default=1.0, gt=0)
    """In the IoU stages a pair costing more counts as costing this: a fallback taken only when it
    displaces no cheaper pair. Lower prefers fewer, surer matches; ``inf`` = most matches first."""
    distance_weight: float = Field(default=0.3, ge=0)
    """Weight of the squared size-normalised centre distance in a pair's cost (it only ranks pairs
    that reach ``match_iou``). Larger trusts the motion model over box overlap; 0 = IoU only."""
    lost_penalty: float = Field(default=0.2, ge=0)
    """Added to the cost of pairs with a lost track in the IoU stages, so a track matched last frame
    keeps its detection against a coasting one. Larger makes coasting tracks harder to re-find."""

    # ------------------------------------------------------------------ lifecycle
    confirm_hits: int = Field(default=2, ge=1)
    """Consecutive matches before a track is confirmed (and reported). More means fewer spurious
    tracks but later first reports."""
    confirm_first_frame: bool = True
    """Tracks born on the first frame (after construction or ``reset``) are confirmed at once, so
    objects in view at start are reported at once, at the risk of a false positive of that frame."""
    max_lost_frames: int = Field(default=30, ge=0)
    """Frames a confirmed track coasts unmatched before removal. Longer bridges longer occlusions but
    lets a new object in the same place inherit the id."""
    max_lost_seconds: float | None = Field(default=None, ge=0)
    """The same limit in seconds of capture time (robust to frame drops); None = frames only."""
    exit_fraction: float = Field(default=0.2, **_UNIT)
    """A lost track whose predicted box has less than this share of its area in the frame has left:
    it is removed. Higher gives up on objects still partly in view; 0 = only once wholly outside."""
    min_birth_area: int = Field(default=50, ge=0)
    """Detections with fewer pixels do not start tracks (slivers get a tiny size and unknown velocity
    that steal neighbours' detections). Larger delays small, far objects; 0 = off."""
    block_birth_distance: float = Field(default=0.7, ge=0)
    """An unmatched detection within this many box sizes of a recently lost track of its class (whose
    colours it does not veto) starts no track: it is likely that object. 0 = off."""
    block_birth_lost: int = Field(default=6, ge=0)
    """How recently (frames lost, this one included) a lost track must have been matched to block
    births near it. Larger blocks longer, so a real newcomer there is found later."""
    report_tentative: bool = False
    """Also report tentative tracks: new objects appear sooner, but so does every false positive."""
    report_lost: bool = False
    """Also report coasting (lost) tracks, with their predicted box and ``instance_index`` 0."""

    # ------------------------------------------------------------------ masks and boxes
    use_mask_iou: bool = True
    """With an instance map, blend motion-compensated mask IoU into the similarity: it separates
    overlapping objects whose boxes overlap heavily."""
    mask_weight: float = Field(default=0.5, **_UNIT)
    """Weight of mask IoU in the blend ``(1 - w) * box IoU + w * mask IoU``."""
    mask_stride: int = Field(default=6, ge=1)
    """Masks (and colours) are sampled on every ``mask_stride``-th row and column: ``stride**2`` times
    less work; the estimate degrades for objects only a few strides wide."""
    buffer: float = Field(default=0.0, ge=0)
    """Boxes grow by this many box sizes per side before the IoU (C-BIoU) so fast objects still
    overlap their prediction; larger blurs neighbours together. 0 = plain IoU."""
    lost_buffer: float = Field(default=0.0, ge=0)
    """Extra growth per frame a track has been lost (coasting predictions drift)."""
    max_buffer: float = Field(default=1.0, ge=0)
    """Cap of ``buffer + lost_buffer * frames lost``."""
    partial_ratio: float = Field(default=0.6, ge=0, lt=1)
    """A matched box narrower (or lower) than this share of the prediction, off the frame border, is
    a partial view: that axis keeps the predicted size, anchored at the visible side. Higher takes
    milder shrinking as occlusion (and mis-anchors more); 0 = off."""

    # ------------------------------------------------------------------ recovery and linking
    recover_distance: float = Field(default=2.0, ge=0)
    """A last stage pairs still-unmatched tracks with high-score detections of their class within this
    many box sizes of the prediction (where IoU fails). Larger bridges worse predictions but may hand
    an id to a neighbour; 0 = off."""
    recover_appearance: float = Field(default=0.45, **_UNIT)
    """Recovery takes only pairs whose appearance similarity is at least this (when both sides have
    one). Higher vetoes more partial views of the object itself; 0 = only ``appearance_gate``."""
    recover_appearance_weight: float = Field(default=4.0, ge=0)
    """A recovery pair costs its centre distance in box sizes plus this times ``1 - similarity``, so
    the detection that looks like the track beats a merely nearer one. 0 = distance alone."""
    recover_margin: float = Field(default=0.2, ge=0)
    """A recovery pair is dropped unless every other unmatched track near the detection has an
    appearance cost higher by at least this: a miss is cheaper than a guess. 0 = off."""
    link_distance: float = Field(default=2.0, ge=0)
    """A track confirmed within this many box sizes of a lost track of its class that looks like it
    (``link_appearance``) takes the lost track's id. Needs appearance and ``confirm_hits`` > 1; 0 = off."""
    link_appearance: float = Field(default=0.6, **_UNIT)
    """Minimum appearance similarity for such a link. Lower links more, and hands more ids to
    neighbours."""

    # ------------------------------------------------------------------ appearance
    appearance_weight: float = Field(default=0.5, ge=0)
    """With an image, a pair's cost gains this times ``1 - similarity`` of the colours (and re-id
    embeddings). Larger lets appearance overrule overlap; 0 = appearance only vetoes."""
    appearance_gate: float = Field(default=0.25, **_UNIT)
    """Pairs whose appearance similarity is below this never match. Higher vetoes more wrong pairs
    but also right ones seen partly or under changing light; 0 = no veto."""
    appearance_bins: int = Field(default=6, ge=2, le=16)
    """Colour levels per channel of the histograms (``bins**3`` cells). More separates similar
    colours but splits one colour across cells under noise."""
    appearance_momentum: float = Field(default=0.9, ge=0, lt=1)
    """Weight of a track's past appearance when a match updates it (0.9: about the last 10 matches),
    so one partial view changes it little. Lower adapts faster to changing looks."""
    appearance_context: float = Field(default=0.0, **_UNIT)
    """Colours filling more than this share of a detection's surroundings (road, a neighbour) count
    for less in its histogram. Lower plays down more; 0 = off (plain histograms)."""
    appearance_context_grow: float = Field(default=0.5, ge=0)
    """The surroundings of ``appearance_context``: the box grown by this many box sizes per side."""
    embedding_weight: float = Field(default=0.5, **_UNIT)
    """Share of learned re-id embeddings (``update(embeddings=...)``) in the appearance similarity
    where both sides have colours and embeddings; 1 = embeddings alone."""

    # ------------------------------------------------------------------ time and motion
    clock: Literal["pts", "mono", "wall"] = "pts"
    """Which timestamp of the frame gives the time step: presentation time (the recorded rate of a
    replay), host capture time, or wall-clock time."""
    kalman_params: KalmanParams = Field(default_factory=KalmanParams)
    """The Kalman filter's noise levels (:class:`~perception.tracking.kalman.KalmanParams`)."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(f"{type(self).__name__}: {describe_errors(exc, type(self))}") from exc

    @model_validator(mode="after")
    def _scores_in_order(self) -> TrackerParams:
        if self.low_score > self.high_score:
            raise ValueError(f"low_score ({self.low_score}) must be <= high_score ({self.high_score})")
        if self.new_track_score is not None and not self.new_track_score >= self.high_score:
            raise ValueError(
                f"new_track_score ({self.new_track_score}) must be >= high_score ({self.high_score}) or None"
            )
        return self

    @property
    def birth_score(self) -> float:
        """The score a detection needs to start a track (``new_track_score``, else ``high_score``)."""
        return self.high_score if self.new_track_score is None else self.new_track_score

    def replace(self, **changes: Any) -> TrackerParams:
        """A validated :class:`TrackerParams` (never a subclass) with ``changes`` applied."""
        values = {name: getattr(self, name) for name in TrackerParams.model_fields}
        values.update(changes)
        return TrackerParams(**values)


def allowed_range(model: type[BaseModel], name: str) -> str:
    """What field ``name`` of ``model`` accepts, in words (``"in [0, 1)"``, ``">= 0"``), from its bounds."""
    low = high = None
    for c in model.model_fields[name].metadata:
        if isinstance(c, Ge):
            low = f"[{c.ge:g}"
        elif isinstance(c, Gt):
            low = f"({c.gt:g}"
        elif isinstance(c, Le):
            high = f"{c.le:g}]"
        elif isinstance(c, Lt):
            high = f"{c.lt:g})"
    if low and high:
        return f"in {low}, {high}"
    if low:
        return (">= " if low[0] == "[" else "> ") + low[1:]
    if high:
        return ("<= " if high[-1] == "]" else "< ") + high[:-1]
    return "valid"


def _nested_fields(model: type[BaseModel], name: str) -> list[str]:
    """The field names of the dataclass or model that field ``name`` of ``model`` holds."""
    kind = model.model_fields[name].annotation if name in model.model_fields else None
    if dataclasses.is_dataclass(kind):
        return [f.name for f in dataclasses.fields(kind)]
    return list(getattr(kind, "model_fields", ()))


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}


def describe_errors(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per error of ``exc`` (joined by "; ") naming the field and what it accepts."""
    msgs = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        name = ".".join(loc)
        value = err.get("input")
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            known = model.model_fields if len(loc) == 1 else _nested_fields(model, loc[0])
            msgs.append(f"unknown setting '{name}'; known: {', '.join(known)}")
        elif err["type"] in _BOUND_ERRORS and len(loc) == 1 and loc[0] in model.model_fields:
            msgs.append(f"{name} must be {allowed_range(model, loc[0])}, got {value!r}")
        elif err["type"] == "value_error":  # the model's own checks name their fields
            msgs.append(str(err["ctx"]["error"]) if "ctx" in err else err["msg"])
        elif err["type"] == "literal_error":
            msgs.append(f"{name} {err['msg'].replace('Input should be', 'must be one of')}, got {value!r}")
        else:
            msgs.append(f"{name} has the wrong type ({err['msg']}), got {value!r}")
    return "; ".join(msgs)
