"""``perception eval``: segmentation scores on labelled data.

Heavy imports (cv2, onnxruntime, tqdm) stay inside the handlers so that ``perception --help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perception.cli.args import positive_int, size_arg
from perception.errors import ConfigError


def default_model_path() -> Path:
    """The model ``perception eval`` scores when ``--model`` is not given (the pipeline's default)."""
    from perception.config import default_model_path as config_default

    return config_default()


def _tolerance(text: str) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a distance in pixels, got {text!r}") from exc
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"the tolerance must be >= 0 pixels, got {text!r}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, type=Path,
        help="labelled data set folder. camvid layout: a folder with <split>.txt, or <split>/ + "
        "<split>annot/, or images/ + labels/, or an images folder with a sibling <name>annot/ "
        "(labels: 8-bit PNG of class ids, same file stem). cityscapes layout: the folder holding "
        "leftImg8bit/ and gtFine/",
    )
    parser.add_argument("--layout", choices=("camvid", "cityscapes", "pennfudan"), default="camvid",
                        help="data set layout (default: camvid). pennfudan: PNGImages/ + PedMasks/ (one id per "
                        "person; <split>.txt of stems if present, else every image): person mask recall and "
                        "precision at IoU 0.5, AP50 and PQ instead of the segmentation scores")
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument("--model", type=Path, default=None,
                        help="ONNX model with its .card.json (default: engines/camvid_lite0_panoptic.onnx)")
    parser.add_argument("--backend", choices=("onnxruntime", "tensorrt", "auto"), default="onnxruntime",
                        help="inference runtime (default: onnxruntime)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="ONNX Runtime intra-op threads (default: its own choice)")
    parser.add_argument("--input-size", type=size_arg, default=None, metavar="WxH",
                        help="network input size (default: the model card's); dynamic models only")
    parser.add_argument("--upsample", choices=("nearest", "bilinear", "refine"), default="bilinear",
                        help="how low-resolution scores reach the label's resolution (default: bilinear)")
    parser.add_argument("--boundary-tolerance", type=_tolerance, default=None, metavar="PX",
                        help="boundary F1 match distance in label pixels (default: 2)")
    parser.add_argument("--ignore-index", type=int, default=None, metavar="ID",
                        help="label id of unlabelled pixels (camvid layout; default: the model card's, "
                        "else 255)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out bad image/label pairs (counted, with the reason) instead of stopping")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="score only the first N images")
    parser.add_argument("--json", action="store_true",
                        help="print exactly one JSON object on stdout instead of the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a segmentation model on labelled images (IoU, Dice, pixel accuracy, boundary F1, fps)",
        description="Score a segmentation model on a labelled data set: per-class IoU, mIoU, pixel "
        "accuracy, mean Dice, boundary F1 of road and sidewalk, and images per second.",
    )
    add_arguments(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from perception.eval.datasets import open_dataset
    from perception.eval.metrics import DEFAULT_BOUNDARY_TOLERANCE_PX
    from perception.eval.segmentation import evaluate
    from perception.modelcard import load_card

    model = args.model if args.model is not None else default_model_path()
    if not model.is_file():
        raise ConfigError(
            f"model file not found: {model} (pass --model PATH to an .onnx with its .card.json"
            + ("" if args.model is not None else "; the default model ships in engines/")
            + ")"
        )
    if args.layout == "pennfudan":
        return _main_instances(args, model)
    card = load_card(model)
    ignore = args.ignore_index if args.ignore_index is not None else card.ignore_index
    if args.layout == "cityscapes" and args.ignore_index is not None:
        raise ConfigError("--ignore-index applies to the camvid layout only (cityscapes ignores 255)")
    dataset = open_dataset(
        args.data,
        layout=args.layout,
        split=args.split,
        num_classes=card.num_classes,
        ignore_index=None if args.layout == "cityscapes" else ignore,
        skip_bad=args.skip_bad,
        limit=args.limit,
    )
    tolerance = DEFAULT_BOUNDARY_TOLERANCE_PX if args.boundary_tolerance is None else args.boundary_tolerance
    report = evaluate(
        dataset=dataset,
        backend_or_model=model,
        input_size=args.input_size,
        upsample=args.upsample,
        boundary_tolerance_px=tolerance,
        backend_kind=args.backend,
        threads=args.threads,
        progress=not args.no_progress,
    )
    if args.json:
        sys.stdout.write(json.dumps(report.to_json_dict(), allow_nan=False) + "\n")
    else:
        print(report.format_table())
    return 0


def _main_instances(args: argparse.Namespace, model: Path) -> int:
    """``--layout pennfudan``: person instance scores (:mod:`perception.eval.instances`)."""
    from perception.backends.factory import open_backend
    from perception.eval.instances import evaluate_instances, pennfudan_pairs

    pairs = pennfudan_pairs(args.data, args.split, args.limit)
    with open_backend(model, kind=args.backend, threads=args.threads, input_size=args.input_size) as backend:
        report = evaluate_instances(pairs, backend, progress=not args.no_progress)
    if args.json:
        sys.stdout.write(json.dumps(report.to_json_dict(), allow_nan=False) + "\n")
    else:
        print(report.format_table())
    return 0
