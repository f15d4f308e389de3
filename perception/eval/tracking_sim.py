"""Tracking on generated scenes: track them through a simulated detector and score the ids.

For each seed: :class:`perception.sim.SceneSequence` renders a street with exact ground truth,
:class:`perception.sim.detector.DetectorSimulator` turns it into imperfect detections (misses, false
positives, jittered masks, score noise), :class:`perception.tracking.Tracker` tracks them, and the
reported tracks are scored with :mod:`perception.eval.tracking`. ``perception eval-tracking``
(:mod:`perception.cli.eval_tracking`) is the command over this module.

Scoring conventions:

* ground truth of a frame = the objects the detector could see at all (visible fraction and visible
  area above the simulator's limits, ``Detections.eligible_ids``); slivers behind occluders are not
  counted as misses of the tracker;
* hypotheses = the reported tracks (by default confirmed tracks matched to a detection this frame);
* ``match="source"`` (default): a track may match the object whose detection it carries this frame
  (the simulator knows which object every detection came from; false positives match nothing).
  This scores the tracker's id decisions alone: the simulated detector's mask jitter cannot turn a
  correct id into a false positive. ``match="iou"``: the usual criterion, mask IoU between the
  object's true mask and the track's (detected) mask >= ``min_iou`` (0.5), distance ``1 - IoU``;
  it also charges the tracker for detections the simulator jittered below that IoU (about 7 % of
  them at the default jitter).
* ``appearance`` sets what the tracker's colour appearance sees: ``image`` (default) the rendered
  frame; ``none`` no image (box, mask and motion cues only); ``oracle`` an image in which every
  detection is painted in one colour of its source object (false positives all black), so the
  colours tell every detection's object apart perfectly, even where its mask spills onto a
  neighbour; ``oracle-pixels`` every pixel in one colour of the object it truly shows (background
  black): perfectly distinct colours, but a detection's mask that spills onto a neighbour or the
  background carries their colours, as it does in a real image. ``none`` and ``oracle`` bound what
  appearance can contribute; where ``image`` lies between them shows how much of the gap today's
  colour histograms close, and ``oracle-pixels`` how much a more discriminative colour or
  appearance descriptor alone could still gain.
* ``reid`` names the re-id model whose learned embeddings of every detection the tracker also gets
  (:mod:`perception.tracking.reid`), computed from the rendered frame whatever ``appearance`` is.
  The command's default is the bundled ``engines/sim_reid.onnx``, trained on seeds 1000-1059 by
  ``tools/train_reid.py``: the generated scenes are what it was made for. Without it the tracker
  has colours alone, as the pipeline tracks real video (and what the ``appearance`` bounds are
  about: the embeddings would otherwise blur them).
* HOTA uses similarity ``1 - distance``: 1 for every allowed pair with ``match="source"`` (so LocA
  is 1 and HOTA is the same at every threshold), the mask IoU (>= ``min_iou``, else 0) with
  ``match="iou"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from perception.eval.tracking import FrameMatch, TrackingCounts
    from perception.tracking import Tracker, TrackerParams

__all__ = [
    "APPEARANCE_INPUTS",
    "SimSettings",
    "build_tracker",
    "evaluate_seed",
    "evaluate_seeds",
    "identity_image",
    "resolve_reid_model",
    "tracker_params",
]

APPEARANCE_INPUTS = ("image", "none", "oracle", "oracle-pixels")
"""What the tracker's colour appearance is given (module docstring, ``SimSettings.appearance``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSettings:
    """What to generate and how to perturb it (mapped from the command line in one place)."""

    frames: int = 300
    objects: int = 8
    width: int = 960
    height: int = 540
    fps: float = 15.0
    miss_rate: float = 0.1
    fp_rate: float = 0.05
    min_iou: float = 0.5
    match: str = "source"
    appearance: str = "image"
    reid: str = ""
    """Path of a re-id model (:class:`~perception.tracking.reid.ReIdEmbedder`) whose embeddings the
    tracker also gets; empty = none."""

    def __post_init__(self) -> None:
        from perception.errors import ConfigError

        if self.appearance not in APPEARANCE_INPUTS:
            raise ConfigError(f"appearance must be one of {APPEARANCE_INPUTS}, got {self.appearance!r}")


def identity_image(instance_map: np.ndarray, gt_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """An image in which every detection has one colour that names its source object.

    Object ``g`` gets the cell centre of colour cell ``1 + (97 g) mod 215`` of a 6-level-per-channel
    grid (distinct for object ids below 215, and the same cell in the tracker's histograms at its
    default ``appearance_bins``); false positives (``gt_ids`` 0) and the background are cell 0
    (near black).

    Args:
        instance_map: ``uint16[H, W]`` detection indices (``Instance.index``, 0 = none).
        gt_ids: ``gt_ids[k]`` the object detection ``k + 1`` came from, 0 for a false positive.

    Returns:
        ``uint8[H, W, 3]``.
    """
    import numpy as np

    gt = np.asarray(gt_ids, np.int64)
    cell = np.zeros(gt.size + 1, np.int64)
    cell[1:] = np.where(gt > 0, 1 + (97 * gt) % 215, 0)
    levels = np.stack([cell // 36, cell // 6 % 6, cell % 6], axis=1)
    colours = (levels * 256 // 6 + 21).astype(np.uint8)  # the middle of each level's range
    return colours[instance_map]


def tracker_params(overrides: Mapping[str, Any]) -> TrackerParams:
    """:class:`~perception.tracking.TrackerParams` with ``overrides`` (settings given on a command
    line with ``--tracker KEY=VALUE``) applied to the defaults.

    Raises:
        ConfigError: an unknown setting (the message lists the known ones) or a value the settings
            refuse (the message names it and its allowed range).
    """
    from perception.errors import ConfigError
    from perception.tracking.params import TrackerParams

    known = list(TrackerParams.model_fields)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(f"--tracker: unknown keyword(s) {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        return TrackerParams(**overrides)
    except ConfigError as exc:
        raise ConfigError(f"--tracker: {exc}") from exc


def build_tracker(overrides: Mapping[str, Any]) -> Tracker:
    """A :class:`~perception.tracking.Tracker` with the settings of :func:`tracker_params`.

    ``eval-tracking`` builds one before generating anything, so that a bad setting fails first;
    ``tools/track_camvid.py`` tracks with the one returned.
    """
    from perception.tracking import Tracker

    return Tracker(tracker_params(overrides))


def resolve_reid_model(value: str) -> str:
    """A re-id model option (a path, ``"default"`` = the bundled model, ``""``/``"none"`` = none) ->
    the model's path (``""`` = none). A missing or unusable model fails here, before any work.

    Raises:
        BackendError: the model does not exist or cannot be loaded (the message says which).
    """
    if not value or value == "none":
        return ""
    from perception.tracking.reid import DEFAULT_REID_MODEL, ReIdEmbedder

    path = DEFAULT_REID_MODEL if value == "default" else value
    ReIdEmbedder(model=path)  # raises BackendError naming the problem
    return str(path)


def evaluate_seed(
    seed: int, settings: SimSettings, *, tracker_kwargs: Mapping[str, Any] | None = None,
    frames_out: list | None = None,
) -> TrackingCounts:  # fmt: skip
    """Generate one sequence, track it, return its :class:`~perception.eval.tracking.TrackingCounts`.

    Args:
        seed: seeds both the scene and the detector simulator.
        settings: sequence size and perturbation rates.
        tracker_kwargs: settings of the :class:`~perception.tracking.Tracker` (defaults if None).
        frames_out: if given, every frame's :class:`~perception.eval.tracking.FrameMatch` is appended
            to it (to cross-check the scores with another implementation).
    """
    from perception.eval.tracking import evaluate_sequence

    return evaluate_sequence(_frame_matches(seed, settings, tracker_kwargs or {}, frames_out))


def _frame_matches(
    seed: int, settings: SimSettings, tracker_kwargs: Mapping[str, Any], frames_out: list | None
) -> Iterator[FrameMatch]:
    """Every frame of the sequence ``seed``, tracked and matched to the ground truth."""
    from perception.sim import SceneConfig, SceneSequence
    from perception.sim.detector import DetectorSimulator
    from perception.tracking import Tracker
    from perception.types import FrameMeta

    scene = SceneSequence(
        config=SceneConfig(
            width=settings.width, height=settings.height, num_frames=settings.frames, fps=settings.fps,
            num_objects=settings.objects, seed=seed,
        )
    )  # fmt: skip
    detector = DetectorSimulator(miss_rate=settings.miss_rate, fp_rate=settings.fp_rate, seed=seed)
    tracker = Tracker(**tracker_kwargs)
    embedder = None
    if settings.reid:
        from perception.tracking.reid import ReIdEmbedder

        embedder = ReIdEmbedder(model=settings.reid, threads=1)
    for i in range(len(scene)):
        frame = scene.frame(i)
        det = detector(frame)
        meta = FrameMeta(
            seq=i, camera_id="sim", frame_index=i, t_mono_ns=frame.t_ns, t_wall_ns=frame.t_ns, pts_ns=frame.t_ns,
            width=settings.width, height=settings.height,
        )  # fmt: skip
        image = _appearance_image(settings.appearance, frame, det)
        emb = None if embedder is None else embedder(frame.image, det.instance_map, det.instances)
        tracks = tracker.update(det.instances, meta, det.instance_map, image, embeddings=emb)
        fm = _match_frame(settings, frame, det, tracks)
        if frames_out is not None:
            frames_out.append(fm)
        yield fm


def _appearance_image(appearance: str, frame, det) -> np.ndarray | None:
    """The image the tracker's colour appearance is given (``SimSettings.appearance``)."""
    import numpy as np

    if appearance == "image":
        return frame.image
    if appearance == "oracle":
        return identity_image(det.instance_map, det.gt_ids)
    if appearance == "oracle-pixels":  # object ids are the map's values
        return identity_image(frame.instances, np.arange(1, int(frame.instances.max()) + 1))
    return None


def _match_frame(settings: SimSettings, frame, det, tracks) -> FrameMatch:
    """The frame's ground truth, reported tracks and their distances (``SimSettings.match``)."""
    import numpy as np

    from perception.eval.tracking import FrameMatch, iou_distance
    from perception.tracking import mask_iou, relabel_instance_map

    gt_ids = np.asarray(det.eligible_ids, np.int64)
    shown = [t for t in tracks if t.instance_index > 0]
    hyp_ids = np.asarray([t.track_id for t in shown], np.int64)
    if settings.match == "source":
        src = np.asarray([det.gt_ids[t.instance_index - 1] for t in shown], np.int64)
        dist = np.where(gt_ids[:, None] == src[None, :], 0.0, np.nan)
    else:
        hyp_map = relabel_instance_map(det.instance_map, shown)
        iou = mask_iou(frame.instances, gt_ids, hyp_map, (hyp_ids - 1) % 65535 + 1)
        dist = iou_distance(iou, min_iou=settings.min_iou)
    return FrameMatch(gt_ids, hyp_ids, dist)


def evaluate_seeds(
    seeds: Sequence[int],
    settings: SimSettings,
    tracker_kwargs: Mapping[str, Any],
    jobs: int = 1,
    on_done: Callable[[], None] | None = None,
) -> list[TrackingCounts]:
    """:func:`evaluate_seed` for every seed, in order; ``jobs`` > 1 runs them in that many processes
    (the results are the same). ``on_done`` is called after each sequence (a progress bar)."""
    results = []
    if jobs <= 1 or len(seeds) == 1:
        for seed in seeds:
            results.append(evaluate_seed(seed, settings, tracker_kwargs=tracker_kwargs))
            if on_done is not None:
                on_done()
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a clean interpreter per worker (no fork of a process that may hold threads)
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(seeds)), mp_context=ctx)
    try:
        futures = [pool.submit(evaluate_seed, seed, settings, tracker_kwargs=tracker_kwargs) for seed in seeds]
        for f in futures:
            results.append(f.result())
            if on_done is not None:
                on_done()
    finally:
        # on Ctrl-C or an error, sequences not started yet are dropped instead of waited for
        pool.shutdown(wait=True, cancel_futures=True)
    return results
