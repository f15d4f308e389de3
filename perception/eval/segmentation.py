"""Run a segmentation model over a labelled data set and score it.

The model runs through :class:`perception.inference.Segmenter` (the pipeline's own preprocessing and
backend), its class scores are brought to the label's resolution by the pipeline's upsampler
(``nearest`` on labels, ``bilinear`` on scores, or ``refine``), and the predicted label map is scored
against the truth at the truth's full resolution. All scores are dataset-level (counts summed over
the images, see :mod:`perception.eval.metrics`).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perception.backends.base import Backend
from perception.errors import ConfigError, DataError
from perception.eval.datasets import LabelledDataset, SkippedFile
from perception.eval.metrics import (
    DEFAULT_BOUNDARY_TOLERANCE_PX,
    BoundaryCounts,
    boundary_counts,
    confusion_matrix,
    dice_from_confusion,
    iou_from_confusion,
    mean_ignore_nan,
    pixel_accuracy,
)
from perception.modelcard import ModelCard
from perception.postprocess.upsample import Upsampler, make_upsampler

if TYPE_CHECKING:
    from perception.inference import Segmenter

UPSAMPLE_METHODS: tuple[str, ...] = ("nearest", "bilinear", "refine")

BOUNDARY_CLASS_ALIASES: dict[str, tuple[str, ...]] = {
    "road": ("road",),
    "sidewalk": ("sidewalk", "pavement"),
}
"""Classes whose boundary F1 is reported, with the names they go by in model cards (CamVid calls the
sidewalk 'Pavement'). A model without such a class simply has no figure for it."""


@dataclass(frozen=True, slots=True)
class BoundaryScore:
    precision: float
    recall: float
    f1: float
    tolerance_px: float
    """Match distance used (pixels at the label's resolution)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentationReport:
    """What :func:`evaluate` measured. NaN = not measurable (class absent from truth and prediction)."""

    class_names: tuple[str, ...]
    confusion: np.ndarray
    """int64[C, C] summed over the images; rows = truth, columns = prediction."""
    per_class_iou: np.ndarray
    """float64[C]."""
    miou: float
    """Mean of the per-class IoUs that are not NaN."""
    pixel_accuracy: float
    per_class_dice: np.ndarray
    mean_dice: float
    boundary_f1: dict[str, BoundaryScore]
    """Card class name → boundary score, for road and sidewalk when the model has them."""
    fps: float
    """Images per second of inference + upsampling (preprocessing, backend, upsampler); file decoding
    and scoring are excluded."""
    images: int
    """Images scored."""
    skipped: tuple[SkippedFile, ...] = ()
    model: str
    input_size: tuple[int, int]
    """(width, height) of the network input."""
    upsample: str
    ignore_index: int
    timing: dict[str, float] = field(default_factory=dict)
    """Mean milliseconds per image: ``inference`` and ``upsample``."""

    def to_json_dict(self) -> dict[str, Any]:
        """The ``--json`` object (NaN becomes ``null``)."""

        def num(v: float) -> float | None:
            return None if v is None or math.isnan(v) else float(v)

        return {
            "miou": num(self.miou),
            "pixel_accuracy": num(self.pixel_accuracy),
            "per_class_iou": {n: num(v) for n, v in zip(self.class_names, self.per_class_iou)},
            "mean_dice": num(self.mean_dice),
            "per_class_dice": {n: num(v) for n, v in zip(self.class_names, self.per_class_dice)},
            "boundary_f1": {
                n: {
                    "precision": num(b.precision),
                    "recall": num(b.recall),
                    "f1": num(b.f1),
                    "tolerance_px": b.tolerance_px,
                }
                for n, b in self.boundary_f1.items()
            },
            "fps": num(self.fps),
            "timing_ms": {k: num(v) for k, v in self.timing.items()},
            "images": self.images,
            "skipped": len(self.skipped),
            "skipped_files": [{"name": s.name, "path": s.path, "reason": s.reason} for s in self.skipped],
            "model": self.model,
            "input_size": list(self.input_size),
            "upsample": self.upsample,
            "ignore_index": self.ignore_index,
        }

    def format_table(self) -> str:
        """A readable multi-line summary (percentages)."""

        def pct(v: float) -> str:
            return "   n/a" if math.isnan(v) else f"{100.0 * v:6.2f}"

        w = max([len(n) for n in self.class_names] + [len("pixel accuracy")])
        lines = [
            f"model: {self.model}",
            f"input: {self.input_size[0]}x{self.input_size[1]}   upsample: {self.upsample}   "
            f"images: {self.images}   skipped: {len(self.skipped)}",
            "",
            f"{'class':<{w}}  {'IoU %':>6}  {'Dice %':>6}",
        ]
        for n, iou, dice in zip(self.class_names, self.per_class_iou, self.per_class_dice):
            lines.append(f"{n:<{w}}  {pct(iou)}  {pct(dice)}")
        lines += [
            "-" * (w + 16),
            f"{'mIoU':<{w}}  {pct(self.miou)}",
            f"{'mean Dice':<{w}}  {pct(self.mean_dice)}",
            f"{'pixel accuracy':<{w}}  {pct(self.pixel_accuracy)}",
            "",
        ]
        if self.boundary_f1:
            tol = next(iter(self.boundary_f1.values())).tolerance_px
            lines.append(f"boundary F1 (tolerance {tol:g} px, counts summed over images):")
            for n, b in self.boundary_f1.items():
                lines.append(
                    f"  {n:<{w}}  F1 {pct(b.f1)}   precision {pct(b.precision)}   recall {pct(b.recall)}"
                )
            lines.append("")
        ms = "  ".join(f"{k} {v:.1f} ms" for k, v in self.timing.items())
        lines.append(f"speed: {self.fps:.1f} images/s (inference + upsampling, file decoding excluded; {ms})")
        for s in self.skipped:
            lines.append(f"skipped {s.name}: {s.reason}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
def _norm(name: str) -> str:
    return name.lower().replace("_", " ").replace("-", " ")


def _boundary_classes(card: ModelCard) -> dict[str, int]:
    """Card class name → id for the classes in :data:`BOUNDARY_CLASS_ALIASES` the model has."""
    found: dict[str, int] = {}
    for aliases in BOUNDARY_CLASS_ALIASES.values():
        for c in card.classes:
            if c.name.lower() in aliases:
                found[c.name] = c.id
                break
    return found


def evaluate(
    *,
    dataset: LabelledDataset,
    backend_or_model: Backend | str | Path,
    input_size: tuple[int, int] | None = None,
    upsample: str = "bilinear",
    boundary_tolerance_px: float = DEFAULT_BOUNDARY_TOLERANCE_PX,
    backend_kind: str = "onnxruntime",
    threads: int | None = None,
    progress: bool = True,
) -> SegmentationReport:
    """Score a model on a labelled data set.

    Args:
        dataset: from :func:`perception.eval.datasets.open_dataset`, made with the model's class count.
        backend_or_model: an open :class:`Backend` (left open; the caller owns it) or the path of an
            ``.onnx`` model with its card (opened with ``backend_kind`` and closed here).
        input_size: ``(width, height)`` network input; ``None`` = the model's default. A size the model
            cannot take raises :class:`~perception.errors.BackendError`.
        upsample: ``nearest`` | ``bilinear`` | ``refine`` (see :mod:`perception.postprocess.upsample`).
        boundary_tolerance_px: match distance of boundary F1, in label pixels.
        backend_kind: ``onnxruntime`` | ``tensorrt`` | ``auto`` when a path is given.
        threads: intra-op threads for ONNX Runtime when a path is given (None = its default).
        progress: show a progress bar on stderr.

    Raises:
        DataError: a bad image/label pair (unless the data set skips them), no image could be scored,
            or the data set's classes do not fit the model's.
    """
    if upsample not in UPSAMPLE_METHODS:
        raise ConfigError(f"upsample must be one of {', '.join(UPSAMPLE_METHODS)}, got {upsample!r}")
    if isinstance(backend_or_model, (str, Path)):
        from perception.backends.factory import open_backend

        with open_backend(
            backend_or_model, kind=backend_kind, threads=threads, input_size=input_size
        ) as backend:
            return _evaluate(dataset, backend, str(backend_or_model), input_size, upsample,
                             boundary_tolerance_px, progress)
    return _evaluate(dataset, backend_or_model, backend_or_model.card.name, input_size, upsample,
                     boundary_tolerance_px, progress)


def _check_classes(dataset: LabelledDataset, card: ModelCard) -> None:
    """DataError unless the data set's class count (and names, where its layout has them) are the model's."""
    c = card.num_classes
    if dataset.num_classes != c:
        raise DataError(
            f"the data set was opened for {dataset.num_classes} classes but model {card.name!r} has {c}"
        )
    if dataset.class_names is not None:
        if tuple(_norm(x.name) for x in card.classes) != tuple(_norm(n) for n in dataset.class_names):
            raise DataError(
                f"the {dataset.layout} layout's classes {list(dataset.class_names)} are not the classes of "
                f"model {card.name!r} {[x.name for x in card.classes]}: its scores would be meaningless"
            )


@dataclass(slots=True)
class _Tally:
    """Counts summed over the images scored so far."""

    cm: np.ndarray
    """int64[C, C] confusion matrix."""
    bcounts: dict[str, BoundaryCounts]
    """Boundary counts per class name of :func:`_boundary_classes`."""
    infer_ns: int = 0
    up_ns: int = 0
    n: int = 0


def _score_all(
    dataset: LabelledDataset, seg: Segmenter, card: ModelCard, upsample: str, tolerance: float, progress: bool
) -> _Tally:
    """Run ``seg`` and the upsampler over every pair of ``dataset`` and sum the counts."""
    from tqdm import tqdm

    c = card.num_classes
    ignore = dataset.ignore_index
    boundary_ids = _boundary_classes(card)
    tally = _Tally(cm=np.zeros((c, c), np.int64), bcounts={name: BoundaryCounts() for name in boundary_ids})
    upsamplers: dict[tuple[int, int], Upsampler] = {}
    bar = tqdm(total=len(dataset), desc="eval", unit="img", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        for _name, image, label in dataset:
            h, w = label.shape
            up = upsamplers.get((w, h))
            if up is None:
                up = upsamplers[(w, h)] = make_upsampler(upsample, card=card, out_size=(w, h))
            t0 = time.perf_counter_ns()
            out = seg(image)
            t1 = time.perf_counter_ns()
            pred = up(out.semantic_logits, image)
            t2 = time.perf_counter_ns()
            tally.infer_ns += t1 - t0
            tally.up_ns += t2 - t1
            tally.cm += confusion_matrix(pred, label, c, ignore)
            unknown = label == ignore
            for name, cid in boundary_ids.items():
                tally.bcounts[name] = tally.bcounts[name] + boundary_counts(pred, label, cid, tolerance, unknown)
            tally.n += 1
            bar.update(1)
        bar.update(len(dataset) - bar.n)
    finally:
        bar.close()
    return tally


def _evaluate(
    dataset: LabelledDataset,
    backend: Backend,
    model_name: str,
    input_size: tuple[int, int] | None,
    upsample: str,
    tolerance: float,
    progress: bool,
) -> SegmentationReport:
    from perception.inference import Segmenter

    card = backend.card
    _check_classes(dataset, card)
    seg = Segmenter(backend=backend, input_size=input_size)
    ignore = dataset.ignore_index
    tally = _score_all(dataset, seg, card, upsample, tolerance, progress)
    cm, n = tally.cm, tally.n
    skipped = tuple(dataset.skipped)
    if n == 0:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:3])
        raise DataError(f"no image of {dataset.root} could be scored ({len(skipped)} skipped: {reasons})")
    iou = iou_from_confusion(cm)
    dice = dice_from_confusion(cm)
    total_s = (tally.infer_ns + tally.up_ns) / 1e9
    boundary = {}
    for name, counts in tally.bcounts.items():
        p, r, f = counts.scores()
        boundary[name] = BoundaryScore(precision=p, recall=r, f1=f, tolerance_px=float(tolerance))
    return SegmentationReport(
        class_names=tuple(x.name for x in card.classes),
        confusion=cm,
        per_class_iou=iou,
        miou=mean_ignore_nan(iou),
        pixel_accuracy=pixel_accuracy(cm),
        per_class_dice=dice,
        mean_dice=mean_ignore_nan(dice),
        boundary_f1=boundary,
        fps=n / total_s if total_s > 0 else math.nan,
        images=n,
        skipped=skipped,
        model=model_name,
        input_size=tuple(seg.input_size),
        upsample=upsample,
        ignore_index=ignore,
        timing={"inference": tally.infer_ns / n / 1e6, "upsample": tally.up_ns / n / 1e6},
    )
