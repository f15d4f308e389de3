"""The one protocol every output implements: a sink that takes one :class:`FrameResult` per frame.

A sink is opened once the run is known (:class:`RunContext`), written once per processed frame, and
closed once at the end with the reason the stream ended. Sinks run inside the post-processing process,
after the frame's labels, instances and tracks are known; they must not block the pipeline for long (a
sink whose consumer is slow drops, counts the drop and returns False from :meth:`Sink.write`).

Adding an output: write one module with a ``make_sink(config: SinkConfig) -> Sink | None`` factory and
add it to :data:`perception.outputs.registry.SINK_FACTORIES` (or, without touching the package, name it
in ``output.plugins`` as ``module:factory``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from perception.config import OutputConfig, PublishConfig
from perception.types import ClassInfo, FrameResult

Ending = Literal["end", "stopped"]
"""Why a stream ended: ``end`` (the input ended), ``stopped`` (interrupted, or a stage failed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkConfig:
    """The configuration sections outputs read (the rest of the configuration is not theirs)."""

    publish: PublishConfig
    output: OutputConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class RunContext:
    """What a sink learns when it is opened."""

    classes: tuple[ClassInfo, ...]
    """The model's class table (ids, names, display colours)."""
    fps: float
    """Frame rate for a stream whose input has none (for video writers); see :meth:`fps_of`."""
    mode: Literal["live", "replay"]
    stop: Any = None
    """An event-like object (``is_set()``) that is set when the pipeline is stopping, or None; a sink
    that waits in :meth:`Sink.open` (e.g. for subscribers) gives up when it is set."""
    stream_fps: Mapping[str, float] = field(default_factory=dict)
    """Nominal frame rate of each stream by camera id, known before its first frame reaches a sink
    (streams may be added while the pipeline runs)."""

    def fps_of(self, camera_id: str) -> float:
        """The nominal frame rate of a camera's stream (:attr:`fps` when unknown)."""
        return self.stream_fps.get(camera_id, self.fps)


@runtime_checkable
class Sink(Protocol):
    """One output of the pipeline."""

    name: str
    """Short name for logs and errors, e.g. ``"publisher"``."""

    def open(self, run: RunContext) -> None:
        """Acquire resources (bind sockets, open files). Raises a :class:`PerceptionError` naming the cause."""
        ...

    def write(self, result: FrameResult) -> bool:
        """Write one frame's result; False when it was dropped (and counted) because a consumer is slow.

        The result's arrays are borrowed (see :class:`FrameResult`): copy what is kept past this call.
        """
        ...

    def close(self, *, reason: Ending = "end") -> None:
        """Flush and release everything; idempotent. ``reason`` tells consumers why the stream ended."""
        ...


# A sink may also have ``write_status(status: dict) -> None``: the pipeline's health, once a second
# (docs/wire-format.md, "Status message"); the ZeroMQ publisher sends it on ``<topic>/status``.
