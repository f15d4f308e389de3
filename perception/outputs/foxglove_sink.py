"""Foxglove as a sink of the pipeline: an MCAP recording and/or the live WebSocket server, via its SDK.

``perception run --record out/run.mcap`` (``output.record``, ``record_format: foxglove``) writes the
recording; ``perception run --foxglove [HOST:PORT]`` (``output.foxglove``) serves the same channels
live, so that the Foxglove app connects straight to the running pipeline (Open connection → Foxglove
WebSocket → ``ws://127.0.0.1:8765``). With both, every frame is encoded once: the MCAP writer and the
server are two sinks of one ``foxglove.Context``. The messages are :mod:`.foxglove_log`'s.

``perception record`` writes the same recording from the ZeroMQ stream (:class:`FoxgloveRecorder`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from perception.config import CameraCalibrationConfig
from perception.errors import ConfigError, DataError, TransportError
from perception.outputs.base import Ending, RunContext, SinkConfig
from perception.outputs.frames import DEFAULT_PREFIX, OutputFrame
from perception.outputs.overlay import refuse_existing
from perception.types import ClassInfo, FrameResult

log = logging.getLogger(__name__)

COMPRESSIONS = ("zstd", "lz4", "none")

LIVE_BACKLOG = 64
"""Messages the live server queues per client before it drops the oldest (a slow viewer loses frames,
the pipeline never waits): ~8 frames of every channel; the SDK's default, 1024, is 2 minutes of
frames at 25 fps held in memory for a viewer that fell behind."""


def _missing_sdk(exc: ImportError) -> ConfigError:
    return ConfigError(f"Foxglove output needs the Foxglove SDK: pip install 'perception[foxglove]' ({exc})")


class _ClassesListener:
    """Re-sends the class table when a live client subscribes to it (it is logged once otherwise)."""

    def __init__(self, session: FoxgloveSession) -> None:
        self._session = session

    def on_subscribe(self, client: Any, channel: Any) -> None:
        logger = self._session.logger
        if logger is not None and channel.topic.endswith("/classes"):
            logger.resend_classes()


class FoxgloveSession:
    """One ``foxglove.Context`` with its sinks (an MCAP file, a WebSocket server) and the logger.

    Args:
        mcap_path: the recording to write (None: none).
        server: ``(host, port)`` of the live server (None: none); port 0 takes a free one (:attr:`port`).
        overwrite: replace an existing ``mcap_path``.
        compression: MCAP chunk compression, one of :data:`COMPRESSIONS`.
        with_image: log the input frame.
        calibrations: camera id -> calibration.
    """

    def __init__(self, *, mcap_path: str | Path | None = None, server: tuple[str, int] | None = None,
                 overwrite: bool = False, compression: str = "zstd", with_image: bool = True,
                 calibrations: Mapping[str, CameraCalibrationConfig] | None = None,
                 prefix: str = DEFAULT_PREFIX) -> None:
        if compression not in COMPRESSIONS:
            raise ConfigError(f"unknown MCAP compression {compression!r}; allowed: {', '.join(COMPRESSIONS)}")
        self.mcap_path = None if mcap_path is None else Path(mcap_path)
        self.server_address = server
        self.overwrite = overwrite
        self.compression = compression
        self.with_image = with_image
        self.calibrations = dict(calibrations or {})
        self.prefix = prefix
        self.logger: Any = None
        self.port: int | None = None
        self._writer: Any = None
        self._server: Any = None

    def open(self, classes: Sequence[ClassInfo] = ()) -> None:
        """Create the context, open the MCAP writer and start the server. Raises ConfigError (no SDK,
        an existing file), DataError (the file cannot be created) or TransportError (the port is taken)."""
        try:
            import foxglove
            from foxglove.mcap import MCAPCompression, MCAPWriteOptions

            from perception.outputs.foxglove_log import FoxgloveLogger
        except ImportError as exc:
            raise _missing_sdk(exc) from exc
        context = foxglove.Context()
        try:
            if self.mcap_path is not None:
                refuse_existing(self.mcap_path, overwrite=self.overwrite, what="recording")
                self.mcap_path.parent.mkdir(parents=True, exist_ok=True)
                kind = {"zstd": MCAPCompression.Zstd, "lz4": MCAPCompression.Lz4, "none": None}[self.compression]
                # compression_threads=0: chunks are compressed on the writing thread, so the cost is
                # counted where it is paid, and no extra threads compete with inference on a small CPU
                options = MCAPWriteOptions(compression=kind, compression_threads=0, profile="")
                self._writer = foxglove.open_mcap(self.mcap_path, allow_overwrite=self.overwrite, context=context,
                                                  writer_options=options)
            if self.server_address is not None:
                self._start_server(foxglove, context)
            self.logger = FoxgloveLogger(context=context, prefix=self.prefix, with_image=self.with_image,
                                         calibrations=self.calibrations)
            self.logger.set_classes(classes)
        except (OSError, RuntimeError, ValueError) as exc:  # the SDK reports I/O as RuntimeError/OSError
            self.close()
            raise DataError(f"cannot create the Foxglove recording {self.mcap_path}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _start_server(self, foxglove: Any, context: Any) -> None:
        host, port = self.server_address
        try:
            self._server = foxglove.start_server(name="perception", host=host, port=port, context=context,
                                                 server_listener=_ClassesListener(self),
                                                 message_backlog_size=LIVE_BACKLOG)
        except Exception as exc:  # the SDK raises a RuntimeError subclass for a taken port
            raise TransportError(f"cannot serve Foxglove on {host}:{port}: {exc}") from exc
        self.port = self._server.port
        log.info("Foxglove live on ws://%s:%d (Foxglove: Open connection -> Foxglove WebSocket)", host, self.port)

    def write(self, frame: OutputFrame) -> None:
        self.logger.log(frame)

    def close(self) -> None:
        """Close the channels, finish the MCAP file (its summary and index), stop the server. Idempotent."""
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
        if self._server is not None:
            server, self._server = self._server, None
            server.stop()


class FoxgloveSink:
    """The pipeline sink: each :class:`FrameResult` to the session's recording and live server."""

    name = "foxglove"

    def __init__(self, session: FoxgloveSession) -> None:
        self.session = session
        self.frames = 0
        self.write_s = 0.0
        """Seconds spent in :meth:`write` (encoding and the SDK's logging), for the report at close."""

    def open(self, run: RunContext) -> None:
        self.session.open(run.classes)

    def write(self, result: FrameResult) -> bool:
        t0 = time.perf_counter()
        self.session.write(OutputFrame.from_result(result, now_wall_ns=time.time_ns()))
        self.write_s += time.perf_counter() - t0
        self.frames += 1
        return True

    def close(self, *, reason: Ending = "end") -> None:
        self.session.close()
        if self.frames:
            log.info("foxglove: %d frames, %.2f ms per frame%s", self.frames, self.write_s / self.frames * 1e3,
                     f", recorded to {self.session.mcap_path}" if self.session.mcap_path else "")


def make_sink(config: SinkConfig) -> FoxgloveSink | None:
    out = config.output
    path = Path(out.record) if out.record and out.record_format == "foxglove" else None
    server = out.foxglove_address()
    if path is None and server is None:
        return None
    if path is not None:
        if path.suffix.lower() != ".mcap":
            raise ConfigError(f"'output.record': a Foxglove recording is an .mcap file, got {out.record!r}")
        refuse_existing(path, overwrite=out.overwrite, what="output.record")  # before any process starts
    return FoxgloveSink(FoxgloveSession(mcap_path=path, server=server, overwrite=out.overwrite,
                                        with_image=out.record_image, calibrations=out.calibration))


class FoxgloveRecorder:
    """``perception record --format foxglove``: decoded label messages to an MCAP recording.

    Args:
        path: the ``.mcap`` file to write.
        with_input: also record the preview frames the publisher sends (``.../input``).
        compression: MCAP chunk compression (:data:`COMPRESSIONS`).
        overwrite: replace an existing file.
    """

    def __init__(self, path: str | Path, *, with_input: bool = False, compression: str = "zstd",
                 overwrite: bool = False, calibrations: Mapping[str, CameraCalibrationConfig] | None = None) -> None:
        self.path = Path(path)
        self.with_input = with_input
        self._session = FoxgloveSession(mcap_path=self.path, overwrite=overwrite, compression=compression,
                                        with_image=with_input, calibrations=calibrations)
        self._session.open()

    def write(self, frame: OutputFrame, classes: Sequence[ClassInfo] | None) -> None:
        self._session.logger.set_classes(classes)
        self._session.write(frame)

    def close(self) -> None:
        self._session.close()
