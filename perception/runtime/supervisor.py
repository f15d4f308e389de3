"""Starts, watches and stops the pipeline's processes.

The supervisor owns every resource: the shared-memory slots (created here, unlinked here), the
queues and the child processes. It stops everything on Ctrl-C / SIGTERM, at the end of a replay,
or when any stage fails — the failing stage's exit code and message become a :class:`StageError`.
Shutdown is bounded: children get ``stop_timeout_s`` to exit, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from perception.config import PipelineConfig
from perception.errors import ConfigError, StageError
from perception.modelcard import load_card
from perception.runtime.protocol import N_COUNTERS, STAGE_EXIT_CODES, Counter, Policy
from perception.runtime.stages import StageContext, capture_main, inference_main, postprocess_main

log = logging.getLogger(__name__)

_LIVE_PREFIXES = ("camera:", "/dev/video", "rtsp://", "rtsps://", "http://", "https://", "gst:")


def default_mode(uri: str) -> str:
    return "live" if uri.startswith(_LIVE_PREFIXES) else "replay"


@dataclass
class RunSummary:
    frames: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    mode: str = "replay"


class Pipeline:
    """One camera's pipeline: capture → inference → post-processing/publishing, three processes."""

    def __init__(self, *, config: PipelineConfig, on_status: Callable[[dict], None] | None = None) -> None:
        self.config = config
        self.mode = config.mode or default_mode(config.source.uri)
        self.policy = Policy.EVERY if self.mode == "replay" else Policy.LATEST
        self.on_status = on_status
        model_path = config.model.resolved_path()
        self.card = load_card(model_path)  # fail fast, before any process starts
        if self.card.input.dynamic_size is False and config.model.input_size not in (None, self.card.input_size):
            raise ConfigError(
                f"'model.input_size': {config.model.input_size} but model {self.card.name!r} is fixed at "
                f"{self.card.input_size}"
            )
        if config.output.overlay and Path(config.output.overlay).suffix.lower() not in (".mp4", ".avi", ".mkv"):
            raise ConfigError(f"'output.overlay': expected a .mp4 file name, got {config.output.overlay!r}")
        self._cfg = config.model_dump(mode="json")
        self._cfg["model"]["path"] = str(model_path)
        self._interrupted = False
        self.pids: dict[str, int] = {}

    # ---------------------------------------------------------------------------------- helpers
    def _layout(self, width: int, height: int) -> dict:
        from perception.backends.base import resolve_input_size

        size = self.config.model.input_size
        iw, ih = resolve_input_size(self.card, tuple(size) if size else None)
        layout = {"frame": ((height, width, 3), "uint8")}
        for o in self.card.outputs:
            shape = (o.channels, ih // o.stride, iw // o.stride)
            layout[o.kind] = (shape if o.channels > 1 else shape[1:], "float32")
        return layout

    def _on_signal(self, signum, frame) -> None:
        self._interrupted = True

    # -------------------------------------------------------------------------------------- run
    def run(self) -> RunSummary:
        from perception.runtime.shm import SharedSlots

        ctx = mp.get_context("spawn")
        rt = self.config.runtime
        stop, go = ctx.Event(), ctx.Event()
        control = ctx.Queue()
        counters = ctx.Array("q", N_COUNTERS, lock=False)
        free = ctx.Queue()
        q_cap = ctx.Queue(maxsize=rt.slots + 1)
        q_inf = ctx.Queue(maxsize=rt.slots + 1)
        desc_box = ctx.Queue()
        level = logging.getLogger().getEffectiveLevel()
        ready = {s: ctx.Event() for s in STAGE_EXIT_CODES}
        common = dict(policy=self.policy.value, stop=stop, go=go, control=control, counters=counters, free=free,
                      log_level=level, parent_pid=os.getpid())
        procs: dict[str, mp.Process] = {}
        slots = None
        errors: dict[str, str] = {}
        summary = RunSummary(mode=self.mode)
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        progress = None
        try:
            cap_ctx = StageContext(config=self._cfg, ready=ready["capture"], inbox=None, outbox=q_cap,
                                   descriptor_box=desc_box, **common)
            procs["capture"] = ctx.Process(target=capture_main, args=(cap_ctx,), name="perception-capture", daemon=True)
            procs["capture"].start()
            self.pids["capture"] = procs["capture"].pid
            log.info("started stage capture pid %d", procs["capture"].pid)
            dims = self._wait_for(control, procs, errors, "dims")
            if dims is None:
                return self._finish(summary, procs, stop, errors, control)
            width, height, fps, _is_live, length = dims
            self._cfg["_fps"] = fps or 15.0
            slots = SharedSlots.create(layout=self._layout(width, height), slots=rt.slots)
            log.info("shared memory %s: %d slots for %dx%d frames", slots.name, rt.slots, width, height)
            for i in range(rt.slots):
                free.put(i)
            desc_box.put(slots.descriptor)
            for stage, target, inbox, outbox in (
                ("inference", inference_main, q_cap, q_inf),
                ("postprocess", postprocess_main, q_inf, None),
            ):
                sctx = StageContext(config=self._cfg, ready=ready[stage], inbox=inbox, outbox=outbox,
                                    descriptor=slots.descriptor, **common)
                procs[stage] = ctx.Process(target=target, args=(sctx,), name=f"perception-{stage}", daemon=True)
                procs[stage].start()
                self.pids[stage] = procs[stage].pid
                log.info("started stage %s pid %d", stage, procs[stage].pid)
            # every stage initialised (model loaded, sockets bound) before the first frame flows
            while not all(e.is_set() for e in ready.values()):
                if self._interrupted or self._check_children(procs, errors, control):
                    return self._finish(summary, procs, stop, errors, control)
                time.sleep(0.02)
            # every stage has attached: drop the name so that no kill, however hard, can leak it
            slots.unlink()
            go.set()
            t_start = time.monotonic()
            total = length if (length and not self.config.source.loop) else None
            if self.config.source.max_frames:
                total = min(total or self.config.source.max_frames, self.config.source.max_frames)
            progress = self._progress(total)
            last_status = time.monotonic()
            while True:
                if self._interrupted:
                    summary.interrupted = True
                    break
                self._drain_control(control, errors, summary)
                if self._check_children(procs, errors, control):
                    break
                if procs["postprocess"].exitcode == 0:
                    break
                now = time.monotonic()
                if progress is not None and counters[Counter.PUBLISHED] != progress.n:
                    progress.update(counters[Counter.PUBLISHED] - progress.n)
                if now - last_status >= rt.status_interval_s:
                    last_status = now
                    self._status(counters, now - t_start)
                time.sleep(0.05)
            return self._finish(summary, procs, stop, errors, control, counters=counters)
        finally:
            if progress is not None:
                progress.close()
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            self._shutdown(procs, stop)
            if slots is not None:
                slots.close()
            for q in (control, free, q_cap, q_inf, desc_box):
                q.cancel_join_thread()
                q.close()

    # ---------------------------------------------------------------------------------- internals
    def _progress(self, total: int | None):
        if not self.config.runtime.progress or self.mode != "replay":
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        import sys

        if not sys.stderr.isatty():  # logs and CI get the summary line, not a redrawn bar
            return None
        return tqdm(total=total, unit="frame", desc="published", leave=True, dynamic_ncols=True, mininterval=0.5)

    def _status(self, counters, elapsed: float) -> None:
        c = {k.name.lower(): int(counters[k]) for k in Counter}
        c["fps"] = round(c["published"] / elapsed, 2) if elapsed > 0 else 0.0
        log.info("status: %s", c)
        if self.on_status:
            self.on_status(c)

    def _wait_for(self, control, procs, errors, kind):
        while True:
            if self._interrupted:
                return None
            try:
                k, stage, payload = control.get(timeout=0.05)
            except queue.Empty:
                if self._check_children(procs, errors, control):
                    return None
                continue
            if k == "error":
                errors[stage] = payload
                return None
            if k == kind:
                return payload

    def _drain_control(self, control, errors, summary: RunSummary) -> None:
        while True:
            try:
                k, stage, payload = control.get_nowait()
            except queue.Empty:
                return
            if k == "error":
                errors.setdefault(stage, payload)
            elif k == "summary":
                summary.frames = payload["frames"]
                summary.seconds = payload["seconds"]
                summary.latency_ms_p50 = payload["latency_ms_p50"]
                summary.latency_ms_p99 = payload["latency_ms_p99"]
                summary.stage_ms = payload["stage_ms"]

    def _check_children(self, procs, errors, control) -> bool:
        """True when a stage has failed (exited non-zero or was killed)."""
        for stage, p in procs.items():
            code = p.exitcode
            if code is not None and code != 0:
                deadline = time.monotonic() + 1.0  # its last words may still be in the pipe
                while stage not in errors and time.monotonic() < deadline:
                    self._drain_control(control, errors, RunSummary())
                    if stage not in errors:
                        time.sleep(0.02)
                if stage not in errors:
                    errors[stage] = (f"killed by signal {-code}" if code < 0 else f"exited with code {code}")
                return True
        return False

    def _finish(self, summary, procs, stop, errors, control, counters=None) -> RunSummary:
        stop.set()
        self._shutdown(procs, stop)
        self._drain_control(control, errors, summary)  # the summary a stopped stage sent on its way out
        if counters is not None:
            summary.counters = {k.name.lower(): int(counters[k]) for k in Counter}
        if summary.seconds > 0 and summary.frames > 1:
            summary.fps = (summary.frames - 1) / summary.seconds
        if self._interrupted:
            summary.interrupted = True
        if errors:
            # the first stage that failed on its own, not one that stopped because of it
            order = [s for s in STAGE_EXIT_CODES if s in errors]
            stage = order[0]
            raise StageError(errors[stage], stage=stage, exit_code=STAGE_EXIT_CODES[stage])
        return summary

    def _shutdown(self, procs, stop) -> None:
        stop.set()
        deadline = time.monotonic() + self.config.runtime.stop_timeout_s
        for p in procs.values():
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs.values():
            if p.is_alive():
                log.warning("stage %s did not stop in time; terminating", p.name)
                p.terminate()
                p.join(timeout=0.5)
            if p.is_alive():
                p.kill()
                p.join(timeout=0.5)
