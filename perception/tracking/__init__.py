"""perception.tracking: pure Kalman filter and matching, and a thin stateful tracker over them.

The tracker's settings are one :class:`TrackerParams` (:mod:`perception.tracking.params`, which the
configuration builds on); its per-track state one :class:`TrackTable`. Names are imported on first
use, so that reading a configuration does not pay for SciPy.
"""

from importlib import import_module

_EXPORTS = {
    "KalmanParams": "kalman",
    "box_iou": "matching", "linear_assignment": "matching", "mask_iou": "matching", "shifted_mask_iou": "matching",
    "TrackerParams": "params",
    "TrackTable": "table",
    "Tracker": "tracker", "relabel_instance_map": "tracker",
}  # fmt: skip

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (the lazily imported names are listed once, in _EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"perception.tracking.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'perception.tracking' has no attribute {name!r}")
