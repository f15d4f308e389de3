"""perception.tracking: pure Kalman filter and matching, and a thin stateful tracker over them."""

from perception.tracking.kalman import KalmanParams
from perception.tracking.matching import (
    box_iou,
    linear_assignment,
    mask_iou,
    shifted_mask_iou,
)
from perception.tracking.tracker import Tracker, relabel_instance_map

__all__ = [
    "KalmanParams",
    "Tracker",
    "box_iou",
    "linear_assignment",
    "mask_iou",
    "relabel_instance_map",
    "shifted_mask_iou",
]
