"""perception: a real-time video perception pipeline.

The public surface is re-exported here; everything else is an implementation detail.
"""

from perception.errors import (
    BackendError,
    ConfigError,
    DataError,
    EngineError,
    ModelCardError,
    PerceptionError,
    SourceError,
    StageError,
    TransportError,
)
from perception.modelcard import ModelCard, load_card
from perception.types import ClassInfo, FrameMeta, Instance, TensorSpec, Track, TrackState

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ClassInfo",
    "ConfigError",
    "DataError",
    "EngineError",
    "FrameMeta",
    "Instance",
    "ModelCard",
    "ModelCardError",
    "PerceptionError",
    "SourceError",
    "StageError",
    "TensorSpec",
    "Track",
    "TrackState",
    "TransportError",
    "load_card",
]
