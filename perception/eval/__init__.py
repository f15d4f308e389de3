"""Evaluation: segmentation metrics and data set readers, tracking metrics.

Segmentation: :func:`evaluate` over an :func:`open_dataset` (CamVid or Cityscapes layout), with the
pure metric functions of :mod:`perception.eval.metrics`. Tracking: :func:`evaluate_sequence` over
per-frame :class:`FrameMatch`; tracking on generated scenes through a simulated detector:
:func:`evaluate_seed` (:mod:`perception.eval.tracking_sim`). The ``perception eval`` and
``perception eval-tracking`` commands are in :mod:`perception.cli.eval` and
:mod:`perception.cli.eval_tracking`.

Names are imported on first use, so that the command line (which imports this package to register
its commands) does not pay for OpenCV and SciPy at start-up.
"""

from importlib import import_module

_EXPORTS = {
    "LabelledDataset": "datasets", "SkippedFile": "datasets", "open_dataset": "datasets",
    "BoundaryCounts": "metrics", "boundary_counts": "metrics", "boundary_f1": "metrics",
    "confusion_matrix": "metrics", "dice_from_confusion": "metrics", "iou_from_confusion": "metrics",
    "mean_ignore_nan": "metrics", "panoptic_counts": "metrics", "pixel_accuracy": "metrics",
    "SegmentationReport": "segmentation", "evaluate": "segmentation",
    "FrameMatch": "tracking", "HOTA_ALPHAS": "tracking", "HotaCounts": "tracking", "TrackingCounts": "tracking",
    "evaluate_sequence": "tracking",
    "SimSettings": "tracking_sim", "evaluate_seed": "tracking_sim", "evaluate_seeds": "tracking_sim",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (the lazily imported names are listed once, in _EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"perception.eval.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'perception.eval' has no attribute {name!r}")
