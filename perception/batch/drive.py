"""One drive, start to end, exactly as ``perception run --speed 0`` processes it: decode every frame,
segment it (through whatever :data:`InferFn` is given: a Ray actor pool, or a local model), then labels,
panoptic grouping and tracking per camera in log order, and the recording sinks.

Post-processing of a drive runs in the task that decodes it: the trackers need each camera's frames in
stamp order, and one task per drive gives that order for free (no sort, no shuffle of frames and
logits between nodes). Inference of the chunks is asynchronous, ``window`` chunks ahead, so decoding,
inference and post-processing of one drive overlap, and many drives share the inference actors.

Outputs go to ``<out>/.partial`` and are moved into place when the drive is complete; the manifest
(:mod:`.inputs`) is written last. A drive that fails leaves its reason in ``summary.json``, no manifest.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perception.batch.inputs import SUMMARY, Fingerprint, completed, hash_path, write_manifest
from perception.config import PipelineConfig, resolve_stream
from perception.types import FrameMeta

SubmitFn = Callable[[list[np.ndarray]], Any]
"""Frames of one chunk -> a handle whose result :data:`FetchFn` returns."""
FetchFn = Callable[[Any], list[dict[str, np.ndarray]]]
"""A handle -> each frame's network outputs (``semantic_logits``, and ``center_*`` for panoptic models)."""
ProgressFn = Callable[[int, int | None], None]
"""``(frames done, frames in the drive or None)``, called after every chunk."""

RECORDING = {"foxglove": "recording.mcap", "ros2": "recording"}
"""The recording's name in a drive's folder, by ``output.record_format`` (a ROS 2 bag is a folder)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DriveJob:
    """Everything a drive task needs (it pickles: the configuration is a pydantic model)."""

    input: str
    out_dir: str
    config: PipelineConfig
    config_sha256: str
    model_sha256: str
    chunk: int = 8
    """Frames per inference call (one object in Ray's store)."""
    window: int = 4
    """Chunks in flight to inference before the oldest must come back."""


@dataclass
class DriveResult:
    input: str
    out_dir: str
    status: str = "ok"
    """``ok``, ``skipped`` (complete outputs from an earlier run) or ``failed``."""
    frames: int = 0
    error: str = ""
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def source_section(config: PipelineConfig, drive: str):
    """The ``source`` section a drive runs with: the configuration's, with this drive as its uri,
    replayed once, every frame (``perception run CONFIG --source DRIVE``)."""
    src = config.source.model_copy(update={"uri": drive, "loop": False, "mode": "replay"})
    return resolve_stream(src, index=0, mode="replay")


def run_drive(job: DriveJob, model_path: str, submit: SubmitFn, fetch: FetchFn,
              progress: ProgressFn | None = None) -> DriveResult:
    """Process one drive (or skip it when its outputs are complete); never raises for a bad drive."""
    t0 = time.perf_counter()
    out = Path(job.out_dir)
    result = DriveResult(input=job.input, out_dir=job.out_dir)
    try:
        fingerprint = Fingerprint(hash_path(job.input), job.config_sha256, job.model_sha256)
        done = completed(out, fingerprint)
        if done is not None:
            result.status, result.frames = "skipped", int(done.get("frames", 0))
            return result
        result.summary = _process(job, model_path, submit, fetch, progress, out)
        result.frames = result.summary["frames"]
        _publish(out, result.summary)
        write_manifest(out, fingerprint, frames=result.frames)
    except Exception as exc:  # a bad drive fails alone, with its reason
        result.status, result.error = "failed", _reason(exc)
        _write_failure(out, result, traceback.format_exc())
    finally:
        result.seconds = time.perf_counter() - t0
    return result


def _reason(exc: BaseException) -> str:
    from perception.errors import PerceptionError
    from perception.redact import redact

    text = str(exc) or type(exc).__name__
    return redact(text if isinstance(exc, PerceptionError) else f"{type(exc).__name__}: {text}")


def _publish(out: Path, summary: dict) -> None:
    """Move the finished outputs from ``.partial`` into the drive's folder (replacing older ones)."""
    partial = out / ".partial"
    (partial / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    for item in partial.iterdir():
        dest = out / item.name
        if dest.is_dir():
            shutil.rmtree(dest)
        item.replace(dest)
    partial.rmdir()


def _write_failure(out: Path, result: DriveResult, trace: str) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out / ".partial", ignore_errors=True)
        (out / "manifest.json").unlink(missing_ok=True)
        (out / SUMMARY).write_text(json.dumps({"input": result.input, "status": "failed", "error": result.error,
                                               "traceback": trace}, indent=1) + "\n")
    except OSError:
        pass  # the report still names the reason


# ----------------------------------------------------------------------------------- the drive
class _Frames:
    """The drive's frames as ``perception run``'s capture stage hands them on: copied (resized to the
    stream's size when larger, as a capture slot does) and stamped when they enter (unpaced replay)."""

    def __init__(self, source) -> None:
        self.source = source
        self.size = (source.width, source.height)
        self.decode_s = 0.0

    def chunks(self, n: int):
        it = iter(self.source)
        while True:
            t0 = time.perf_counter()
            chunk = []
            for meta, frame in it:
                chunk.append(self._enter(meta, frame))
                if len(chunk) == n:
                    break
            self.decode_s += time.perf_counter() - t0
            if not chunk:
                return
            yield chunk

    def _enter(self, meta: FrameMeta, frame: np.ndarray) -> tuple[FrameMeta, np.ndarray]:
        sw, sh = self.size
        h, w = frame.shape[:2]
        if h <= sh and w <= sw:
            frame = np.array(frame, copy=True)
        else:
            import cv2

            frame, (w, h) = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA), (sw, sh)
        mono, wall = time.monotonic_ns(), time.time_ns()
        return dataclasses.replace(meta, width=w, height=h, t_mono_ns=mono, t_wall_ns=wall), frame


def _process(job: DriveJob, model_path: str, submit: SubmitFn, fetch: FetchFn, progress: ProgressFn | None,
             out: Path) -> dict:
    from perception.batch.summary import DriveStats
    from perception.outputs.registry import close_sinks
    from perception.runtime.capture import open_configured_source

    cfg = job.config
    partial = out / ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    source = open_configured_source(source_section(cfg, job.input))
    post = sinks = None
    try:
        post, sinks, camera = _open_post(cfg, model_path, source, partial)
        stats = DriveStats(card=post.card, input=job.input, camera=camera)
        frames = _Frames(source)
        total = getattr(source, "num_frames", None)
        inflight: deque = deque()
        for chunk in frames.chunks(job.chunk):
            inflight.append((chunk, submit([f for _, f in chunk])))
            if len(inflight) >= job.window:
                _finish(inflight.popleft(), fetch, post, sinks, stats)
                _report(progress, stats, total)
        while inflight:
            _finish(inflight.popleft(), fetch, post, sinks, stats)
            _report(progress, stats, total)
        stats.decode_s = frames.decode_s
        stats.source_dropped = int(getattr(source, "dropped", 0) or 0)
        close_sinks(sinks, "end")
        sinks = None
        return stats.summary()
    finally:
        if sinks:
            close_sinks(sinks, "stopped")
        source.close()


def _report(progress: ProgressFn | None, stats, total: int | None) -> None:
    if progress is not None:
        progress(stats.frames, total)


def _open_post(cfg: PipelineConfig, model_path: str, source, partial: Path):
    """The post-processor and the recording sinks of one drive, as the post-processing stage makes them."""
    from perception.backends.base import resolve_input_size
    from perception.modelcard import load_card
    from perception.outputs.base import RunContext, SinkConfig
    from perception.runtime.post import DEFAULT_FPS, PostProcessor

    card = load_card(model_path)
    size = cfg.model.input_size
    input_size = resolve_input_size(card, tuple(size) if size else None)
    post = PostProcessor(card=card, postprocess=cfg.postprocess, tracking=cfg.tracking, input_size=input_size,
                         analytics=cfg.analytics)
    camera = source_section(cfg, "-").camera_id
    post.warm(camera, (source.width, source.height))
    output = cfg.output.model_copy(update={
        "record": str(partial / RECORDING[cfg.output.record_format]), "overlay": None, "foxglove": None,
        "overwrite": True, "plugins": ()})
    sink_cfg = SinkConfig(publish=cfg.publish, output=output)
    run = RunContext(classes=tuple(card.class_infos()), fps=DEFAULT_FPS, mode="replay",
                     stream_fps={camera: source.fps or DEFAULT_FPS})
    from perception.outputs.registry import RECORDING_FACTORIES, open_sinks

    sinks = open_sinks(sink_cfg, run, factories=RECORDING_FACTORIES)  # no publisher, no overlay
    return post, sinks, camera


def _finish(item, fetch: FetchFn, post, sinks: list, stats) -> None:
    """Post-process a chunk whose outputs are back, in order, and write every frame to the sinks."""
    chunk, handle = item
    t0 = time.perf_counter()
    outputs = fetch(handle)
    stats.infer_wait_s += time.perf_counter() - t0
    for (meta, frame), out in zip(chunk, outputs):
        t1 = time.perf_counter()
        result = post.process(meta=meta, frame=frame, outputs=out, timings_ms={})
        t2 = time.perf_counter()
        for sink in sinks:
            sink.write(result)
        stats.post_s += t2 - t1
        stats.write_s += time.perf_counter() - t2
        stats.add(result)
