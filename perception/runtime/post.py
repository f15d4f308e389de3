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
import queue
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from perception.config import AnalyticsConfig, PostprocessConfig, TrackingConfig
from perception.modelcard import ModelCard, load_card
from perception.outputs.base import Ending, RunContext, Sink, SinkConfig
from perception.runtime import stagekit
from perception.runtime.protocol import EOS, FRAME_KEY, OUTPUT_KEYS, Counter, Mode, Policy, StageReport, WorkItem
from perception.runtime.stagekit import StageHandles
from perception.types import FrameMeta, FrameResult

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class PostSettings:
    """The configuration the post-processing stage reads."""

    model_path: str
    postprocess: PostprocessConfig
    tracking: TrackingConfig
    sinks: SinkConfig
    fps: float
    """Nominal frame rate of the input (15 when it has none), for video sinks."""
    mode: Mode
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    """Counting lines and zones (none: no counts)."""


class PostProcessor:
    """Full-resolution labels, instances and tracks of one frame, as a :class:`FrameResult`."""

    def __init__(self, *, card: ModelCard, postprocess: PostprocessConfig, tracking: TrackingConfig,
                 analytics: AnalyticsConfig | None = None) -> None:
        self.card = card
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
def open_sinks(settings: PostSettings, card: ModelCard, stop) -> list[Sink]:
    """Build and open every configured sink; on a failure, close those already open and re-raise."""
    from perception.outputs.registry import make_sinks

    run = RunContext(classes=tuple(card.class_infos()), fps=settings.fps, mode=settings.mode, stop=stop)
    opened: list[Sink] = []
    try:
        for sink in make_sinks(settings.sinks):
            sink.open(run)
            opened.append(sink)
    except BaseException:
        close_sinks(opened, "stopped")
        raise
    return opened


def close_sinks(sinks: list[Sink], reason: Ending) -> None:
    for sink in sinks:
        try:
            sink.close(reason=reason)
        except Exception:
            log.exception("closing output %s failed", sink.name)


def postprocess_main(handles: StageHandles, settings: PostSettings, descriptor) -> None:
    stagekit.setup(handles, "postprocess")
    code = 0
    slots = None
    sinks: list[Sink] = []
    ending: Ending = "stopped"
    try:
        from perception.runtime.shm import SharedSlots

        slots = SharedSlots.attach(descriptor)
        card = load_card(settings.model_path)
        post = PostProcessor(card=card, postprocess=settings.postprocess, tracking=settings.tracking,
                             analytics=settings.analytics)
        sinks = open_sinks(settings, card, handles.stop)
        handles.ready.set()
        if stagekit.wait(handles.go, handles.stop):
            loop = PostLoop(handles=handles, slots=slots, post=post, sinks=sinks,
                            latest=Policy.for_mode(settings.mode) == Policy.LATEST)
            ending = loop.run()
            handles.control.put(loop.report())
    except BaseException as exc:
        code = stagekit.fail(handles, "postprocess", exc)
    finally:
        close_sinks(sinks, ending)
        stagekit.close_quietly(slots, "shared memory")
        stagekit.finish_queues(handles, handles.free)
    sys.exit(code)


class PostLoop:
    """Takes inferred slots in order (live: skips to the newest), writes each result to every sink."""

    def __init__(self, *, handles: StageHandles, slots, post: PostProcessor, sinks: list[Sink], latest: bool) -> None:
        self.h = handles
        self.slots = slots
        self.post = post
        self.sinks = sinks
        self.latest = latest
        self.latencies: deque[float] = deque(maxlen=100_000)
        self.t_first: int | None = None
        self.t_last: int | None = None
        self._pending: deque = deque()

    def run(self) -> Ending:
        """Until the end of the stream (``"end"``) or a stop (``"stopped"``)."""
        while True:
            item = self._pending.popleft() if self._pending else stagekit.get(self.h.inbox, self.h.stop)
            if item is None:
                return "stopped"
            if item == EOS:
                return "end"
            if self.latest:
                item = self._newest(item)
            self._process(item)

    def _newest(self, item: WorkItem) -> WorkItem:
        """Skip to the newest inferred frame; older ones are stale (their slots go back, counted)."""
        while True:
            try:
                nxt = self.h.inbox.get_nowait()
            except queue.Empty:
                return item
            if nxt == EOS:
                self._pending.append(nxt)
                return item
            self.h.free.put(item.slot)
            self.h.counters[Counter.DROPPED_POST] += 1
            item = nxt

    def _process(self, item: WorkItem) -> None:
        t0 = time.monotonic_ns()
        item.timings_ms["queue_post"] = (t0 - item.t_slot_ns) / 1e6
        meta = item.meta
        result = self.post.process(
            meta=meta,
            frame=self.slots.array(FRAME_KEY, item.slot)[: meta.height, : meta.width],
            outputs={k: self.slots.array(k, item.slot) for k in self.post.output_keys},
            timings_ms=item.timings_ms,
        )
        dropped = sum(not sink.write(result) for sink in self.sinks)
        self.h.free.put(item.slot)
        done = time.monotonic_ns()
        self.latencies.append((done - meta.t_mono_ns) / 1e6)
        self.t_first = self.t_first or done
        self.t_last = done
        self.h.counters[Counter.PUBLISHED] += 1
        if dropped:
            self.h.counters[Counter.DROPPED_PUBLISH] += 1

    def report(self) -> StageReport:
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(0)
        t0, t1 = self.t_first, self.t_last
        return StageReport(
            frames=len(self.latencies),
            seconds=(t1 - t0) / 1e9 if t0 and t1 and t1 > t0 else 0.0,
            latency_ms_p50=float(np.percentile(lat, 50)) if lat.size else None,
            latency_ms_p99=float(np.percentile(lat, 99)) if lat.size else None,
            stage_ms=self.post.stage_means(),
        )
