"""The ``synthetic`` source: generated street scenes (see :mod:`perception.sim.scenes`), no camera needed.

Frames are rendered on demand from a :class:`~perception.sim.scenes.SceneSequence` into one reused
buffer (a yielded frame is valid until the next is requested), as fast as the consumer asks; pacing
replays at the recorded rate belongs to the runtime (``pts_ns`` is ``seq / fps``). The ground truth of
every frame is available through :attr:`SyntheticSource.scene`
(``source.scene.frame(meta.frame_index)``), so end-to-end tests can score what the pipeline published.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

import numpy as np

from perception.errors import ConfigError
from perception.sim.scenes import SceneConfig, SceneSequence
from perception.sources.base import Source, make_meta
from perception.types import FrameMeta

_SOURCE_KEYS = ("camera_id", "width", "height", "fps", "num_frames", "seed", "loop")


def _coerce(name: str, value: object, annotation: str) -> object:
    """Turn a string from ``synthetic:key=value`` into the scene field's type; other values pass through."""
    if not isinstance(value, str):
        if isinstance(value, list):
            return tuple(value)
        return value
    text = value.strip()
    try:
        if annotation == "int":
            return int(text)
        if annotation == "float":
            return float(text)
        if annotation == "bool":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if annotation.startswith("tuple[float"):
            return tuple(float(v) for v in text.replace(";", ":").replace("/", ":").split(":"))
    except ValueError as exc:
        raise ConfigError(f"synthetic source: {name}={value!r} is not a valid {annotation}") from exc
    return value


class SyntheticSource(Source):
    """Yields the frames of a generated scene sequence as ``(FrameMeta, uint8[H, W, 3] BGR)``.

    Args:
        camera_id: the id stamped into every :class:`FrameMeta`.
        width, height: frame size in pixels.
        fps: nominal frame rate; ``pts_ns = frame_index / fps`` (in ns).
        num_frames: frames in one pass over the sequence (≥ 1).
        seed: scene seed (same seed → same frames).
        loop: start again at frame 0 after the last frame, forever (the caller closes the source).
            ``seq`` and ``pts_ns`` keep increasing across passes; ``frame_index`` restarts at 0.
        **scene_kwargs: any other :class:`~perception.sim.scenes.SceneConfig` field (``num_objects``,
            ``noise_sigma``, ``car_speed`` …). Strings are converted to the field's type (ranges as
            ``"low:high"``), so the values of ``synthetic:key=value,...`` can be passed as they are.

    Raises:
        ConfigError: an unknown option or a bad value (the message names it and lists the options).
    """

    is_live = False

    def __init__(
        self,
        *,
        camera_id: str = "cam0",
        width: int = 960,
        height: int = 540,
        fps: float = 15.0,
        num_frames: int = 300,
        seed: int = 0,
        loop: bool = False,
        **scene_kwargs: object,
    ) -> None:
        annotations = {f.name: str(f.type) for f in fields(SceneConfig)}
        unknown = sorted(set(scene_kwargs) - set(annotations))
        if unknown:
            allowed = ", ".join(sorted(set(annotations) | set(_SOURCE_KEYS)))
            raise ConfigError(f"synthetic source: unknown option(s) {', '.join(unknown)}; allowed: {allowed}")
        options = {
            "width": width,
            "height": height,
            "fps": fps,
            "num_frames": num_frames,
            "seed": seed,
            **scene_kwargs,
        }
        options = {k: _coerce(k, v, annotations[k]) for k, v in options.items()}
        loop = bool(_coerce("loop", loop, "bool"))
        if isinstance(options["fps"], int):
            options["fps"] = float(options["fps"])
        if not isinstance(camera_id, str) or not camera_id:
            raise ConfigError(f"synthetic source: camera_id={camera_id!r} must be a non-empty string")
        config = SceneConfig(**options)  # validates every value; num_frames >= 1 (so loop never spins empty)
        self.camera_id = camera_id
        self.width = config.width
        self.height = config.height
        self.fps: float | None = float(config.fps)
        self.num_frames = config.num_frames
        self.loop = loop
        self.scene = SceneSequence(config=config)
        """The generated sequence: ``scene.frame(meta.frame_index)`` is a yielded frame's ground truth."""
        # Reused for every frame (the Source protocol lets a frame be overwritten by the next one).
        self._image = np.empty((self.height, self.width, 3), np.uint8)
        self._semantic = np.empty((self.height, self.width), np.uint8)
        self._instances = np.empty((self.height, self.width), np.uint16)
        self._closed = False

    def __iter__(self) -> Iterator[tuple[FrameMeta, np.ndarray]]:
        seq = 0
        period_ns = 1e9 / float(self.scene.config.fps)
        while True:
            for index in range(self.num_frames):
                if self._closed:
                    return
                self.scene.render_into(
                    index, image=self._image, semantic=self._semantic, instances=self._instances
                )
                meta = make_meta(
                    seq=seq,
                    camera_id=self.camera_id,
                    frame_index=index,
                    pts_ns=int(round(seq * period_ns)),
                    width=self.width,
                    height=self.height,
                )
                yield meta, self._image
                seq += 1
            if not self.loop:
                return

    def close(self) -> None:
        """Stop the iteration (an iterator in progress ends at its next frame). Idempotent."""
        self._closed = True

    def __repr__(self) -> str:
        return (
            f"SyntheticSource(camera_id={self.camera_id!r}, {self.width}x{self.height}, fps={self.fps}, "
            f"num_frames={self.num_frames}, loop={self.loop})"
        )
