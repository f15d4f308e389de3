"""Starts, watches and stops the pipeline's processes.

The supervisor owns every resource: the shared-memory slots (created here, unlinked here), the
queues and the child processes. It maps the configuration onto each stage's own frozen settings (the
one place that does so), stops everything on Ctrl-C / SIGTERM, at the end of a replay, or when any
stage fails — the failing stage's exit code and message become a :class:`StageError`. Shutdown is
bounded: children get ``stop_timeout_s`` to exit, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from perception.config import PipelineConfig
from perception.errors import ConfigError, StageError
from perception.modelcard import load_card
from perception.outputs.base import SinkConfig
from perception.runtime.capture import CaptureSettings, capture_main
from perception.runtime.infer import InferenceSettings, inference_main
from perception.runtime.post import PostSettings, postprocess_main
from perception.runtime.protocol import (
    N_COUNTERS,
    STAGE_EXIT_CODES,
    Counter,
    RunSummary,
    SourceInfo,
    SourceOpened,
    StageFailed,
    StageReport,
    slot_layout,
)
from perception.runtime.stagekit import StageHandles

log = logging.getLogger(__name__)

DEFAULT_FPS = 15.0
"""Frame rate given to video sinks when the input has none (an image folder without ``source.fps``)."""


@dataclass
class _Run:
    """The inter-process resources of one run (created by :meth:`Pipeline.run`, released by it)."""

    ctx: mp.context.SpawnContext
    stop: object
    go: object
    control: object
    counters: object
    free: object
    q_cap: object
    q_inf: object
    desc_box: object
    ready: dict
    procs: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    slots: object = None

    @classmethod
    def create(cls, slots: int) -> _Run:
        ctx = mp.get_context("spawn")
        return cls(
            ctx=ctx, stop=ctx.Event(), go=ctx.Event(), control=ctx.Queue(),
            counters=ctx.Array("q", N_COUNTERS, lock=False), free=ctx.Queue(),
            q_cap=ctx.Queue(maxsize=slots + 1), q_inf=ctx.Queue(maxsize=slots + 1), desc_box=ctx.Queue(),
            ready={s: ctx.Event() for s in STAGE_EXIT_CODES},
        )

    def handles(self, stage: str, inbox, outbox) -> StageHandles:
        return StageHandles(
            stop=self.stop, ready=self.ready[stage], go=self.go, control=self.control, counters=self.counters,
            free=self.free, inbox=inbox, outbox=outbox, log_level=logging.getLogger().getEffectiveLevel(),
            parent_pid=os.getpid(),
        )

    def start(self, stage: str, target, *args) -> None:
        p = self.ctx.Process(target=target, args=args, name=f"perception-{stage}", daemon=True)
        p.start()
        self.procs[stage] = p
        log.info("started stage %s pid %d", stage, p.pid)

    def close_queues(self) -> None:
        for q in (self.control, self.free, self.q_cap, self.q_inf, self.desc_box):
            q.cancel_join_thread()
            q.close()


class Pipeline:
    """One camera's pipeline: capture → inference → post-processing and outputs, three processes."""

    def __init__(self, *, config: PipelineConfig, on_status: Callable[[dict], None] | None = None) -> None:
        self.config = config
        self.on_status = on_status
        self.model_path = config.model.resolved_path()
        self.card = load_card(self.model_path)  # fail fast, before any process starts
        if self.card.input.dynamic_size is False and config.model.input_size not in (None, self.card.input_size):
            raise ConfigError(
                f"'model.input_size': {config.model.input_size} but model {self.card.name!r} is fixed at "
                f"{self.card.input_size}"
            )
        from perception.outputs.registry import make_sinks

        make_sinks(self.sink_config())  # a bad output configuration fails here, before any process starts
        self.source_info: SourceInfo | None = None
        """Known once the capture stage has opened the source."""
        self._interrupted = False
        self.pids: dict[str, int] = {}

    # ------------------------------------------------------------------------ stage settings
    def sink_config(self) -> SinkConfig:
        return SinkConfig(publish=self.config.publish, output=self.config.output)

    def capture_settings(self) -> CaptureSettings:
        c = self.config
        return CaptureSettings(source=c.source, replay=c.replay, mode=c.mode)

    def inference_settings(self) -> InferenceSettings:
        return InferenceSettings(model=self.config.model, model_path=str(self.model_path))

    def post_settings(self, info: SourceInfo) -> PostSettings:
        c = self.config
        return PostSettings(model_path=str(self.model_path), postprocess=c.postprocess, tracking=c.tracking,
                            sinks=self.sink_config(), fps=info.fps or DEFAULT_FPS, mode=info.mode,
                            analytics=c.analytics)

    def _layout(self, info: SourceInfo) -> dict:
        from perception.backends.base import resolve_input_size

        size = self.config.model.input_size
        input_size = resolve_input_size(self.card, tuple(size) if size else None)
        return slot_layout(self.card, input_size=input_size, width=info.width, height=info.height)

    def _on_signal(self, signum, frame) -> None:
        self._interrupted = True

    # -------------------------------------------------------------------------------------- run
    def run(self) -> RunSummary:
        rt = self.config.runtime
        run = _Run.create(rt.slots)
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        try:
            summary = RunSummary(mode=self.config.mode or "replay")
            if self._start(run):
                summary.mode = self.source_info.mode
                self._watch(run, summary)
            return self._finish(run, summary)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            self._shutdown(run)
            if run.slots is not None:
                run.slots.close()
            run.close_queues()

    def _start(self, run: _Run) -> bool:
        """Start every stage and wait until all are ready; False when interrupted or a stage failed."""
        from perception.runtime.shm import SharedSlots

        rt = self.config.runtime
        run.start("capture", capture_main, run.handles("capture", None, run.q_cap), self.capture_settings(),
                  run.desc_box)
        self.pids["capture"] = run.procs["capture"].pid
        opened = self._wait_for_source(run)
        if opened is None:
            return False
        info = self.source_info = opened.info
        run.slots = SharedSlots.create(layout=self._layout(info), slots=rt.slots)
        log.info("shared memory %s: %d slots for %dx%d frames (%s)", run.slots.name, rt.slots, info.width,
                 info.height, info.mode)
        for i in range(rt.slots):
            run.free.put(i)
        run.desc_box.put(run.slots.descriptor)
        desc = run.slots.descriptor
        run.start("inference", inference_main, run.handles("inference", run.q_cap, run.q_inf),
                  self.inference_settings(), desc)
        run.start("postprocess", postprocess_main, run.handles("postprocess", run.q_inf, None),
                  self.post_settings(info), desc)
        self.pids.update({s: p.pid for s, p in run.procs.items()})
        # every stage initialised (model loaded, sockets bound) before the first frame flows
        while not all(e.is_set() for e in run.ready.values()):
            if self._interrupted or self._check_children(run):
                return False
            time.sleep(0.02)
        # every stage has attached: drop the name so that no kill, however hard, can leak it
        run.slots.unlink()
        run.go.set()
        return True

    def _wait_for_source(self, run: _Run) -> SourceOpened | None:
        while not self._interrupted:
            try:
                msg = run.control.get(timeout=0.05)
            except queue.Empty:
                if self._check_children(run):
                    return None
                continue
            if isinstance(msg, StageFailed):
                run.errors[msg.stage] = msg.message
                return None
            if isinstance(msg, SourceOpened):
                return msg
        return None

    def _watch(self, run: _Run, summary: RunSummary) -> None:
        """Until the end of the stream, an interrupt or a failed stage."""
        progress = self._progress(self._expected_frames())
        t_start = last_status = time.monotonic()
        try:
            while not self._interrupted:
                self._drain_control(run, summary)
                if self._check_children(run) or run.procs["postprocess"].exitcode == 0:
                    return
                published = run.counters[Counter.PUBLISHED]
                if progress is not None and published != progress.n:
                    progress.update(published - progress.n)
                now = time.monotonic()
                if now - last_status >= self.config.runtime.status_interval_s:
                    last_status = now
                    self._status(run.counters, now - t_start)
                time.sleep(0.05)
        finally:
            if progress is not None:
                progress.close()

    # ---------------------------------------------------------------------------------- internals
    def _expected_frames(self) -> int | None:
        src = self.config.source
        length = self.source_info.length
        total = length if (length and not src.loop) else None
        if src.max_frames:
            total = min(total or src.max_frames, src.max_frames)
        return total

    def _progress(self, total: int | None):
        if not self.config.runtime.progress or self.source_info.mode != "replay" or not sys.stderr.isatty():
            return None  # logs and CI get the summary line, not a redrawn bar
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=total, unit="frame", desc="published", leave=True, dynamic_ncols=True, mininterval=0.5)

    def _status(self, counters, elapsed: float) -> None:
        c = {k.name.lower(): int(counters[k]) for k in Counter}
        c["fps"] = round(c["published"] / elapsed, 2) if elapsed > 0 else 0.0
        log.info("status: %s", c)
        if self.on_status:
            self.on_status(c)

    def _drain_control(self, run: _Run, summary: RunSummary) -> None:
        while True:
            try:
                msg = run.control.get_nowait()
            except queue.Empty:
                return
            if isinstance(msg, StageFailed):
                run.errors.setdefault(msg.stage, msg.message)
            elif isinstance(msg, StageReport):
                summary.take(msg)

    def _check_children(self, run: _Run) -> bool:
        """True when a stage has failed (exited non-zero or was killed)."""
        for stage, p in run.procs.items():
            code = p.exitcode
            if code is not None and code != 0:
                deadline = time.monotonic() + 1.0  # its last words may still be in the pipe
                while stage not in run.errors and time.monotonic() < deadline:
                    self._drain_control(run, RunSummary())
                    if stage not in run.errors:
                        time.sleep(0.02)
                if stage not in run.errors:
                    run.errors[stage] = (f"killed by signal {-code}" if code < 0 else f"exited with code {code}")
                return True
        return False

    def _finish(self, run: _Run, summary: RunSummary) -> RunSummary:
        self._shutdown(run)
        self._drain_control(run, summary)  # the report a stopped stage sent on its way out
        summary.counters = {k.name.lower(): int(run.counters[k]) for k in Counter}
        if summary.seconds > 0 and summary.frames > 1:
            summary.fps = (summary.frames - 1) / summary.seconds
        if self._interrupted:
            summary.interrupted = True
        if run.errors:
            # the first stage that failed on its own, not one that stopped because of it
            stage = next(s for s in STAGE_EXIT_CODES if s in run.errors)
            raise StageError(run.errors[stage], stage=stage, exit_code=STAGE_EXIT_CODES[stage])
        return summary

    def _shutdown(self, run: _Run) -> None:
        run.stop.set()
        deadline = time.monotonic() + self.config.runtime.stop_timeout_s
        for p in run.procs.values():
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in run.procs.values():
            if p.is_alive():
                log.warning("stage %s did not stop in time; terminating", p.name)
                p.terminate()
                p.join(timeout=0.5)
            if p.is_alive():
                p.kill()
                p.join(timeout=0.5)
