"""``perception record``: the pipeline's published outputs, from the ZeroMQ stream to a recording.

Two formats, the same messages the pipeline's own sinks write (one encoder each, shared with them):

* ``foxglove``: an MCAP file written by the Foxglove SDK, typed protobuf channels per camera
  (:mod:`perception.outputs.foxglove_log` lists them);
* ``ros2``: a ROS 2 bag with MCAP storage (:mod:`perception.outputs.ros2`).

Every message is stamped with the input frame's stamp (``LabelMessage.stamp_ns``: for a replayed drive
the recorded header stamp, else the capture time), so a recording lines up with the drive it came from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from perception.config import CameraCalibrationConfig
from perception.errors import ConfigError, TransportError
from perception.outputs.frames import OutputFrame
from perception.types import ClassInfo

log = logging.getLogger(__name__)

Format = Literal["foxglove", "ros2"]
FORMATS: tuple[str, ...] = ("foxglove", "ros2")


class Recorder(Protocol):
    """What :func:`record` writes to: :class:`~perception.outputs.foxglove_sink.FoxgloveRecorder` or
    :class:`Ros2Recorder`."""

    path: Path

    def write(self, frame: OutputFrame, classes: Sequence[ClassInfo] | None) -> None: ...

    def close(self) -> None: ...


class Ros2Recorder:
    """``perception record --format ros2``: label messages to a ROS 2 bag (``out.mcap`` -> folder ``out``)."""

    def __init__(self, path: str | Path, *, with_input: bool = False, overwrite: bool = False,
                 calibrations: Mapping[str, CameraCalibrationConfig] | None = None) -> None:
        from perception.outputs.ros2 import Ros2BagWriter

        self._writer = Ros2BagWriter(path, with_image=with_input, overwrite=overwrite, calibrations=calibrations)
        self.path = self._writer.path
        self.with_input = with_input

    def write(self, frame: OutputFrame, classes: Sequence[ClassInfo] | None) -> None:
        self._writer.set_classes(classes)
        self._writer.write(frame)

    def close(self) -> None:
        self._writer.close()


def open_recorder(path: str | Path, *, fmt: Format = "foxglove", with_input: bool = False,
                  compression: str = "zstd", overwrite: bool = False,
                  calibrations: Mapping[str, CameraCalibrationConfig] | None = None) -> Recorder:
    """A recorder of ``fmt`` writing to ``path`` (created now; ConfigError if it exists and not ``overwrite``)."""
    if fmt == "foxglove":
        from perception.outputs.foxglove_sink import FoxgloveRecorder

        if Path(path).suffix.lower() != ".mcap":
            raise ConfigError(f"a Foxglove recording is an .mcap file, got {str(path)!r}")
        return FoxgloveRecorder(path, with_input=with_input, compression=compression, overwrite=overwrite,
                                calibrations=calibrations)
    if fmt == "ros2":
        return Ros2Recorder(path, with_input=with_input, overwrite=overwrite, calibrations=calibrations)
    raise ConfigError(f"unknown recording format {fmt!r}; allowed: {', '.join(FORMATS)}")


def _write(recorder: Recorder, msg: Any, classes: Sequence[ClassInfo] | None, stats: RecordStats) -> None:
    if msg.preview is None and getattr(recorder, "with_input", False) and not stats.warned_no_preview:
        stats.warned_no_preview = True
        log.warning("--with-input: the publisher sends no preview frames (set publish.preview: jpeg); "
                    "recording without the input topic")
    t0 = time.perf_counter()
    recorder.write(OutputFrame.from_message(msg), classes)
    stats.write_s += time.perf_counter() - t0


@dataclass(slots=True)
class RecordStats:
    frames: int = 0
    cameras: int = 0
    write_s: float = 0.0
    """Seconds spent writing (encoding and the writer), for the cost per frame."""
    warned_no_preview: bool = False


def record(
    *,
    subscriber: Any,
    recorder: Recorder | None,
    max_frames: int | None = None,
    idle_timeout_s: float | None = None,
    progress: bool = True,
    sinks: Sequence[Any] = (),
    stats: RecordStats | None = None,
) -> RecordStats:
    """Receive label messages from ``subscriber`` and write each to ``recorder`` and every sink.

    ``recorder``'s stats are returned in a fresh :class:`RecordStats` (frames, cameras, time spent writing).

    Args:
        subscriber: a :class:`~perception.transport.subscriber.Subscriber` (``recv(timeout_s)``, ``classes``).
        recorder: where to write (None: only the sinks, e.g. a live viewer).
        max_frames: stop after this many messages (None: until the stream ends, the idle timeout or
            Ctrl-C).
        idle_timeout_s: stop when no message arrives for this long (None: wait forever).
        progress: show a tqdm bar on stderr (frames, frames/s, and an ETA when ``max_frames`` is given).
        sinks: objects with ``log(msg, classes)`` (e.g. :class:`perception.outputs.rerun.RerunSink`).
        stats: counts to update (the caller keeps them if the loop is interrupted); a new one when None.

    Returns:
        Frames received (and written), cameras seen, seconds spent in the recorder.
    """
    stats = RecordStats() if stats is None else stats
    cameras: set[str] = set()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max_frames, unit="frame", desc="recorded", dynamic_ncols=True, mininterval=0.5)
    poll_s = 0.25
    last_msg = time.monotonic()
    try:
        while max_frames is None or stats.frames < max_frames:
            try:
                msg = subscriber.recv(timeout_s=poll_s)
            except TransportError as exc:
                log.warning("skipping a malformed message: %s", exc)
                continue
            if msg is None:
                if subscriber.end is not None:  # the publisher's end-of-stream message arrived
                    log.info("stream ended (%s) after seq %d", subscriber.end.reason, subscriber.end.last_seq)
                    break
                if idle_timeout_s is not None and time.monotonic() - last_msg >= idle_timeout_s:
                    break
                continue
            last_msg = time.monotonic()
            classes = subscriber.classes
            if recorder is not None:
                _write(recorder, msg, classes, stats)
            stats.frames += 1
            cameras.add(msg.camera_id)
            stats.cameras = len(cameras)
            for sink in sinks:
                sink.log(msg, classes)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return stats
