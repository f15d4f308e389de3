"""Synthetic scenes with exact ground truth, and a detector simulator that perturbs it.

``SceneSequence`` renders a street seen from a stopped car with moving cars, pedestrians and
bicyclists (semantic map, instance map, per-object ground truth per frame); ``DetectorSimulator``
turns a frame's ground truth into imperfect detections (misses, jitter, false positives, score noise)
at stated rates, for testing and evaluating trackers without a network.
"""

from perception.sim.detector import Detections, DetectorSimulator
from perception.sim.scenes import THING_CLASSES, GtObject, ObjectPlan, SceneConfig, SceneFrame, SceneSequence

__all__ = [
    "THING_CLASSES",
    "Detections",
    "DetectorSimulator",
    "GtObject",
    "ObjectPlan",
    "SceneConfig",
    "SceneFrame",
    "SceneSequence",
]
