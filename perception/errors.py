"""The project's one exception tree.

Everything the package raises on purpose derives from :class:`PerceptionError`; third-party errors
are translated at the boundary with ``raise XError(...) from exc`` so that callers need to know one
tree only. Messages say what was wrong and what to do about it.

::

    PerceptionError
     ├── ConfigError        bad or unknown configuration key / value
     ├── SourceError        a camera, file, URL, folder or drive that cannot be read
     ├── BackendError       a model or runtime that cannot be loaded or run
     │    ├── ModelCardError    the model card is missing, malformed or does not match the model
     │    └── EngineError       a TensorRT engine that cannot be built, loaded, or is stale
     ├── TransportError     shared memory or ZeroMQ failures, malformed wire messages
     ├── DataError          a labelled data set that cannot be evaluated as asked
     └── StageError         a pipeline stage (process) failed; names the stage
"""

from __future__ import annotations


class PerceptionError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(PerceptionError):
    """A configuration file, key or value is invalid. The message names the key."""


class SourceError(PerceptionError):
    """An input (camera, video file, URL, image folder, recorded drive) cannot be opened or read."""


class BackendError(PerceptionError):
    """An inference backend cannot be created or fails while running."""


class ModelCardError(BackendError):
    """A model card is missing or malformed, or the model's tensors do not match it."""


class EngineError(BackendError):
    """A TensorRT engine cannot be built or loaded, or does not match what was asked for."""


class TransportError(PerceptionError):
    """Shared memory or ZeroMQ failed, or a message on the wire is malformed."""


class DataError(PerceptionError):
    """A labelled data set is missing files, has mismatched sizes or unknown class ids."""


class StageError(PerceptionError):
    """A pipeline stage failed. ``stage`` names it and ``exit_code`` is the process exit code."""

    def __init__(self, message: str, *, stage: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.stage = stage
        self.exit_code = exit_code
