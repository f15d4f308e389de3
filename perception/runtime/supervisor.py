"""Starts, watches and stops the pipeline's processes: a capture per stream, one inference, one post.

The supervisor owns every resource: each stream's shared-memory slots (created here, their names
unlinked as soon as the three stages have mapped them), the channels' control socket, and the child
processes. It maps the configuration onto each stage's frozen settings (the one place that does so),
adds and removes streams (at start, and while running through the control endpoint), and stops
everything on Ctrl-C / SIGTERM, when every stream has ended, or when inference or post-processing fails
(their exit code and message become a :class:`StageError`). A failed stream is reported and the others
go on. Shutdown is bounded: children get ``stop_timeout_s`` to exit, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable

import zmq

from perception.config import PipelineConfig, SourceConfig
from perception.errors import ConfigError, StageError
from perception.modelcard import load_card
from perception.outputs.base import SinkConfig
from perception.runtime import channels, stagekit
from perception.runtime.capture import CaptureSettings, capture_main
from perception.runtime.health import (
    RestartBudget,
    capture_silence,
    hung_core,
    silent_s,
    status_body,
    stream_status,
)
from perception.runtime.infer import InferenceSettings, inference_main
from perception.runtime.metrics import hist_size
from perception.runtime.post import PostSettings, postprocess_main
from perception.runtime.protocol import (
    CORE_BEATS,
    N_COUNTERS,
    STAGE_EXIT_CODES,
    Attached,
    Go,
    Ready,
    RunSummary,
    Slots,
    SourceOpened,
    StageFailed,
    StageReport,
    Status,
    Stop,
    StreamAdded,
    StreamEnded,
    StreamRemoved,
    slot_layout,
)
from perception.runtime.stagekit import StageHandles
from perception.runtime.streams import Stream, StreamTable, describe

log = logging.getLogger(__name__)

CORE_STAGES = ("inference", "postprocess")


class Pipeline:
    """Many streams, one model: capture per stream → batched inference → post-processing and outputs."""

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
        from perception.backends.base import resolve_input_size
        from perception.outputs.registry import make_sinks

        size = config.model.input_size
        self.input_size = resolve_input_size(self.card, tuple(size) if size else None)
        make_sinks(self.sink_config())  # a bad output configuration fails here, before any process starts
        self.pids: dict[str, int] = {}
        self._interrupted = False
        rt = config.runtime
        self.restarts = RestartBudget(limit=rt.max_restarts if rt.restart == "on-failure" else 0,
                                      window_s=rt.restart_window_s)
        """Shared by every restart of the run: a stream's capture, or inference and post-processing."""

    # ------------------------------------------------------------------------ stage settings
    def sink_config(self) -> SinkConfig:
        return SinkConfig(publish=self.config.publish, output=self.config.output)

    def inference_settings(self) -> InferenceSettings:
        return InferenceSettings(model=self.config.model, model_path=str(self.model_path), batch=self.config.batch,
                                 max_age_ms=self.config.runtime.max_age_ms)

    def post_settings(self) -> PostSettings:
        c = self.config
        return PostSettings(model_path=str(self.model_path), postprocess=c.postprocess, tracking=c.tracking,
                            sinks=self.sink_config(), analytics=c.analytics, max_age_ms=c.runtime.max_age_ms)

    def _on_signal(self, signum, frame) -> None:
        self._interrupted = True

    # -------------------------------------------------------------------------------------- run
    def run(self) -> RunSummary:
        """Run until every stream has ended, an interrupt, or a failed core stage.

        Returns the summary (streams that failed are in it, ``state`` ``failed``). Raises
        :class:`StageError` when inference or post-processing failed, or when every stream failed.
        """
        old = signal.signal(signal.SIGINT, self._on_signal), signal.signal(signal.SIGTERM, self._on_signal)
        sources = list(self.config.streams())
        try:
            while True:
                run = _Run(self, sources, restarted=self.restarts.total > 0)
                try:
                    run.start()
                    run.watch()
                    if not self._restart_core(run):
                        return run.finish()
                    sources = [st.source for st in run.streams.active()]
                finally:
                    run.close()
        finally:
            signal.signal(signal.SIGINT, old[0])
            signal.signal(signal.SIGTERM, old[1])

    def _restart_core(self, run: _Run) -> bool:
        """Whether inference or post-processing failed or hung and may be started again (with every stream
        that was still running): ``runtime.restart: on-failure``, within the restart budget."""
        stage = next((st for st in ("inference", "postprocess") if st in run.errors), None)
        active = run.streams.active()
        all_live = bool(active) and all(st.info is not None and st.info.mode == "live" for st in active)
        if stage is None or self._interrupted or not all_live or not self.restarts.allow():
            return False  # (replayed streams would start over: their frames would be published twice)
        log.warning("stage %s failed (%s): starting inference, post-processing and %d stream(s) again (restart %d)",
                    stage, run.errors[stage], len(run.streams.active()), self.restarts.total)
        return True


class _Run:
    """One run's processes, sockets and streams (made by :meth:`Pipeline.run`, released by it)."""

    def __init__(self, pipeline: Pipeline, sources: list[SourceConfig], *, restarted: bool = False) -> None:
        self.p = pipeline
        self.restarted = restarted
        self.cfg = pipeline.config
        self.sources = sources
        self.streams = StreamTable(max_streams=self.cfg.runtime.max_streams)
        self.mp = mp.get_context("spawn")
        self.addresses = channels.Addresses.new()
        self.counters = self.mp.Array("q", self.cfg.runtime.max_streams * N_COUNTERS, lock=False)
        self.beats = self.mp.Array("q", len(CORE_BEATS), lock=False)
        self.hist = self.mp.Array("q", hist_size(self.cfg.runtime.max_streams), lock=False)
        self.handles = StageHandles(addresses=self.addresses, counters=self.counters, beats=self.beats, hist=self.hist,
                                    log_level=logging.getLogger().getEffectiveLevel(), parent_pid=os.getpid())
        self.metrics = None
        self.t_start_ns = time.monotonic_ns()
        self.last_frame: dict[int, tuple[int, int]] = {}
        """Per stream number: (frames published, when that count last changed)."""
        self.ctx = channels.context()
        self.router = channels.socket(self.ctx, zmq.ROUTER, self.addresses.control, bind=True, linger_ms=0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.outbox: dict[str, list] = {}
        """Commands for stages that have not connected yet (sent once they have)."""
        self.control = None
        self.procs: dict[str, mp.Process] = {}
        self.ready: set[str] = set()
        self.errors: dict[str, str] = {}
        self.summary = RunSummary(mode=self.cfg.mode or "replay")
        self.going = False
        self.stop_reason = "stopped"
        self.pending_adds: dict[int, list[bytes]] = {}
        self.progress = None

    # --------------------------------------------------------------------------------- start
    def start(self) -> None:
        from perception.runtime.control import ControlServer
        from perception.runtime.shm import remove_orphans

        for name in remove_orphans():
            log.warning("removed /dev/shm/%s, left by a pipeline that was killed while starting", name)

        if self.cfg.runtime.control:
            self.control = ControlServer(self.ctx, self.cfg.runtime.control)
            log.info("control endpoint %s", self.control.endpoint)
        if self.cfg.runtime.metrics:
            from perception.runtime.metrics import serve

            self.metrics = serve(self, self.cfg.runtime.metrics)
            log.info("Prometheus metrics on http://%s/metrics", self.cfg.runtime.metrics)
        self._spawn("inference", inference_main, self.p.inference_settings())
        self._spawn("postprocess", postprocess_main, self.p.post_settings(), self.p.input_size)
        for source in self.sources:
            # after a restart of inference and post-processing, a live camera may be down just then
            self.add_stream(source, retry_open=self.restarted)

    def _spawn(self, name: str, target, *args) -> mp.Process:
        proc = self.mp.Process(target=target, args=(self.handles, *args), name=f"perception-{name}", daemon=True)
        # started with SIGINT ignored (inherited through exec): a Ctrl-C on the terminal reaches the whole
        # process group, and a child still importing would print a traceback; the supervisor stops them
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            proc.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        self.procs[name] = proc
        self.p.pids[name] = proc.pid
        log.info("started stage %s pid %d", name, proc.pid)
        return proc

    def add_stream(self, source: SourceConfig, *, retry_open: bool = False) -> Stream:
        stream = self.streams.add(source)
        for k in range(N_COUNTERS):
            self.counters[stream.row * N_COUNTERS + k] = 0
        per_row = len(self.hist) // self.cfg.runtime.max_streams
        self.hist[stream.row * per_row:(stream.row + 1) * per_row] = [0] * per_row
        settings = CaptureSettings(stream=stream.number, row=stream.row, source=source, replay=self.cfg.replay,
                                   retry_open=retry_open)
        label = "capture" if stream.number == 0 else f"capture:{stream.camera_id}"
        stream.process = self._spawn(label, capture_main, settings)
        return stream

    def remove_stream(self, stream: Stream, state: str, error: str = "") -> None:
        """Stop its capture (if still running), tell the other stages, free its slots."""
        if not stream.active:
            return
        stream.state, stream.error = state, error
        self._send(f"capture:{stream.number}", Stop(reason="stopped"))
        for stage in CORE_STAGES:
            self._send(stage, StreamRemoved(stream=stream.number))
        stream.release()
        self._record(stream)
        log.info("stream %s %s%s", stream.camera_id, state, f": {error}" if error else "")

    def _record(self, stream: Stream) -> None:
        entry = self.summary.streams.setdefault(stream.camera_id, {})
        entry.update(state=stream.state, uri=stream.source.uri,
                     counters=stagekit.read_counters(self.counters, stream.row))
        if stream.error:
            entry["error"] = stream.error

    # --------------------------------------------------------------------------------- messages
    def _send(self, identity: str, msg) -> None:
        """A command to a stage; kept until the stage has connected (a process that has exited gets none)."""
        if self.outbox.get(identity):
            self.outbox[identity].append(msg)
            return
        try:
            channels.send_to(self.router, identity.encode(), msg)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            if self._alive(identity):
                self.outbox.setdefault(identity, []).append(msg)

    def _flush_outbox(self) -> None:
        for identity in list(self.outbox):
            waiting = self.outbox.pop(identity)
            for i, msg in enumerate(waiting):
                try:
                    channels.send_to(self.router, identity.encode(), msg)
                except zmq.ZMQError:
                    if self._alive(identity):
                        self.outbox[identity] = waiting[i:]
                    break

    def _alive(self, identity: str) -> bool:
        if identity.startswith("capture:"):
            stream = self.streams.get(int(identity.split(":", 1)[1]))
            proc = stream.process if stream is not None else None
        else:
            proc = self.procs.get(identity)
        return proc is not None and proc.exitcode is None

    def _on_message(self, msg) -> None:
        handler = {SourceOpened: self._on_source_opened, Ready: self._on_ready, Attached: self._on_attached,
                   StageFailed: self._on_failed, StreamEnded: self._on_ended,
                   StageReport: self.summary.take}.get(type(msg))
        if handler is not None:
            handler(msg)

    def _on_source_opened(self, msg: SourceOpened) -> None:
        from perception.runtime.shm import SharedSlots

        stream = self.streams.get(msg.stream)
        if stream is None or not stream.active:
            return
        info = stream.info = msg.info
        layout = slot_layout(self.p.card, input_size=self.p.input_size, width=info.width, height=info.height)
        stream.slots = SharedSlots.create(layout=layout, slots=self.cfg.runtime.slots)
        log.info("stream %s: shared memory %s: %d slots for %dx%d frames (%s)", stream.camera_id, stream.slots.name,
                 self.cfg.runtime.slots, info.width, info.height, info.mode)
        desc = stream.slots.descriptor
        self._send(f"capture:{stream.number}", Slots(descriptor=desc))
        added = StreamAdded(stream=stream.number, row=stream.row, camera_id=stream.camera_id, info=info,
                            descriptor=desc)
        for stage in CORE_STAGES:
            self._send(stage, added)

    def _on_ready(self, msg: Ready) -> None:
        if msg.stage == "capture":
            self._on_attached(Attached(stage="capture", stream=msg.stream))
        else:
            self.ready.add(msg.stage)

    def _on_attached(self, msg: Attached) -> None:
        stream = self.streams.get(msg.stream)
        if stream is None or not stream.active:
            return
        stream.attached.add(msg.stage)
        if stream.state == "starting" and len(stream.attached) == 3:
            stream.slots.unlink()  # every stage has mapped it: no kill, however hard, can leak the name
            stream.state = "ready"
            self._answer_add(stream, None)
            if self.going:
                self._go(stream)

    def _go(self, stream: Stream) -> None:
        stream.state = "live"
        self._send(f"capture:{stream.number}", Go())

    def _on_failed(self, msg: StageFailed) -> None:
        if msg.stage != "capture":
            self.errors.setdefault(msg.stage, msg.message)
            return
        stream = self.streams.get(msg.stream)
        if stream is not None and stream.active:
            self._answer_add(stream, msg.message)
            self.remove_stream(stream, "failed", msg.message)

    def _on_ended(self, msg: StreamEnded) -> None:
        stream = self.streams.get(msg.stream)
        if stream is not None and stream.active:
            self.remove_stream(stream, "ended")

    def _answer_add(self, stream: Stream, error: str | None) -> None:
        envelope = self.pending_adds.pop(stream.number, None)
        if envelope is not None and self.control is not None:
            body = {"ok": False, "error": error} if error else {"ok": True, "stream": describe(stream, self.counters)}
            self.control.reply(envelope, body)

    # ------------------------------------------------------------------------------------ watch
    def watch(self) -> None:
        """Until every stream is done, an interrupt, or a failed core stage."""
        t_start = last_status = last_published = time.monotonic()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.control is not None:
            poller.register(self.control.sock, zmq.POLLIN)
        while not self.p._interrupted and not self.errors:
            poller.poll(stagekit.POLL_MS)
            while (got := channels.recv_from(self.router)) is not None:
                self._on_message(got[1])
            self._flush_outbox()
            if self.control is not None:
                self._serve_control()
            self._check_children()
            self._maybe_go()
            if self.going and not self.streams.active():
                self.stop_reason = "end"
                return
            now = time.monotonic()
            self._show_progress()
            if self.going:
                self._watchdog()
            if now - last_published >= 1.0:
                last_published = now
                self._publish_status("running")
            if now - last_status >= self.cfg.runtime.status_interval_s:
                last_status = now
                self._status(now - t_start)

    def _maybe_go(self) -> None:
        """Start streaming once inference and post are ready and every first stream is ready (or done)."""
        if self.going or self.ready != set(CORE_STAGES):
            return
        if any(s.state == "starting" for s in self.streams):
            return
        self.going = True
        for stage in CORE_STAGES:
            self._send(stage, Go())
        for stream in self.streams:
            if stream.state == "ready":
                self._go(stream)
        modes = {s.info.mode for s in self.streams if s.info is not None}
        self.summary.mode = modes.pop() if len(modes) == 1 else ("mixed" if modes else self.summary.mode)
        self.progress = self._progress()

    def _check_children(self) -> None:
        for name, proc in list(self.procs.items()):
            code = proc.exitcode
            if code is None or code == 0:
                continue
            why = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            stream = next((s for s in self.streams if s.process is proc), None)
            del self.procs[name]
            if stream is None:
                self.errors.setdefault(name, why)
            elif stream.active:
                self._answer_add(stream, why)
                self._restart_stream(stream, why)

    def _restart_stream(self, stream: Stream, why: str) -> None:
        """A stream's capture died or hung: start it again (``runtime.restart``, within the budget), else
        the stream has failed; the other streams go on either way."""
        live = stream.info is not None and stream.info.mode == "live"  # a replay would start over: duplicates
        if stream.state != "live" or not live or not self.p.restarts.allow():
            self.remove_stream(stream, "failed", why)
            return
        self.remove_stream(stream, "restarting", why)
        again = self.add_stream(stream.source, retry_open=True)
        again.restarts = stream.restarts + 1
        log.warning("stream %s: capture %s; started again (restart %d)", stream.camera_id, why, again.restarts)

    def _watchdog(self) -> None:
        """Declare hung what has shown no sign of life for ``runtime.watchdog_s``."""
        limit, now = self.cfg.runtime.watchdog_s, time.monotonic_ns()
        hung = hung_core(self.beats, limit, now)
        if hung is not None:
            stage, quiet = hung
            self.errors.setdefault(stage, f"made no progress for {quiet:.1f} s (hung; runtime.watchdog_s {limit:g})")
            return
        for stream in self.streams.active():
            quiet = capture_silence(self.counters, stream, now)
            if stream.state == "live" and quiet > limit:
                if stream.process is not None and stream.process.is_alive():
                    stream.process.kill()
                self._restart_stream(stream, f"made no progress for {quiet:.1f} s (hung)")

    def _publish_status(self, state: str) -> None:
        """``<topic>/status`` (through post-processing's publisher), once a second."""
        now = time.monotonic_ns()
        streams = []
        for stream in self.streams:
            published = stagekit.read_counters(self.counters, stream.row)["published"]
            last = self.last_frame.get(stream.number)
            if last is None or last[0] != published:
                self.last_frame[stream.number] = last = (published, now if published else 0)
            if stream.active or stream.state in ("failed", "ended", "removed"):
                streams.append(stream_status(stream, self.counters, now, last[1] or None))
        stages = {st: {"alive": st in self.procs and self.procs[st].is_alive(),
                       "silent_s": round(silent_s(int(self.beats[i]), now), 3)} for st, i in CORE_BEATS.items()}
        body = status_body(state=state, uptime_s=(now - self.t_start_ns) / 1e9, restarts=self.p.restarts.total,
                           streams=streams, stages=stages)
        self.last_status = body
        self._send("postprocess", Status(body=body))

    def _serve_control(self) -> None:
        from perception.runtime.commands import handle_request

        for envelope, req in self.control.requests():
            reply = handle_request(self, envelope, req)
            if reply is not None:
                self.control.reply(envelope, reply)

    # ------------------------------------------------------------------------------- reporting
    def _progress(self):
        lengths = [s.info.length for s in self.streams if s.info and s.info.mode == "replay"]
        if not self.cfg.runtime.progress or not lengths or not sys.stderr.isatty():
            return None  # logs and CI get the summary line, not a redrawn bar
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        total = None if None in lengths or any(s.source.loop for s in self.streams) else sum(lengths)
        return tqdm(total=total, unit="frame", desc="published", leave=True, dynamic_ncols=True, mininterval=0.5)

    def _published(self) -> int:
        rows = {s.row for s in self.streams}
        return sum(stagekit.read_counters(self.counters, r)["published"] for r in rows)

    def _show_progress(self) -> None:
        if self.progress is not None:
            n = self._published()
            if n != self.progress.n:
                self.progress.update(n - self.progress.n)

    def _status(self, elapsed: float) -> None:
        per = {s.camera_id: {"state": s.state, **stagekit.read_counters(self.counters, s.row)}
               for s in self.streams.active()}
        c = {"published": self._published(), "streams": per}
        c["fps"] = round(c["published"] / elapsed, 2) if elapsed > 0 else 0.0
        log.info("status: %s", c)
        if self.p.on_status:
            self.p.on_status(c)

    # ------------------------------------------------------------------------------------ finish
    def finish(self) -> RunSummary:
        """Stop every stage, collect post-processing's report, and say how the run went."""
        reason = "stopped" if (self.p._interrupted or self.errors) else self.stop_reason
        self._stop_all(reason)
        for stream in self.streams:
            if stream.active:
                self.remove_stream(stream, "ended" if reason == "end" else "stopped")
        s = self.summary
        s.counters = _totals(self.counters, {st.row for st in self.streams})
        if s.seconds > 0 and s.frames > 1:
            s.fps = (s.frames - 1) / s.seconds
        s.interrupted = self.p._interrupted
        if self.errors:
            stage = next(st for st in STAGE_EXIT_CODES if st in self.errors)
            raise StageError(self.errors[stage], stage=stage, exit_code=STAGE_EXIT_CODES[stage])
        failed = [st for st in self.streams if st.state == "failed"]
        if failed and len(failed) == len(list(self.streams)):
            msg = failed[0].error if len(failed) == 1 else "; ".join(f"{f.camera_id}: {f.error}" for f in failed)
            raise StageError(msg, stage="capture", exit_code=STAGE_EXIT_CODES["capture"])
        return s

    def _stop_all(self, reason: str) -> None:
        """Stop captures, then inference, then post-processing (so its report covers every frame)."""
        deadline = time.monotonic() + self.cfg.runtime.stop_timeout_s
        for stream in self.streams:
            self._send(f"capture:{stream.number}", Stop(reason=reason))
        self._send("inference", Stop(reason=reason))
        self._send("postprocess", Stop(reason=reason))
        post = self.procs.get("postprocess")
        while post is not None and post.is_alive() and time.monotonic() < deadline:
            self._flush_outbox()
            if self.router.poll(stagekit.POLL_MS):
                while (got := channels.recv_from(self.router)) is not None:
                    self._on_message(got[1])
        while (got := channels.recv_from(self.router)) is not None:
            self._on_message(got[1])

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        self._shutdown()
        for stream in self.streams:
            stream.release()
        if self.control is not None:
            self.control.close()
        if self.metrics is not None:
            self.metrics.shutdown()
            self.metrics.server_close()
        channels.close(self.router, self.ctx)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.cfg.runtime.stop_timeout_s
        procs = [p for p in self.p_all_procs() if p is not None]
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                log.warning("stage %s did not stop in time; terminating", p.name)
                p.terminate()
                p.join(timeout=0.5)
            if p.is_alive():
                p.kill()
                p.join(timeout=0.5)

    def p_all_procs(self) -> list:
        return [*self.procs.values(), *(s.process for s in self.streams if s.process not in self.procs.values())]


def _totals(counters, rows: set[int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in rows:
        for k, v in stagekit.read_counters(counters, r).items():
            total[k] = total.get(k, 0) + v
    return total
