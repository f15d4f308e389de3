"""The three stage loops, each the body of one process.

Every loop: ignores SIGINT (the supervisor owns shutdown and sets ``stop``), polls its input queue
with a short timeout so it notices ``stop`` promptly, reports a failure as one line on the control
queue and exits with its stage's code. No stage blocks forever on another.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.runtime.protocol import EOS, STAGE_EXIT_CODES, Counter, Policy, WorkItem

log = logging.getLogger(__name__)

POLL_S = 0.05


@dataclass
class StageContext:
    """Handles every stage gets (all picklable for the spawn start method)."""

    config: dict
    policy: str
    stop: Any  # multiprocessing.Event
    ready: Any  # multiprocessing.Event set by this stage when initialised
    go: Any  # multiprocessing.Event: every stage ready, start streaming
    control: Any  # multiprocessing.Queue of (kind, stage, payload)
    counters: Any  # multiprocessing.Array('q')
    free: Any  # Queue[int] of free slots
    inbox: Any | None
    outbox: Any | None
    descriptor_box: Any | None = None  # capture only: receives the SlotsDescriptor
    descriptor: Any | None = None
    log_level: int = logging.WARNING
    parent_pid: int = 0


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent (the supervisor) dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not fatal: _get/_wait also notice an orphaned stage
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


_PARENT_PID = os.getppid()


def _orphaned() -> bool:
    return os.getppid() != _PARENT_PID


def _setup(ctx: StageContext, stage: str) -> None:
    global _PARENT_PID  # noqa: PLW0603 (set once per stage process, read by _orphaned)
    _PARENT_PID = ctx.parent_pid
    _die_with_parent()
    if _orphaned():  # the supervisor died before prctl took effect
        sys.exit(STAGE_EXIT_CODES[stage])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=ctx.log_level,
        format=f"%(asctime)s %(levelname).1s {stage} %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _fail(ctx: StageContext, stage: str, exc: BaseException) -> int:
    from perception.errors import PerceptionError

    if isinstance(exc, PerceptionError):
        msg = str(exc)
    else:
        msg = f"{type(exc).__name__}: {exc}"
        log.error("unexpected error in %s:\n%s", stage, traceback.format_exc())
    try:
        ctx.control.put(("error", stage, msg), timeout=1.0)
    except Exception:  # the supervisor is gone; the exit code still tells
        pass
    ctx.stop.set()
    return STAGE_EXIT_CODES[stage]


def _get(q, stop) -> Any | None:
    """Next item, or None once ``stop`` is set (or the supervisor is gone)."""
    while not stop.is_set():
        try:
            return q.get(timeout=POLL_S)
        except queue.Empty:
            if _orphaned():
                stop.set()
    return None


def _wait(event, stop) -> bool:
    while not stop.is_set():
        if event.wait(POLL_S):
            return True
        if _orphaned():
            stop.set()
    return False


def _finish_queues(ctx: StageContext, *qs) -> None:
    """At the end of a stream, the data queues are flushed at exit (their last items, e.g. the final
    frame and the end-of-stream marker, must reach the next stage, which is still reading). When the
    pipeline is stopping, nobody may read them any more: do not wait at exit to flush them. The
    control queue (error message, summary) is always flushed: the supervisor always reads it."""
    if not ctx.stop.is_set():
        return
    for q in qs:
        if q is not None:
            q.cancel_join_thread()


# ----------------------------------------------------------------------------------------- capture
def capture_main(ctx: StageContext) -> None:
    _setup(ctx, "capture")
    code = 0
    slots = source = None
    try:
        from perception.runtime.shm import SharedSlots
        from perception.sources.factory import open_source
        from perception.sources.pacing import Pacer

        cfg = ctx.config["source"]
        source = open_source(
            cfg["uri"],
            camera_id=cfg["camera_id"],
            loop=cfg["loop"],
            fps=cfg["fps"],
            start_s=cfg["start_s"],
            max_frames=cfg["max_frames"],
            width=cfg["width"],
            height=cfg["height"],
            options={**cfg["options"], **({"topics": tuple(cfg["topics"])} if cfg["topics"] else {})},
        )
        ctx.control.put(("dims", "capture", (source.width, source.height, source.fps, source.is_live,
                                             getattr(source, "num_frames", None))))
        desc = _get(ctx.descriptor_box, ctx.stop)
        if desc is None:
            return
        slots = SharedSlots.attach(desc)
        ctx.ready.set()
        if not _wait(ctx.go, ctx.stop):
            return
        speed = ctx.config["replay"]["speed"]
        pacer = Pacer(speed=speed) if (ctx.policy == Policy.EVERY and speed) else None
        latest = ctx.policy == Policy.LATEST
        counters = ctx.counters
        frame_shape = slots.array("frame", 0).shape
        for meta, frame in source:
            if ctx.stop.is_set():
                break
            if pacer is not None:
                pacer.wait(meta.pts_ns)
            slot = _acquire_slot(ctx, latest)
            if slot is None:
                break
            h, w = frame.shape[:2]
            if h <= frame_shape[0] and w <= frame_shape[1]:
                # frames smaller than the slot (another camera of a multi-camera drive) use its top-left
                np.copyto(slots.array("frame", slot)[:h, :w], frame)
            else:
                import cv2

                cv2.resize(frame, (frame_shape[1], frame_shape[0]), dst=slots.array("frame", slot),
                           interpolation=cv2.INTER_AREA)
                h, w = frame_shape[:2]
            now = time.monotonic_ns()
            sent = meta
            if (w, h) != (sent.width, sent.height):
                sent = dataclasses.replace(sent, width=w, height=h)
            if ctx.policy == Policy.EVERY:  # replay: latency counts from release, not from file read
                sent = dataclasses.replace(sent, t_mono_ns=now)
            ctx.outbox.put(WorkItem(slot=slot, meta=sent, t_slot_ns=now,
                                    timings_ms={"capture": (now - sent.t_mono_ns) / 1e6}))
            counters[Counter.CAPTURED] += 1
            counters[Counter.SOURCE_DROPPED] = int(getattr(source, "dropped", 0))
        if not ctx.stop.is_set():
            ctx.outbox.put(EOS)
    except BaseException as exc:
        code = _fail(ctx, "capture", exc)
    finally:
        if source is not None:
            try:
                source.close()
            except Exception:
                log.exception("closing the source failed")
        if slots is not None:
            slots.close()
        _finish_queues(ctx, ctx.outbox)
    sys.exit(code)


def _acquire_slot(ctx: StageContext, latest: bool) -> int | None:
    try:
        return ctx.free.get_nowait()
    except queue.Empty:
        pass
    if latest:  # take back the oldest frame still waiting for inference
        try:
            item = ctx.outbox.get_nowait()
        except queue.Empty:
            item = None
        if isinstance(item, WorkItem):
            ctx.counters[Counter.DROPPED_CAPTURE] += 1
            return item.slot
    return _get(ctx.free, ctx.stop)


# --------------------------------------------------------------------------------------- inference
def inference_main(ctx: StageContext) -> None:
    _setup(ctx, "inference")
    code = 0
    slots = backend = None
    try:
        from perception.backends.factory import open_backend
        from perception.inference import Segmenter
        from perception.runtime.shm import SharedSlots

        m = ctx.config["model"]
        backend = open_backend(
            m["path"], kind=m["backend"], threads=m["threads"], precision=m["precision"],
            input_size=tuple(m["input_size"]) if m["input_size"] else None,
        )
        seg = Segmenter(backend=backend)
        slots = SharedSlots.attach(ctx.descriptor)
        # one warm-up run so the first real frame's latency is not the allocator's
        seg(np.zeros_like(slots.array("frame", 0)))
        ctx.ready.set()
        if not _wait(ctx.go, ctx.stop):
            return
        keys = [k for k in ("semantic_logits", "center_heatmap", "center_offsets")]
        while True:
            item = _get(ctx.inbox, ctx.stop)
            if item is None:
                break
            if item == EOS:
                ctx.outbox.put(EOS)
                break
            t0 = time.monotonic_ns()
            out = seg(slots.array("frame", item.slot)[: item.meta.height, : item.meta.width])
            for k in keys:
                v = getattr(out, k)
                if v is not None:
                    np.copyto(slots.array(k, item.slot), v)
            t1 = time.monotonic_ns()
            item.timings_ms["queue_inference"] = (t0 - item.t_slot_ns) / 1e6
            item.timings_ms["inference"] = (t1 - t0) / 1e6
            item.t_slot_ns = t1
            ctx.outbox.put(item)
            ctx.counters[Counter.INFERRED] += 1
    except BaseException as exc:
        code = _fail(ctx, "inference", exc)
    finally:
        if backend is not None:
            backend.close()
        if slots is not None:
            slots.close()
        _finish_queues(ctx, ctx.outbox, ctx.free)
    sys.exit(code)


# ------------------------------------------------------------------------------------- postprocess
def postprocess_main(ctx: StageContext) -> None:
    _setup(ctx, "postprocess")
    code = 0
    slots = None
    closers: list = []
    try:
        from perception.runtime.post import PostProcessor
        from perception.runtime.shm import SharedSlots

        slots = SharedSlots.attach(ctx.descriptor)
        post = PostProcessor.from_config(ctx.config)
        closers.append(post)
        post.wait_for_subscribers(ctx.stop)
        ctx.ready.set()
        if not _wait(ctx.go, ctx.stop):
            return
        latest = ctx.policy == Policy.LATEST
        latencies: deque[float] = deque(maxlen=100_000)
        t_first = t_last = None
        pending: deque = deque()
        ending = "stopped"
        while True:
            item = pending.popleft() if pending else _get(ctx.inbox, ctx.stop)
            if item is None:
                break
            if item == EOS:
                ending = "end"
                break
            if latest:  # skip to the newest inferred frame; older ones are stale
                while True:
                    try:
                        nxt = ctx.inbox.get_nowait()
                    except queue.Empty:
                        break
                    if nxt == EOS:
                        pending.append(nxt)
                        break
                    ctx.free.put(item.slot)
                    ctx.counters[Counter.DROPPED_POST] += 1
                    item = nxt
            t0 = time.monotonic_ns()
            item.timings_ms["queue_post"] = (t0 - item.t_slot_ns) / 1e6
            sent = post.process(
                meta=item.meta,
                frame=slots.array("frame", item.slot)[: item.meta.height, : item.meta.width],
                outputs={k: slots.array(k, item.slot) for k in post.output_keys},
                timings_ms=item.timings_ms,
            )
            ctx.free.put(item.slot)
            done = time.monotonic_ns()
            latencies.append((done - item.meta.t_mono_ns) / 1e6)
            t_first = t_first or done
            t_last = done
            ctx.counters[Counter.PUBLISHED] += 1
            if not sent:
                ctx.counters[Counter.DROPPED_PUBLISH] += 1
        # subscribers learn the last seq (a dropped final message shows) and why the stream ended;
        # an interrupted run does not wait long for slow subscribers
        post.end_stream(ending, timeout_s=1.0 if ending == "end" else 0.2)
        lat = np.asarray(latencies) if latencies else np.zeros(0)
        ctx.control.put(("summary", "postprocess", {
            "frames": len(latencies),
            "seconds": (t_last - t_first) / 1e9 if t_first and t_last and t_last > t_first else 0.0,
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
            "stage_ms": post.stage_means(),
        }))
    except BaseException as exc:
        code = _fail(ctx, "postprocess", exc)
    finally:
        for c in closers:
            try:
                c.close()
            except Exception:
                log.exception("closing post-processing failed")
        if slots is not None:
            slots.close()
        _finish_queues(ctx, ctx.free)
    sys.exit(code)
