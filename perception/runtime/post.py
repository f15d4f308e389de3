"""The post-processing stage: one :class:`FrameResult` per frame, handed to every sink.

:class:`PostProcessor` maps the configuration to component arguments (the one place that does so for
these components), then per frame: semantic labels at full resolution (nearest / bilinear / refine) →
panoptic grouping → tracking → a :class:`~perception.types.FrameResult`. The stage loop
(:func:`postprocess_main`) takes inferred slots, builds the result and writes it to the sinks
(:mod:`perception.outputs.registry`).

State is kept per camera: each camera (topic of a multi-camera drive) has its own tracker (ids never
jump between cameras), and each frame size its own upsampler (preallocated buffers).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import zmq

from perception.config import AnalyticsConfig, PostprocessConfig, TrackingConfig
from perception.modelcard import ModelCard, load_card
from perception.outputs.base import RunContext, Sink, SinkConfig
from perception.runtime import channels, stagekit
from perception.runtime.lanes import LaneStage
from perception.runtime.metrics import observe
from perception.runtime.protocol import (
    FRAME_KEY,
    OUTPUT_KEYS,
    Counter,
    EndOfStream,
    Ready,
    StageReport,
    Status,
    StreamAdded,
    StreamEnded,
    StreamReport,
    WorkItem,
)
from perception.runtime.stagekit import StageHandles, StageLink
from perception.types import FrameMeta, FrameResult

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class PostSettings:
    """The configuration the post-processing stage reads."""

    model_path: str
    postprocess: PostprocessConfig
    tracking: TrackingConfig
    sinks: SinkConfig
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    """Counting lines and zones (none: no counts)."""
    max_age_ms: float | None = None
    """Live streams: frames older than this are dropped before post-processing (None: never)."""


class PostProcessor:
    """Full-resolution labels, instances and tracks of one frame, as a :class:`FrameResult`."""

    def __init__(self, *, card: ModelCard, postprocess: PostprocessConfig, tracking: TrackingConfig,
                 input_size: tuple[int, int] | None = None, analytics: AnalyticsConfig | None = None) -> None:
        self.card = card
        self._model_grid = input_size or card.input_size
        """``(width, height)`` of the network input (what the outputs' grid is a stride of)."""
        self._method = postprocess.upsample
        self._refine_names = tuple(postprocess.refine_classes)
        self._upsamplers: dict[tuple[int, int], object] = {}
        self.grouper = None
        self._tracking = tracking if tracking.enabled else None
        if postprocess.panoptic and self._has_instances(card):
            from perception.postprocess.panoptic import PanopticGrouper

            self.grouper = PanopticGrouper(thing_ids=card.thing_ids(), heatmap_is_logit=False)
        elif postprocess.panoptic:
            log.info("model %s has no instance outputs: publishing semantic labels only", card.name)
        self._trackers: dict[str, object] = {}
        self.reid = None
        if tracking.reid_model and self._tracks():
            from perception.tracking.reid import ReIdEmbedder

            self.reid = ReIdEmbedder(model=tracking.reid_model)  # a bad model fails here, before the first frame
        self.output_keys = tuple(k for k in OUTPUT_KEYS if self.grouper or k == "semantic_logits")
        # fixed cameras: motion instances and counts, one state per camera (perception.postprocess.motion,
        # perception.analytics); built here so that a bad class name fails before the first frame
        self._motion_params = _motion_params(postprocess, card)
        self._motion: dict[str, object] = {}
        self._analytics = analytics if analytics is not None and analytics.enabled else None
        self._counters: dict[str, object] = {}
        if self._analytics is not None:
            from perception.analytics import Counter

            Counter(self._analytics, card.class_infos())
        self._sums: dict[str, float] = {}
        self._n = 0

    @staticmethod
    def _has_instances(card: ModelCard) -> bool:
        return card.has_output("center_heatmap") and card.has_output("center_offsets") and bool(card.thing_ids())

    def _tracks(self) -> bool:
        return (self.grouper is not None or self._motion_params is not None) and self._tracking is not None

    # ------------------------------------------------------------------------- per-camera state
    def _upsampler(self, size: tuple[int, int]):
        up = self._upsamplers.get(size)
        if up is None:
            from perception.postprocess.upsample import make_upsampler

            up = make_upsampler(self._method, card=self.card, out_size=size, refine_class_names=self._refine_names)
            self._upsamplers[size] = up
        return up

    def _tracker(self, camera_id: str):
        tr = self._trackers.get(camera_id)
        if tr is None:
            from perception.tracking.tracker import Tracker

            tr = self._trackers[camera_id] = Tracker(self._tracking.params())
        return tr

    # ---------------------------------------------------------------------------------- per frame
    def process(self, *, meta: FrameMeta, frame: np.ndarray, outputs: Mapping[str, np.ndarray],
                timings_ms: dict[str, float]) -> FrameResult:
        """One frame's result. ``frame`` (BGR, full resolution) and ``outputs`` are borrowed slot views."""
        t0 = time.perf_counter()
        labels = self._upsampler((meta.width, meta.height))(outputs["semantic_logits"], frame)
        t1 = time.perf_counter()
        timings_ms["upsample"] = (t1 - t0) * 1e3
        instance_map, instances, tracks, analytics = None, (), (), None
        if self.grouper is not None:
            instance_map, found = self.grouper(
                outputs["semantic_logits"], outputs["center_heatmap"], outputs["center_offsets"], labels
            )
            instances = tuple(found)
        t2 = time.perf_counter()
        if self.grouper is not None:
            timings_ms["panoptic"] = (t2 - t1) * 1e3
        if self._motion_params is not None and frame.ndim == 3:
            instance_map, found, labels = self._motion_model(meta.camera_id)(
                frame, outputs["semantic_logits"], labels, instance_map, instances)
            instances = tuple(found)
            t2, t_motion = time.perf_counter(), t2
            timings_ms["motion"] = (t2 - t_motion) * 1e3
        if instance_map is not None and self._tracks():
            tracks = self._track(meta, frame, instance_map, instances, timings_ms, t2)
        if self._analytics is not None:
            analytics = self._counter(meta.camera_id).update(
                size=(meta.width, meta.height), tracks=tracks if self._tracks() else None,
                instances=instances, camera=meta.camera_id)
        timings_ms["post"] = (time.perf_counter() - t0) * 1e3
        for k, v in timings_ms.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._n += 1
        return FrameResult(meta=meta, labels=labels, instance_map=instance_map, instances=instances,
                           tracks=tracks, latencies_ms=timings_ms, frame=frame, analytics=analytics)

    def _motion_model(self, camera_id: str):
        m = self._motion.get(camera_id)
        if m is None:
            from perception.postprocess.motion import MotionModel

            m = self._motion[camera_id] = MotionModel(self._motion_params, thing_ids=self.card.thing_ids())
        return m

    def _counter(self, camera_id: str):
        c = self._counters.get(camera_id)
        if c is None:
            from perception.analytics import Counter

            c = self._counters[camera_id] = Counter(self._analytics, self.card.class_infos())
        return c

    def _track(self, meta, frame, instance_map, instances, timings_ms, t_start: float) -> tuple:
        # the frame gives the tracker colour appearance (images are BGR uint8[H, W, 3])
        image = frame if frame.ndim == 3 else None
        emb = None
        if self.reid is not None and image is not None:
            emb = self.reid(image, instance_map, instances)
            timings_ms["reid"] = (time.perf_counter() - t_start) * 1e3
        tracks = self._tracker(meta.camera_id).update(instances, meta, instance_map, image, embeddings=emb)
        timings_ms["tracking"] = (time.perf_counter() - t_start) * 1e3
        return tuple(tracks)

    def stage_means(self) -> dict[str, float]:
        return {k: v / self._n for k, v in self._sums.items()} if self._n else {}

    def warm(self, camera_id: str, size: tuple[int, int]) -> None:
        """Build and run once everything a stream of this size needs (upsampler buffers, grouping,
        the camera's tracker), on blank input, so that its first real frame pays for none of it."""
        w, h = size
        c = self.card
        frame = np.zeros((h, w, 3), np.uint8)
        sw, sh = self._model_grid
        outputs = {o.kind: np.zeros((o.channels, sh // o.stride, sw // o.stride) if o.channels > 1
                                    else (sh // o.stride, sw // o.stride), np.float32) for o in c.outputs}
        labels = self._upsampler(size)(outputs["semantic_logits"], frame)
        if self.grouper is not None:
            self.grouper(outputs["semantic_logits"], outputs["center_heatmap"], outputs["center_offsets"], labels)
            if self._tracks():
                self._tracker(camera_id)

    def forget(self, camera_id: str) -> None:
        """Drop a removed stream's per-camera state (tracker, background model, counts)."""
        for state in (self._trackers, self._motion, self._counters):
            state.pop(camera_id, None)


def _motion_params(postprocess: PostprocessConfig, card: ModelCard):
    """``postprocess.motion``/``background`` as :class:`~perception.postprocess.motion.MotionParams`, or None (off)."""
    if postprocess.motion == "off":
        return None
    from perception.errors import ConfigError, ModelCardError
    from perception.postprocess.motion import MotionParams

    bg = postprocess.background
    ids = []
    for name in bg.classes:
        try:
            cid = card.class_id(name)
        except ModelCardError as exc:
            raise ConfigError(f"'postprocess.background.classes': {exc}") from exc
        if cid not in card.thing_ids():
            raise ConfigError(f"'postprocess.background.classes': {name!r} is not a thing class of the model")
        ids.append(cid)
    fields = bg.model_dump(exclude={"classes"})
    return MotionParams(method=postprocess.motion, class_ids=tuple(ids), **fields)


# ------------------------------------------------------------------------------------- the stage
class _StopFlag:
    """``is_set()`` over the stage's link, for sinks that wait in ``open`` (:attr:`RunContext.stop`)."""

    def __init__(self, link: StageLink) -> None:
        self._link = link

    def is_set(self) -> bool:
        return self._link.check_stop()


def postprocess_main(handles: StageHandles, settings: PostSettings, input_size: tuple[int, int]) -> None:
    from perception.outputs.registry import close_sinks, open_sinks

    stagekit.setup(handles, "postprocess", "postprocess")
    code = 0
    link = stage = None
    sinks: list[Sink] = []
    try:
        link = StageLink(handles, "postprocess", "postprocess")
        card = load_card(settings.model_path)
        post = PostProcessor(card=card, postprocess=settings.postprocess, tracking=settings.tracking,
                             input_size=input_size, analytics=settings.analytics)
        run = RunContext(classes=tuple(card.class_infos()), fps=DEFAULT_FPS, mode="replay", stop=_StopFlag(link),
                         stream_fps={})
        sinks = open_sinks(settings.sinks, run)
        stage = PostStage(handles=handles, link=link, post=post, sinks=sinks, run=run, max_age_ms=settings.max_age_ms)
        link.send(Ready(stage="postprocess"))
        stage.run()
        close_sinks(sinks, "end" if link.stop_reason == "end" else "stopped")
        sinks = []
        link.send(stage.report())
    except BaseException as exc:
        code = stagekit.fail(link, "postprocess", exc)
    finally:
        close_sinks(sinks, "stopped")
        stagekit.close_quietly(stage, "the post-processing stage")
        stagekit.close_quietly(link, "the control link")
    sys.exit(code)


DEFAULT_FPS = 15.0
"""Frame rate given to video sinks for a stream whose input has none (an image folder without ``fps``)."""


@dataclass
class _Lane:
    """One stream as post-processing sees it."""

    row: int
    camera_id: str
    live: bool
    slots: object
    free: zmq.Socket
    latencies: deque = field(default_factory=lambda: deque(maxlen=100_000))
    t_first: int | None = None
    t_last: int | None = None


class PostStage(LaneStage):
    """Takes inferred frames in arrival order (a live stream: its newest only), writes each frame's
    result to every sink, and hands the slot back to the stream's capture."""

    stage = "postprocess"

    def __init__(self, *, handles: StageHandles, link: StageLink, post: PostProcessor, sinks: list[Sink],
                 run: RunContext, max_age_ms: float | None = None) -> None:
        super().__init__(handles=handles, link=link, inbox=handles.addresses.post, max_age_ms=max_age_ms)
        self.post = post
        self.sinks = sinks
        self.run_ctx = run
        self.ended: dict[int, _Lane] = {}
        self.pending: deque = deque()

    def other(self, cmd) -> None:
        if isinstance(cmd, Status):
            for sink in self.sinks:
                if hasattr(sink, "write_status"):
                    sink.write_status(cmd.body)

    def add(self, cmd: StreamAdded, slots, free: zmq.Socket) -> None:
        self.lanes[cmd.stream] = _Lane(row=cmd.row, camera_id=cmd.camera_id, live=cmd.info.mode == "live",
                                       slots=slots, free=free)
        self.run_ctx.stream_fps[cmd.camera_id] = cmd.info.fps or DEFAULT_FPS
        self.post.warm(cmd.camera_id, (cmd.info.width, cmd.info.height))

    def forget(self, stream: int, lane: _Lane) -> None:
        self.ended[stream] = lane
        self.post.forget(lane.camera_id)
        self.pending = deque(it for it in self.pending if it.stream != stream)

    def step(self) -> bool:
        if not self.pending:
            return False
        self._handle(self.pending.popleft())
        return True

    def receive(self) -> None:
        while (item := channels.recv(self.inbox, block=False)) is not None:
            lane = self.lanes.get(item.stream) if isinstance(item, (WorkItem, EndOfStream)) else None
            if lane is None:
                continue
            if lane.live and isinstance(item, WorkItem):
                self._drop_older(item.stream, lane)
            self.pending.append(item)

    def _drop_older(self, stream: int, lane: _Lane) -> None:
        """A live stream's newer frame arrived: its frames still waiting here are stale."""
        keep = deque()
        for it in self.pending:
            if it.stream == stream and isinstance(it, WorkItem):
                channels.send(lane.free, it.slot)
                stagekit.bump(self.h.counters, lane.row, Counter.DROPPED_POST)
            else:
                keep.append(it)
        self.pending = keep

    def _handle(self, item) -> None:
        lane = self.lanes[item.stream]
        if isinstance(item, EndOfStream):
            self.link.send(StreamEnded(stream=item.stream))
            return
        if self.stale(lane, item):  # too old to be worth publishing: dropped, counted
            return
        t0 = time.monotonic_ns()
        item.timings_ms["queue_post"] = (t0 - item.t_slot_ns) / 1e6
        meta = item.meta
        result = self.post.process(
            meta=meta,
            frame=lane.slots.array(FRAME_KEY, item.slot)[: meta.height, : meta.width],
            outputs={k: lane.slots.array(k, item.slot) for k in self.post.output_keys},
            timings_ms=item.timings_ms,
        )
        dropped = sum(not sink.write(result) for sink in self.sinks)
        channels.send(lane.free, item.slot)
        done = time.monotonic_ns()
        lane.latencies.append((done - meta.t_mono_ns) / 1e6)
        if self.h.hist is not None:
            observe(self.h.hist, lane.row, item.timings_ms, lane.latencies[-1])
        lane.t_first = lane.t_first or done
        lane.t_last = done
        stagekit.bump(self.h.counters, lane.row, Counter.PUBLISHED)
        if dropped:
            stagekit.bump(self.h.counters, lane.row, Counter.DROPPED_PUBLISH)

    # ------------------------------------------------------------------------------------ report
    def report(self) -> StageReport:
        lanes = [*self.ended.values(), *self.lanes.values()]
        every = np.concatenate([np.asarray(ln.latencies) for ln in lanes]) if lanes else np.zeros(0)
        firsts = [ln.t_first for ln in lanes if ln.t_first]
        lasts = [ln.t_last for ln in lanes if ln.t_last]
        t0, t1 = (min(firsts), max(lasts)) if firsts else (None, None)
        return StageReport(
            frames=int(every.size),
            seconds=(t1 - t0) / 1e9 if t0 and t1 and t1 > t0 else 0.0,
            latency_ms_p50=float(np.percentile(every, 50)) if every.size else None,
            latency_ms_p99=float(np.percentile(every, 99)) if every.size else None,
            stage_ms=self.post.stage_means(),
            streams={ln.camera_id: _stream_report(ln) for ln in lanes},
        )


def _stream_report(lane: _Lane) -> StreamReport:
    lat = np.asarray(lane.latencies)
    t0, t1 = lane.t_first, lane.t_last
    return StreamReport(
        frames=int(lat.size),
        seconds=(t1 - t0) / 1e9 if t0 and t1 and t1 > t0 else 0.0,
        latency_ms_p50=float(np.percentile(lat, 50)) if lat.size else None,
        latency_ms_p99=float(np.percentile(lat, 99)) if lat.size else None,
    )
