"""``perception eval-tracking``: track generated scenes through a simulated detector and score the ids.

For each seed: :class:`perception.sim.SceneSequence` renders a street with exact ground truth,
:class:`perception.sim.detector.DetectorSimulator` turns it into imperfect detections (misses, false
positives, jittered masks, score noise), :class:`perception.tracking.Tracker` tracks them, and the
reported tracks are scored with :mod:`perception.eval.tracking`.

Scoring conventions (stated in the output too):

* ground truth of a frame = the objects the detector could see at all (visible fraction and visible
  area above the simulator's limits, ``Detections.eligible_ids``); slivers behind occluders are not
  counted as misses of the tracker;
* hypotheses = the reported tracks (by default confirmed tracks matched to a detection this frame);
* ``--match source`` (default): a track may match the object whose detection it carries this frame
  (the simulator knows which object every detection came from; false positives match nothing).
  This scores the tracker's id decisions alone: the simulated detector's mask jitter cannot turn a
  correct id into a false positive. ``--match iou``: the usual criterion, mask IoU between the
  object's true mask and the track's (detected) mask >= ``--min-iou`` (0.5), distance ``1 - IoU``;
  it also charges the tracker for detections the simulator jittered below that IoU (about 7 % of
  them at the default jitter).
* ``--appearance`` sets what the tracker's colour appearance sees: ``image`` (default) the rendered
  frame; ``none`` no image (box, mask and motion cues only); ``oracle`` an image in which every
  detection is painted in one colour of its source object (false positives all black), so the
  colours tell every detection's object apart perfectly, even where its mask spills onto a
  neighbour; ``oracle-pixels`` every pixel in one colour of the object it truly shows (background
  black): perfectly distinct colours, but a detection's mask that spills onto a neighbour or the
  background carries their colours, as it does in a real image. ``none`` and ``oracle`` bound what
  appearance can contribute; where ``image`` lies between them shows how much of the gap today's
  colour histograms close, and ``oracle-pixels`` how much a more discriminative colour or
  appearance descriptor alone could still gain.
* ``--reid MODEL`` sets the learned re-id embeddings of every detection the tracker also gets
  (:mod:`perception.tracking.reid`), computed from the rendered frame whatever ``--appearance`` is.
  By default (and with ``--reid`` alone) the bundled ``engines/sim_reid.onnx``, trained on seeds
  1000-1059 by ``tools/train_reid.py``: the generated scenes are what it was made for, and the
  tracker is at its best with it. ``--reid none``: colours alone, as the pipeline tracks real video
  (and what ``--appearance`` bounds are about: the embeddings would otherwise blur them).
* HOTA uses similarity ``1 - distance``: 1 for every allowed pair with ``--match source`` (so LocA
  is 1 and HOTA is the same at every threshold), the mask IoU (>= ``--min-iou``, else 0) with
  ``--match iou``.

"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from perception.tracking import Tracker

__all__ = [
    "APPEARANCE_INPUTS",
    "SimSettings",
    "add_arguments",
    "build_tracker",
    "evaluate_seed",
    "identity_image",
    "main",
    "parse_tracker_options",
    "register",
]

APPEARANCE_INPUTS = ("image", "none", "oracle", "oracle-pixels")
"""What the tracker's colour appearance is given (module docstring, ``--appearance``)."""


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


def evaluate_seed(
    seed: int, settings: SimSettings, *, tracker_kwargs: dict | None = None, frames_out: list | None = None
):
    """Generate one sequence, track it, return its :class:`~perception.eval.tracking.TrackingCounts`.

    Args:
        seed: seeds both the scene and the detector simulator.
        settings: sequence size and perturbation rates.
        tracker_kwargs: keyword arguments for :class:`~perception.tracking.Tracker` (defaults if None).
        frames_out: if given, every frame's :class:`~perception.eval.tracking.FrameMatch` is appended
            to it (to cross-check the scores with another implementation).
    """
    import numpy as np

    from perception.eval.tracking import FrameMatch, evaluate_sequence, iou_distance
    from perception.sim import SceneConfig, SceneSequence
    from perception.sim.detector import DetectorSimulator
    from perception.tracking import Tracker, mask_iou, relabel_instance_map
    from perception.types import FrameMeta

    scene = SceneSequence(
        config=SceneConfig(
            width=settings.width,
            height=settings.height,
            num_frames=settings.frames,
            fps=settings.fps,
            num_objects=settings.objects,
            seed=seed,
        )
    )
    detector = DetectorSimulator(miss_rate=settings.miss_rate, fp_rate=settings.fp_rate, seed=seed)
    tracker = Tracker(**(tracker_kwargs or {}))
    embedder = None
    if settings.reid:
        from perception.tracking.reid import ReIdEmbedder

        embedder = ReIdEmbedder(model=settings.reid, threads=1)

    def frames():
        for i in range(len(scene)):
            frame = scene.frame(i)
            det = detector(frame)
            meta = FrameMeta(
                seq=i,
                camera_id="sim",
                frame_index=i,
                t_mono_ns=frame.t_ns,
                t_wall_ns=frame.t_ns,
                pts_ns=frame.t_ns,
                width=settings.width,
                height=settings.height,
            )
            if settings.appearance == "image":
                image = frame.image
            elif settings.appearance == "oracle":
                image = identity_image(det.instance_map, det.gt_ids)
            elif settings.appearance == "oracle-pixels":  # object ids are the map's values
                image = identity_image(frame.instances, np.arange(1, int(frame.instances.max()) + 1))
            else:
                image = None
            emb = None if embedder is None else embedder(frame.image, det.instance_map, det.instances)
            tracks = tracker.update(det.instances, meta, det.instance_map, image, embeddings=emb)
            hyp_map = relabel_instance_map(det.instance_map, tracks)
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
            fm = FrameMatch(gt_ids, hyp_ids, dist)
            if frames_out is not None:
                frames_out.append(fm)
            yield fm

    return evaluate_sequence(frames())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``perception eval-tracking``."""
    d = SimSettings()
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=1, help="number of sequences, seeds seed..seed+N-1 (default 1)")
    parser.add_argument("--frames", type=int, default=d.frames, help=f"frames per sequence (default {d.frames})")
    parser.add_argument("--objects", type=int, default=d.objects, help=f"objects in view at once (default {d.objects})")
    parser.add_argument("--width", type=int, default=d.width, help=f"frame width (default {d.width})")
    parser.add_argument("--height", type=int, default=d.height, help=f"frame height (default {d.height})")
    parser.add_argument("--fps", type=float, default=d.fps, help=f"frame rate (default {d.fps:g})")
    parser.add_argument(
        "--miss-rate", type=float, default=d.miss_rate, help=f"missed detections (default {d.miss_rate})"
    )
    parser.add_argument(
        "--fp-rate", type=float, default=d.fp_rate, help=f"false positives per object (default {d.fp_rate})"
    )
    parser.add_argument(
        "--match",
        choices=("source", "iou"),
        default=d.match,
        help="how a track is matched to an object: 'source' = the object its detection came from "
        "(scores the tracker alone, default), 'iou' = mask IoU >= --min-iou",
    )
    parser.add_argument(
        "--appearance",
        choices=APPEARANCE_INPUTS,
        default=d.appearance,
        help="what the tracker's colour appearance sees: 'image' = the frame (default), 'none' = nothing, "
        "'oracle' = each detection painted in its object's own colour (bounds what appearance can add), "
        "'oracle-pixels' = each pixel painted in the colour of the object it shows",
    )
    parser.add_argument(
        "--reid", nargs="?", const="default", default="default", metavar="MODEL",
        help="the ONNX model whose learned re-id embeddings the tracker also gets (default: the bundled "
        "engines/sim_reid.onnx, trained on generated seeds 1000-1059); 'none' = colours alone",
    )
    parser.add_argument(
        "--confirm-hits", type=int, default=None,
        help="tracker: matches before a track is reported (default: Tracker's)",
    )
    parser.add_argument(
        "--tracker", action="append", default=[], metavar="KEY=VALUE",
        help="a keyword of perception.tracking.Tracker, value read as YAML (repeatable; e.g. "
        "--tracker appearance_context=0.01): evaluate the tracker with other settings",
    )
    parser.add_argument("--min-iou", type=float, default=d.min_iou, help=f"mask IoU for a match (default {d.min_iou})")
    parser.add_argument(
        "--jobs", type=int, default=1,
        help="sequences evaluated in parallel processes (default 1; results are the same)",
    )
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")


def parse_tracker_options(items: Sequence[str]) -> dict:
    """``["key=value", ...]`` (``--tracker``) -> Tracker keyword arguments, values read as YAML.

    Raises:
        ConfigError: an item without ``=``, an empty key, a key given twice or a value that is not YAML.
    """
    from perception.config import parse_assignment
    from perception.errors import ConfigError

    out: dict = {}
    for item in items:
        key, value = parse_assignment(item, option="--tracker", example="appearance_context=0.01")
        if key in out:
            raise ConfigError(f"--tracker {key} is given twice")
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        out[key] = value
    return out


def build_tracker(kwargs: dict) -> Tracker:
    """A :class:`~perception.tracking.Tracker` from keywords given on the command line.

    ``eval-tracking`` builds one before generating anything, so that a bad keyword or value fails
    first; ``tools/track_camvid.py`` tracks with the one returned.

    Raises:
        ConfigError: an unknown keyword (the message lists the known ones) or a value the Tracker refuses.
    """
    import inspect

    from perception.errors import ConfigError
    from perception.tracking import Tracker

    known = [p for p in inspect.signature(Tracker).parameters if p != "kalman_params"]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigError(f"--tracker: unknown keyword(s) {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        return Tracker(**kwargs)
    except (TypeError, ValueError) as exc:  # a value of the wrong type (ConfigError passes through)
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ConfigError(f"--tracker: a value of the wrong type among {given} ({exc})") from exc


def _evaluate_all(seeds: range, settings: SimSettings, tracker_kwargs: dict, jobs: int) -> list:
    """``evaluate_seed`` for every seed, in order; ``jobs`` > 1 runs them in that many processes.
    A progress bar on stderr counts the sequences (it stays quiet when stderr is not a terminal)."""
    from tqdm import tqdm

    bar = tqdm(total=len(seeds), unit="seq", desc="eval-tracking", file=sys.stderr, disable=None, mininterval=0.5)
    results = []
    try:
        if jobs <= 1 or len(seeds) == 1:
            for seed in seeds:
                results.append(evaluate_seed(seed, settings, tracker_kwargs=tracker_kwargs))
                bar.update()
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: a clean interpreter per worker (no fork of a process that may hold threads)
            ctx = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(max_workers=min(jobs, len(seeds)), mp_context=ctx)
            try:
                futures = [pool.submit(evaluate_seed, seed, settings, tracker_kwargs=tracker_kwargs) for seed in seeds]
                for f in futures:
                    results.append(f.result())
                    bar.update()
            finally:
                # on Ctrl-C or an error, sequences not started yet are dropped instead of waited for
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
    return results


def main(args: argparse.Namespace) -> int:
    """Run the evaluation; print a table, or one JSON object with ``--json``. Returns 0."""
    from perception.errors import ConfigError
    from perception.eval.tracking import TrackingCounts

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    if not 0.0 < args.min_iou <= 1.0:
        raise ConfigError(f"--min-iou must be in (0, 1], got {args.min_iou}")
    settings = SimSettings(
        frames=args.frames,
        objects=args.objects,
        width=args.width,
        height=args.height,
        fps=args.fps,
        miss_rate=args.miss_rate,
        fp_rate=args.fp_rate,
        min_iou=args.min_iou,
        match=args.match,
        appearance=args.appearance,
        reid=_reid_model(args.reid),
    )
    tracker_kwargs = parse_tracker_options(args.tracker)
    if args.confirm_hits is not None:
        if "confirm_hits" in tracker_kwargs:
            raise ConfigError("give --confirm-hits or --tracker confirm_hits=..., not both")
        tracker_kwargs["confirm_hits"] = args.confirm_hits
    build_tracker(tracker_kwargs)  # each sequence builds its own; this one only checks the keywords
    t0 = time.perf_counter()
    total = TrackingCounts()
    seeds = range(args.seed, args.seed + args.seeds)
    per_seed = list(zip(seeds, _evaluate_all(seeds, settings, tracker_kwargs, args.jobs), strict=True))
    for _, c in per_seed:
        total = total + c
    elapsed = time.perf_counter() - t0
    if args.json:
        out = total.as_dict()
        out.update(
            seeds=[s for s, _ in per_seed],
            per_seed={
                str(s): {"hota": c.hota, "idf1": c.idf1, "mota": c.mota, "id_switches": c.id_switches}
                for s, c in per_seed
            },
            settings={k: getattr(settings, k) for k in settings.__dataclass_fields__},
            tracker=tracker_kwargs,
            seconds=elapsed,
        )
        json.dump(_nan_to_none(out), sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    how = f"mask IoU >= {settings.min_iou}" if settings.match == "iou" else "detection source"
    print(
        f"eval-tracking: {args.seeds} sequence(s) x {settings.frames} frames, {settings.width}x{settings.height} "
        f"@ {settings.fps:g} fps, miss {settings.miss_rate:.0%}, false positives {settings.fp_rate:.0%}, "
        f"match = {how}" + ("" if settings.appearance == "image" else f", appearance = {settings.appearance}")
        + (f", re-id = {Path(settings.reid).name}" if settings.reid else ", re-id = none")
        + "".join(f", {k} = {v}" for k, v in tracker_kwargs.items())
    )
    print(
        f"{'seed':>6} {'HOTA':>7} {'IDF1':>7} {'MOTA':>7} {'IDsw':>5} {'track-frames':>12} {'GT':>7} "
        f"{'FP':>6} {'FN':>6}"
    )
    for s, c in [*per_seed, ("all", total)]:
        print(
            f"{s!s:>6} {c.hota:7.4f} {c.idf1:7.4f} {c.mota:7.4f} {c.id_switches:5d} {c.num_hyp:12d} {c.num_gt:7d} "
            f"{c.false_positives:6d} {c.misses:6d}"
        )
    print(
        f"ID switches per 1000 track-frames: {total.switches_per_1000_track_frames:.3f}; "
        f"MOTP (1 - IoU): {total.motp:.4f}; DetA {total.deta:.4f}, AssA {total.assa:.4f}, LocA {total.loca:.4f} "
        f"(HOTA's, means over its 19 thresholds); {elapsed:.1f} s"
    )
    return 0


def _reid_model(value: str) -> str:
    """``--reid`` -> the model's path ('' = none); a missing or unusable model fails here, before any work."""
    if not value or value == "none":
        return ""
    from perception.tracking.reid import DEFAULT_REID_MODEL, ReIdEmbedder

    path = DEFAULT_REID_MODEL if value == "default" else value
    ReIdEmbedder(model=path)  # raises BackendError naming the problem
    return str(path)


def _nan_to_none(d):
    """JSON has no NaN: non-finite floats (e.g. MOTP without matches) become null."""
    import math

    if isinstance(d, dict):
        return {k: _nan_to_none(v) for k, v in d.items()}
    if isinstance(d, float) and not math.isfinite(d):
        return None
    return d


def register(subparsers: argparse._SubParsersAction) -> None:
    t = subparsers.add_parser(
        "eval-tracking",
        help="score the tracker on a labelled sequence (MOTA, IDF1, ...)",
        description="Score multi-object tracking against ground-truth tracks.",
    )
    add_arguments(t)
    t.set_defaults(func=main)
