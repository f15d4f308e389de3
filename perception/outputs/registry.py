"""Where the pipeline's outputs are chosen: one line per kind of sink.

Each factory takes the output configuration and returns a sink, or None when that output is not
configured. ``output.plugins`` adds sinks from outside the package (``module:factory``, same signature).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence

from perception.errors import ConfigError
from perception.outputs import foxglove_sink, overlay, publisher, ros2
from perception.outputs.base import Ending, RunContext, Sink, SinkConfig

log = logging.getLogger(__name__)

SinkFactory = Callable[[SinkConfig], "Sink | None"]

SINK_FACTORIES: tuple[SinkFactory, ...] = (
    publisher.make_sink,  # ZeroMQ publisher (publish.*): planners, robots, `perception view`, `perception record`
    overlay.make_sink,  # overlay video (output.overlay)
    foxglove_sink.make_sink,  # Foxglove: MCAP recording (output.record, format foxglove), live (output.foxglove)
    ros2.make_sink,  # ROS 2 bag (output.record, record_format ros2)
)

RECORDING_FACTORIES: tuple[SinkFactory, ...] = (foxglove_sink.make_sink, ros2.make_sink)
"""The sinks ``output.record`` makes (Foxglove MCAP or ROS 2 bag): what ``perception batch`` writes per drive."""


def load_plugin(spec: str) -> SinkFactory:
    """``"package.module:factory"`` → the factory. Raises ConfigError naming the spec when it cannot be loaded."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"output.plugins: expected 'module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"output.plugins: cannot import {module_name!r} ({exc})") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"output.plugins: {module_name!r} has no callable {attr!r}")
    return factory


def make_sinks(config: SinkConfig, *, factories: Sequence[SinkFactory] = SINK_FACTORIES) -> list[Sink]:
    """Every configured sink (not yet opened) of ``factories`` (default: every built-in), then
    ``output.plugins`` in order."""
    factories = [*factories, *(load_plugin(s) for s in config.output.plugins)]
    sinks = []
    for factory in factories:
        sink = factory(config)
        if sink is not None:
            if not isinstance(sink, Sink):
                raise ConfigError(f"output sink factory {factory!r} returned {type(sink).__name__}, not a Sink")
            sinks.append(sink)
    return sinks


def open_sinks(config: SinkConfig, run: RunContext, *,
               factories: Sequence[SinkFactory] = SINK_FACTORIES) -> list[Sink]:
    """Build (:func:`make_sinks`) and open every configured sink; on a failure, close those already
    open and re-raise."""
    opened: list[Sink] = []
    try:
        for sink in make_sinks(config, factories=factories):
            sink.open(run)
            opened.append(sink)
    except BaseException:
        close_sinks(opened, "stopped")
        raise
    return opened


def close_sinks(sinks: Sequence[Sink], reason: Ending) -> None:
    """Close every sink, logging (not raising) a sink's failure so that the others still close."""
    for sink in sinks:
        try:
            sink.close(reason=reason)
        except Exception:
            log.exception("closing output %s failed", sink.name)
