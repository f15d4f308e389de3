"""Post-processing and publishing of one frame: the body of the post-processing stage.

Maps the configuration to component arguments (the one place that does so for these components),
then per frame: semantic labels at full resolution (nearest / bilinear / refine) → panoptic grouping
→ tracking → ZeroMQ publish → optional overlay video.

State is kept per camera: each camera (topic of a multi-camera drive) has its own tracker (IDs never
jump between cameras) and overlay video, and each frame size its own upsampler (preallocated buffers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from perception.errors import ConfigError
from perception.modelcard import ModelCard, load_card
from perception.types import FrameMeta

log = logging.getLogger(__name__)


class OverlayWriter:
    """Writes label colours blended over the frames (and tracked IDs) to an .mp4 (OpenCV, mp4v)."""

    def __init__(self, *, path: str | Path, size: tuple[int, int], fps: float, card: ModelCard, alpha: float) -> None:
        import cv2

        from perception import viz

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
        if not self._writer.isOpened():
            raise ConfigError(f"output.overlay: cannot write a video to {self.path}")
        self.size = size
        self._lut = viz.palette(card.class_infos())
        self._classes = card.class_infos()
        self._alpha = alpha
        self._buf = np.empty((size[1], size[0], 3), dtype=np.uint8)
        self.frames = 0

    def write(self, frame: np.ndarray, labels: np.ndarray, tracks=()) -> None:
        from perception import viz

        img = viz.overlay(frame, labels, self._lut, alpha=self._alpha, out=self._buf)
        if tracks:
            img = viz.draw_tracks(img, tracks, self._classes)
        self._writer.write(img)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class PostProcessor:
    """Full-resolution labels, instances, tracks; publishes and optionally records an overlay."""

    def __init__(
        self,
        *,
        card: ModelCard,
        upsample: str,
        refine_classes: tuple[str, ...],
        panoptic: bool,
        tracker_kwargs: Mapping | None,
        publisher_kwargs: Mapping,
        overlay_path: str | None,
        overlay_alpha: float,
        fps: float,
        wait_for_subscribers: int = 0,
        wait_timeout_s: float = 10.0,
        reid_model: str | None = None,
    ) -> None:
        from perception.transport.publisher import Publisher

        self.card = card
        self._method = upsample
        self._refine_names = tuple(refine_classes)
        self._upsamplers: dict[tuple[int, int], object] = {}
        self.grouper = None
        self._tracker_kwargs = None
        if panoptic and card.has_output("center_heatmap") and card.has_output("center_offsets") and card.thing_ids():
            from perception.postprocess.panoptic import PanopticGrouper

            self.grouper = PanopticGrouper(thing_ids=card.thing_ids(), heatmap_is_logit=False)
            self._tracker_kwargs = dict(tracker_kwargs) if tracker_kwargs is not None else None
        elif panoptic:
            log.info("model %s has no instance outputs: publishing semantic labels only", card.name)
        self._trackers: dict[str, object] = {}
        self.reid = None
        if reid_model and self._tracker_kwargs is not None:
            from perception.tracking.reid import ReIdEmbedder

            self.reid = ReIdEmbedder(model=reid_model)  # a bad model fails here, before the first frame
        self.output_keys = tuple(
            k for k in ("semantic_logits", "center_heatmap", "center_offsets") if self.grouper or k == "semantic_logits"
        )
        self.publisher = Publisher(classes=card.class_infos(), **publisher_kwargs)
        self._overlay_path = Path(overlay_path) if overlay_path else None
        self._overlay_alpha = overlay_alpha
        self._fps = fps
        self._overlays: dict[str, OverlayWriter] = {}
        self._wait_n = wait_for_subscribers
        self._wait_timeout = wait_timeout_s
        self._sums: dict[str, float] = {}
        self._n = 0

    @classmethod
    def from_config(cls, config: Mapping) -> PostProcessor:
        card = load_card(config["model"]["path"])
        t = config["tracking"]
        p = config["publish"]
        return cls(
            card=card,
            upsample=config["postprocess"]["upsample"],
            refine_classes=tuple(config["postprocess"]["refine_classes"]),
            panoptic=config["postprocess"]["panoptic"],
            # every tracking setting but the switch itself is a Tracker keyword
            tracker_kwargs={k: v for k, v in t.items() if k not in ("enabled", "reid_model")} if t["enabled"] else None,
            reid_model=t.get("reid_model"),
            publisher_kwargs={
                "address": p["address"],
                "topic": p["topic"],
                "encoding": p["encoding"],
                "level": p["level"],
                "hwm": p["hwm"],
                "preview": p["preview"],
            },
            overlay_path=config["output"]["overlay"],
            overlay_alpha=config["output"]["overlay_alpha"],
            fps=float(config.get("_fps") or 15.0),
            wait_for_subscribers=p["wait_for_subscribers"],
            wait_timeout_s=p["wait_timeout_s"],
        )

    # ------------------------------------------------------------------------- per-camera state
    def _upsampler(self, size: tuple[int, int]):
        up = self._upsamplers.get(size)
        if up is None:
            from perception.postprocess.upsample import make_upsampler

            up = make_upsampler(self._method, card=self.card, out_size=size, refine_class_names=self._refine_names)
            self._upsamplers[size] = up
        return up

    def _tracker(self, camera_id: str):
        if self._tracker_kwargs is None:
            return None
        tr = self._trackers.get(camera_id)
        if tr is None:
            from perception.tracking.tracker import Tracker

            tr = self._trackers[camera_id] = Tracker(**self._tracker_kwargs)
        return tr

    def _overlay(self, camera_id: str, size: tuple[int, int]) -> OverlayWriter | None:
        if self._overlay_path is None:
            return None
        ov = self._overlays.get(camera_id)
        if ov is None:
            path = self._overlay_path
            if self._overlays:  # the first camera gets the configured name, others a suffixed one
                safe = "".join(c if c.isalnum() else "_" for c in camera_id).strip("_")
                path = path.with_name(f"{path.stem}_{safe}{path.suffix}")
            ov = self._overlays[camera_id] = OverlayWriter(
                path=path, size=size, fps=self._fps, card=self.card, alpha=self._overlay_alpha
            )
            log.info("overlay of camera %s -> %s", camera_id, path)
        return ov

    # ---------------------------------------------------------------------------------- per frame
    def wait_for_subscribers(self, stop) -> None:
        if self._wait_n:
            self.publisher.wait_for_subscribers(self._wait_n, timeout_s=self._wait_timeout, stop=stop)

    def process(self, *, meta: FrameMeta, frame: np.ndarray, outputs: Mapping[str, np.ndarray],
                timings_ms: dict[str, float]) -> bool:
        size = (meta.width, meta.height)
        t0 = time.perf_counter()
        labels = self._upsampler(size)(outputs["semantic_logits"], frame)
        t1 = time.perf_counter()
        timings_ms["upsample"] = (t1 - t0) * 1e3
        instance_map = None
        tracks: list = []
        instances: list = []
        if self.grouper is not None:
            instance_map, instances = self.grouper(
                outputs["semantic_logits"], outputs["center_heatmap"], outputs["center_offsets"], labels
            )
            t2 = time.perf_counter()
            timings_ms["panoptic"] = (t2 - t1) * 1e3
            tracker = self._tracker(meta.camera_id)
            if tracker is not None:
                from perception.tracking.tracker import relabel_instance_map

                # the frame gives the tracker colour appearance (images are BGR uint8[H, W, 3])
                image = frame if frame.ndim == 3 else None
                emb = None
                if self.reid is not None and image is not None:
                    emb = self.reid(image, instance_map, instances)
                    timings_ms["reid"] = (time.perf_counter() - t2) * 1e3
                tracks = tracker.update(instances, meta, instance_map, image, embeddings=emb)
                instance_map = relabel_instance_map(instance_map, tracks)
                timings_ms["tracking"] = (time.perf_counter() - t2) * 1e3
        timings_ms["post"] = (time.perf_counter() - t0) * 1e3
        sent = self.publisher.publish(
            meta=meta, labels=labels, instances=instance_map, image=frame, latencies_ms=timings_ms, tracks=tracks,
            detections=instances,
        )
        overlay = self._overlay(meta.camera_id, size)
        if overlay is not None:
            overlay.write(frame, labels, tracks)
        for k, v in timings_ms.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._n += 1
        return sent

    def stage_means(self) -> dict[str, float]:
        return {k: v / self._n for k, v in self._sums.items()} if self._n else {}

    def end_stream(self, reason: str, *, timeout_s: float) -> bool:
        """Send the end-of-stream message (see :meth:`Publisher.end_stream`)."""
        return self.publisher.end_stream(reason=reason, timeout_s=timeout_s)

    def close(self) -> None:
        for ov in self._overlays.values():
            ov.close()
        self.publisher.close()
