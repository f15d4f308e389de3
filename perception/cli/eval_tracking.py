"""``perception eval-tracking``: track generated scenes through a simulated detector and score the ids.

The command maps its options to :class:`~perception.eval.tracking_sim.SimSettings` and tracker
settings (``--tracker KEY=VALUE``, any :class:`~perception.tracking.TrackerParams` field), runs
:func:`perception.eval.tracking_sim.evaluate_seeds` and prints a table or one JSON object. What is
generated and how it is scored (``--match``, ``--appearance``, ``--reid``) is described in
:mod:`perception.eval.tracking_sim`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from perception.eval.tracking_sim import APPEARANCE_INPUTS, SimSettings

__all__ = ["add_arguments", "main", "parse_tracker_options", "register"]


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
        help="a tracker setting (a field of perception.tracking.TrackerParams, tracking.<name> in a pipeline "
        "configuration), value read as YAML (repeatable; e.g. --tracker appearance_context=0.01): evaluate "
        "the tracker with other settings",
    )
    parser.add_argument("--min-iou", type=float, default=d.min_iou, help=f"mask IoU for a match (default {d.min_iou})")
    parser.add_argument(
        "--jobs", type=int, default=1,
        help="sequences evaluated in parallel processes (default 1; results are the same)",
    )
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")


def parse_tracker_options(items: Sequence[str]) -> dict:
    """``["key=value", ...]`` (``--tracker``) -> tracker settings by name, values read as YAML and kept as
    given (:func:`perception.eval.tracking_sim.tracker_params` validates them).

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


def main(args: argparse.Namespace) -> int:
    """Run the evaluation; print a table, or one JSON object with ``--json``. Returns 0."""
    from perception.eval.tracking import TrackingCounts
    from perception.eval.tracking_sim import build_tracker, evaluate_seeds

    settings = _settings(args)
    tracker_kwargs = _tracker_kwargs(args)
    build_tracker(tracker_kwargs)  # each sequence builds its own; this one only checks the settings
    t0 = time.perf_counter()
    seeds = range(args.seed, args.seed + args.seeds)
    bar = _progress_bar(len(seeds))
    try:
        counts = evaluate_seeds(seeds, settings, tracker_kwargs, args.jobs, on_done=bar.update)
    finally:
        bar.close()
    per_seed = list(zip(seeds, counts, strict=True))
    total = TrackingCounts()
    for _, c in per_seed:
        total = total + c
    elapsed = time.perf_counter() - t0
    if args.json:
        _print_json(per_seed, total, settings, tracker_kwargs, elapsed)
    else:
        _print_table(per_seed, total, settings, tracker_kwargs, elapsed)
    return 0


def _settings(args: argparse.Namespace) -> SimSettings:
    """The options -> :class:`SimSettings` (the one place they are mapped); checks the counts too."""
    from perception.errors import ConfigError
    from perception.eval.tracking_sim import resolve_reid_model

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    if not 0.0 < args.min_iou <= 1.0:
        raise ConfigError(f"--min-iou must be in (0, 1], got {args.min_iou}")
    return SimSettings(
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
        reid=resolve_reid_model(args.reid),
    )


def _tracker_kwargs(args: argparse.Namespace) -> dict:
    """The tracker settings given (``--tracker``, ``--confirm-hits``), as given (echoed in the output)."""
    from perception.errors import ConfigError

    tracker_kwargs = parse_tracker_options(args.tracker)
    if args.confirm_hits is not None:
        if "confirm_hits" in tracker_kwargs:
            raise ConfigError("give --confirm-hits or --tracker confirm_hits=..., not both")
        tracker_kwargs["confirm_hits"] = args.confirm_hits
    return tracker_kwargs


def _progress_bar(total: int):
    """A progress bar on stderr counting the sequences (quiet when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="seq", desc="eval-tracking", file=sys.stderr, disable=None, mininterval=0.5)


def _print_json(per_seed: list, total, settings: SimSettings, tracker_kwargs: dict, elapsed: float) -> None:
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


def _print_table(per_seed: list, total, settings: SimSettings, tracker_kwargs: dict, elapsed: float) -> None:
    how = f"mask IoU >= {settings.min_iou}" if settings.match == "iou" else "detection source"
    print(
        f"eval-tracking: {len(per_seed)} sequence(s) x {settings.frames} frames, {settings.width}x{settings.height} "
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
