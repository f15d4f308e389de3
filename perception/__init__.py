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

_LAZY = {
    "ModelCard": "perception.modelcard", "load_card": "perception.modelcard",
    "ClassInfo": "perception.types", "FrameMeta": "perception.types", "Instance": "perception.types",
    "TensorSpec": "perception.types", "Track": "perception.types", "TrackState": "perception.types",
}


def __getattr__(name: str):
    """The model-card and frame types, imported on first use: the ``perception`` command starts without
    numpy and pydantic, so that a Ctrl-C while it starts is handled as quietly as later."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'perception' has no attribute {name!r}")


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
