"""Synthetic street scenes with exact per-frame ground truth, for testing tracking and the pipeline.

What it models
    A camera in a *stopped* car looking down a straight street: sky, buildings with windows on both
    sides, trees, a fence, poles and signs, a road in perspective with lane markings and a pavement on
    each side, textured and with per-frame sensor noise. Things move across the view: cars (box-like
    side views with windows and wheels), pedestrians (swinging legs) and bicyclists, each at its own
    constant image-plane velocity, in both directions, at different distances (their size follows the
    perspective of the row their base stands on). Nearer things (base lower in the image) hide farther
    ones, so objects cross and occlude each other; a few static poles/signs nearer than everything hide
    whatever passes behind them. Things enter at the left/right edges and leave at the other side; each
    new object gets a new id (ids are never reused).

    Ground truth per frame is exact: the CamVid class of every pixel, the id of the object every thing
    pixel belongs to, and per visible object its visible box, visible area, full (unoccluded,
    unclipped) area and true velocity.

What it does not model
    Ego-motion (the background is static), perspective foreshortening of motion (velocities are constant
    in the image plane), objects moving towards or away from the camera along the road, lighting changes,
    motion blur, lens distortion, camera shake, shadows, or interaction between objects (they pass through
    each other, only the drawing order tells who is in front). It is a tool to test IDs and masks, not to
    train a segmentation network.

Random access
    Every object's whole life (entry frame, exit frame, start position, velocity, look) is planned at
    construction from the seed; :meth:`SceneSequence.frame` computes positions at frame ``i`` in closed
    form and renders only the pixels of that frame, so ``frame(i)`` equals the ``i``-th frame of an
    iteration and costs the same for any ``i``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

import cv2
import numpy as np

from perception.errors import ConfigError
from perception.sim.background import BICYCLIST, CAR, PEDESTRIAN, Background, render_background
from perception.sim.things import BASE_ASPECT, BASE_HEIGHT, Look, draw_thing

THING_CLASSES: tuple[int, int, int] = (CAR, PEDESTRIAN, BICYCLIST)
"""CamVid ids of the classes the generator moves around (Car, Pedestrian, Bicyclist)."""

_NOISE_MARGIN = 32
"""Sensor noise is one pre-drawn image this many pixels larger than the frame each way; frame ``i`` uses
the crop at an offset drawn for ``i`` (33² distinct patterns). Keeps per-frame noise at one saturating
add and subtract (< 1 ms) and its memory at about two frames."""

_MAX_IDS = 65535
"""Instance maps are uint16: at most this many objects per sequence."""


def _frame_hash(seed: int, num_frames: int) -> np.ndarray:
    """uint64[num_frames, 2] pseudo-random words for frames 0..num_frames-1 (SplitMix64 of (seed, i, k)).

    Pure function of ``(seed, i)``: frame ``i`` gets the same words whatever the sequence length.
    """
    with np.errstate(over="ignore"):
        i = np.arange(num_frames, dtype=np.uint64)[:, None] * np.uint64(2) + np.arange(2, dtype=np.uint64)
        z = i + np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass(frozen=True, kw_only=True)
class SceneConfig:
    """Everything that shapes a generated sequence. Same config (seed included) → same pixels.

    Speeds are in frame widths per second *at perspective scale 1* (a thing standing on the bottom row
    of the frame); a thing standing halfway between horizon and bottom moves half as many pixels.
    """

    width: int = 960
    """Frame width in pixels."""
    height: int = 540
    """Frame height in pixels."""
    num_frames: int = 300
    """Frames in the sequence."""
    fps: float = 15.0
    """Frame rate; frame ``i`` is at ``i / fps`` seconds."""
    num_objects: int = 8
    """Object slots. Each slot holds one thing at a time and spawns a new one (new id) some time after the
    previous one left, so about this many things are in view at once. More → more occlusions."""
    seed: int = 0
    """Seed of every random choice (layout, objects, noise)."""
    class_weights: tuple[float, float, float] = (0.5, 0.3, 0.2)
    """Relative frequency of cars, pedestrians and bicyclists among spawned objects."""
    car_speed: tuple[float, float] = (0.35, 0.9)
    """Range of car speeds (uniform), frame widths per second at scale 1."""
    pedestrian_speed: tuple[float, float] = (0.1, 0.25)
    """Range of pedestrian speeds, frame widths per second at scale 1."""
    bicyclist_speed: tuple[float, float] = (0.2, 0.5)
    """Range of bicyclist speeds, frame widths per second at scale 1."""
    vertical_drift: float = 0.1
    """Pedestrians and bicyclists drift up/down while crossing by up to this fraction of the ground's
    height (horizon → bottom row); cars keep their lane. More drift → more depth-order changes."""
    ground_band: tuple[float, float] = (0.22, 0.9)
    """Where things stand: their base row as a fraction of the way from the horizon (0) to the bottom row
    (1). Also their perspective scale. Lower values → smaller, farther things."""
    size_jitter: float = 0.12
    """Per-object size factor drawn uniformly in [1 - size_jitter, 1 + size_jitter]."""
    respawn_delay_s: tuple[float, float] = (0.0, 2.0)
    """Seconds (uniform range) a slot stays empty after its object left before the next one enters."""
    start_inside: bool = True
    """The first object of every slot starts at a random place inside the view (frame 0 is not empty);
    with False they enter from the edges like every later one."""
    num_occluders: int = 2
    """Static poles/signs on the pavements, nearer than every moving thing."""
    horizon: float = 0.42
    """Row of the horizon (vanishing point) as a fraction of the frame height."""
    noise_sigma: float = 4.0
    """Standard deviation of the per-frame sensor noise, grey levels (0 = none)."""

    def __post_init__(self) -> None:
        self._check_counts()
        self._check_ranges()

    def _bad(self, name: str, why: str) -> ConfigError:
        return ConfigError(f"scene config: {name}={getattr(self, name)!r} is invalid: {why}")

    def _check_counts(self) -> None:
        """Frame size, length, rate, object and occluder counts, seed."""
        for name in ("width", "height"):
            if not isinstance(getattr(self, name), int) or not 32 <= getattr(self, name) <= 8192:
                raise self._bad(name, "must be an integer number of pixels in [32, 8192]")
        if not isinstance(self.num_frames, int) or self.num_frames < 1:
            raise self._bad("num_frames", "must be an integer >= 1")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise self._bad("fps", "must be a finite number > 0")
        if not isinstance(self.num_objects, int) or not 0 <= self.num_objects <= 1000:
            raise self._bad("num_objects", "must be an integer in [0, 1000]")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise self._bad("seed", "must be an integer >= 0")
        if not isinstance(self.num_occluders, int) or not 0 <= self.num_occluders <= 20:
            raise self._bad("num_occluders", "must be an integer in [0, 20]")

    def _check_ranges(self) -> None:
        """Class weights, speed and delay ranges, and the fractions (band, drift, jitter, horizon, noise)."""
        if len(self.class_weights) != 3 or min(self.class_weights) < 0 or sum(self.class_weights) <= 0:
            raise self._bad("class_weights", "must be three weights >= 0 (car, pedestrian, bicyclist), not all 0")
        for name in ("car_speed", "pedestrian_speed", "bicyclist_speed", "respawn_delay_s"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1] or not math.isfinite(lo_hi[1]):
                raise self._bad(name, "must be a range (low, high) with 0 <= low <= high")
        for name in ("car_speed", "pedestrian_speed", "bicyclist_speed"):
            if getattr(self, name)[0] <= 0:
                raise self._bad(name, "speeds must be > 0 so every object eventually leaves")
        lo, hi = self.ground_band
        if not 0.05 <= lo <= hi <= 1.0:
            raise self._bad("ground_band", "must be (low, high) with 0.05 <= low <= high <= 1")
        if not 0.0 <= self.vertical_drift <= 1.0:
            raise self._bad("vertical_drift", "must be in [0, 1]")
        if not 0.0 <= self.size_jitter < 1.0:
            raise self._bad("size_jitter", "must be in [0, 1)")
        if not 0.1 <= self.horizon <= 0.8:
            raise self._bad("horizon", "must be in [0.1, 0.8] (fraction of the frame height)")
        if not 0.0 <= self.noise_sigma <= 64.0:
            raise self._bad("noise_sigma", "must be in [0, 64] grey levels")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True, slots=True, kw_only=True)
class GtObject:
    """Ground truth of one object that is at least partly visible in a frame."""

    object_id: int
    """Its id in the frame's instance map; unique in the sequence, never reused (≥ 1)."""
    class_id: int
    """CamVid id: 8 Car, 9 Pedestrian, 10 Bicyclist."""
    box: tuple[int, int, int, int]
    """``(x0, y0, x1, y1)`` of the visible pixels, x1/y1 exclusive."""
    area: int
    """Visible pixels (those carrying its id in the instance map)."""
    visible_fraction: float
    """``area / full_area``: 1 = nothing hidden and nothing outside the frame."""
    full_area: int = 0
    """Pixels of its whole silhouette, ignoring occluders and the frame border."""
    inframe_area: int = 0
    """Pixels of its silhouette inside the frame, ignoring occluders (``area < inframe_area`` ⇔ occluded)."""
    full_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """``(x0, y0, x1, y1)`` of its whole silhouette, ignoring occluders and the frame border (the "amodal"
    box; whole pixels, may extend outside the frame; x1/y1 exclusive)."""
    centroid: tuple[float, float] = (0.0, 0.0)
    """``(x, y)`` mean position of its visible pixels."""
    velocity: tuple[float, float] = (0.0, 0.0)
    """True ``(vx, vy)`` of its box in pixels per second."""
    depth: float = 0.0
    """Row its base stands on in pixels (float); larger = nearer the camera (drawn later, in front)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SceneFrame:
    """One rendered frame and its exact ground truth."""

    index: int
    t_ns: int
    """``round(index / fps * 1e9)``."""
    image: np.ndarray
    """uint8[H, W, 3] BGR."""
    semantic: np.ndarray
    """uint8[H, W] CamVid class ids (0..10)."""
    instances: np.ndarray
    """uint16[H, W] object ids, 0 = no object (stuff or static occluder)."""
    objects: tuple[GtObject, ...]
    """Objects with at least one visible pixel, in drawing order (far to near)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectPlan:
    """An object's whole life, planned at construction."""

    object_id: int
    class_id: int
    first_frame: int
    """First frame in which it exists (it may still be just outside the view)."""
    end_frame: int
    """One past the last frame in which it exists (it has left the view, or the sequence ended)."""
    x: float
    """Centre x of its box at ``first_frame``, pixels."""
    y: float
    """Base row (bottom of its box) at ``first_frame``, pixels."""
    vx: float
    """Pixels per second."""
    vy: float
    """Pixels per second."""
    size: float
    """Size factor (``size_jitter``)."""
    look: Look = field(compare=False)


_Drawn = tuple[ObjectPlan, tuple[float, float, float, float], float, int, int, tuple[int, int, int, int]]
"""What :meth:`SceneSequence._draw_things` records per drawn object for :meth:`SceneSequence._gt_objects`."""


class SceneSequence:
    """A deterministic generated sequence: ``len(seq)`` frames, ``seq.frame(i)`` renders frame ``i``.

    Args:
        config: what to generate (see :class:`SceneConfig`).

    Raises:
        ConfigError: when the configuration would need more than 65535 object ids.
    """

    def __init__(self, *, config: SceneConfig) -> None:
        self.config = config
        c = config
        self._horizon_y = c.horizon * c.height
        self.background: Background = render_background(
            width=c.width,
            height=c.height,
            horizon_y=self._horizon_y,
            rng=np.random.default_rng([c.seed, 1]),
            num_occluders=c.num_occluders,
        )
        self.plans: tuple[ObjectPlan, ...] = self._plan()
        p = self.plans
        self._first = np.array([o.first_frame for o in p], np.int64)
        self._end = np.array([o.end_frame for o in p], np.int64)
        self._x = np.array([o.x for o in p], np.float64)
        self._y = np.array([o.y for o in p], np.float64)
        self._vx = np.array([o.vx for o in p], np.float64)
        self._vy = np.array([o.vy for o in p], np.float64)
        # Static occluders as flat pixel indices (fancy indexing is several times faster than masked
        # copies over their bounding boxes).
        index_parts, image_parts, label_parts = (
            [np.zeros(0, np.int64)],
            [np.zeros((0, 3), np.uint8)],
            [np.zeros(0, np.uint8)],
        )
        for occ in self.background.occluders:
            oy, ox = np.nonzero(occ.mask)
            index_parts.append((oy + occ.y0).astype(np.int64) * c.width + (ox + occ.x0))
            image_parts.append(occ.image[oy, ox])
            label_parts.append(occ.labels[oy, ox])
        self._occ_index = np.concatenate(index_parts)
        self._occ_image = np.concatenate(image_parts)
        self._occ_labels = np.concatenate(label_parts)
        # Sensor noise: one pre-drawn noise image a little larger than the frame; frame i uses a crop at
        # an offset drawn for i (so any frame can be rendered alone, and noise differs between frames).
        noise_rng = np.random.default_rng([c.seed, 3])
        self._noise: tuple[np.ndarray, np.ndarray] | None = None
        self._noise_offsets = np.zeros((c.num_frames, 2), np.uint64)
        if c.noise_sigma > 0:
            n = noise_rng.normal(0.0, c.noise_sigma, (c.height + _NOISE_MARGIN, c.width + _NOISE_MARGIN, 3))
            self._noise = (np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8))
            self._noise_offsets = _frame_hash(c.seed, c.num_frames) % np.uint64(_NOISE_MARGIN + 1)

    # -- geometry -------------------------------------------------------------------------------------

    def scale_at(self, base_y: np.ndarray | float) -> np.ndarray | float:
        """Perspective scale of a thing whose base stands on row ``base_y`` (0 at the horizon, 1 at the
        bottom row; clipped to ≥ 0.02)."""
        h = self.config.height
        return np.maximum((np.asarray(base_y, np.float64) - self._horizon_y) / (h - self._horizon_y), 0.02)

    def _box_size(
        self, class_id: int, size: float, base_y: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(width, height) in pixels of a thing's box when its base is at ``base_y``."""
        height = BASE_HEIGHT[class_id] * self.config.height * size * self.scale_at(base_y)
        return height * BASE_ASPECT[class_id], height

    def _plan(self) -> tuple[ObjectPlan, ...]:
        """Plan every object's life. Each slot has its own random stream, so a longer sequence with the
        same seed starts with exactly the frames of a shorter one (same objects, same ids)."""
        c = self.config
        W, fps, n = float(c.width), float(c.fps), c.num_frames
        ground = c.height - self._horizon_y
        band = (self._horizon_y + c.ground_band[0] * ground, self._horizon_y + c.ground_band[1] * ground)
        weights = np.asarray(c.class_weights, np.float64) / sum(c.class_weights)
        speeds = {CAR: c.car_speed, PEDESTRIAN: c.pedestrian_speed, BICYCLIST: c.bicyclist_speed}
        raw: list[tuple[int, int, dict]] = []  # (first_frame, slot, fields)
        for slot in range(c.num_objects):
            rng = np.random.default_rng([c.seed, 2, slot])
            frame, first_in_slot = 0, True
            while frame < n:
                cls = int(rng.choice(THING_CLASSES, p=weights))
                size = float(rng.uniform(1 - c.size_jitter, 1 + c.size_jitter))
                y = float(rng.uniform(*band))
                scale = float(self.scale_at(y))
                speed = float(rng.uniform(*speeds[cls])) * W * scale
                direction = 1.0 if rng.random() < 0.5 else -1.0
                vx = direction * speed
                w0, _ = self._box_size(cls, size, y)
                if first_in_slot and c.start_inside:
                    x = float(rng.uniform(0.0, W))
                else:
                    x = -float(w0) / 2 if direction > 0 else W + float(w0) / 2
                vy = 0.0
                if cls != CAR and c.vertical_drift > 0:
                    cross_s = (W + 2 * float(w0)) / speed
                    target = np.clip(y + rng.uniform(-1, 1) * c.vertical_drift * ground, *band)
                    vy = float((target - y) / cross_s)
                look = Look(
                    body=tuple(int(v) for v in rng.integers(20, 235, 3)),
                    second=tuple(int(v) for v in rng.integers(20, 160, 3)),
                    skin=tuple(
                        int(v)
                        for v in (rng.integers(60, 140), rng.integers(110, 170), rng.integers(150, 220))
                    ),
                )
                # When does it leave? Vectorised over the rest of the sequence.
                t = np.arange(n - frame, dtype=np.float64) / fps
                xs, ys = x + vx * t, y + vy * t
                ws, _ = self._box_size(cls, size, ys)
                gone = (xs - ws / 2 >= W) if direction > 0 else (xs + ws / 2 <= 0)
                end = frame + int(np.argmax(gone)) if gone.any() else n
                end = max(end, frame + 1)
                raw.append(
                    (
                        frame,
                        slot,
                        dict(
                            class_id=cls,
                            first_frame=frame,
                            end_frame=end,
                            x=x,
                            y=y,
                            vx=vx,
                            vy=vy,
                            size=size,
                            look=look,
                        ),
                    )
                )
                delay = int(round(rng.uniform(*c.respawn_delay_s) * fps))
                frame, first_in_slot = end + delay, False
        if len(raw) > _MAX_IDS:
            raise ConfigError(
                f"scene config: {len(raw)} objects would be spawned but instance maps are uint16 "
                f"(at most {_MAX_IDS} ids); lower num_frames or num_objects"
            )
        raw.sort(key=lambda r: (r[0], r[1]))
        return tuple(ObjectPlan(object_id=k + 1, **r[2]) for k, r in enumerate(raw))

    # -- sequence protocol ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.config.num_frames

    def __iter__(self) -> Iterator[SceneFrame]:
        for i in range(len(self)):
            yield self.frame(i)

    def __getitem__(self, index: int) -> SceneFrame:
        return self.frame(index)

    @property
    def num_ids(self) -> int:
        """How many objects (ids 1..num_ids) the whole sequence contains."""
        return len(self.plans)

    def frame(self, index: int) -> SceneFrame:
        """Render frame ``index`` (negative counts from the end, like a list) into new arrays.

        Raises:
            IndexError: when ``index`` is outside the sequence.
        """
        c = self.config
        image = np.empty((c.height, c.width, 3), np.uint8)
        semantic = np.empty((c.height, c.width), np.uint8)
        instances = np.empty((c.height, c.width), np.uint16)
        i = self._index(index)
        objects = self.render_into(i, image=image, semantic=semantic, instances=instances)
        return SceneFrame(
            index=i,
            t_ns=int(round(i * 1e9 / c.fps)),
            image=image,
            semantic=semantic,
            instances=instances,
            objects=objects,
        )

    def _index(self, index: int) -> int:
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"frame index {index} out of range for a sequence of {n} frames")
        return i

    def render_into(
        self, index: int, *, image: np.ndarray, semantic: np.ndarray, instances: np.ndarray
    ) -> tuple[GtObject, ...]:
        """Render frame ``index`` into caller-owned buffers (no allocation of frame-sized arrays).

        Args:
            index: frame index (negative counts from the end).
            image: uint8[H, W, 3], overwritten with the BGR frame.
            semantic: uint8[H, W], overwritten with class ids.
            instances: uint16[H, W], overwritten with object ids.

        Returns:
            The visible objects' ground truth, far to near.

        Raises:
            IndexError: when ``index`` is outside the sequence.
            ValueError: when a buffer has the wrong shape or dtype (a programming error).
        """
        self._check_buffers(image, semantic, instances)
        i = self._index(index)
        bg = self.background
        np.copyto(image, bg.image)
        np.copyto(semantic, bg.labels)
        instances.fill(0)
        flat_image, flat_semantic, flat_instances = (
            image.reshape(-1, 3),
            semantic.reshape(-1),
            instances.reshape(-1),
        )
        drawn = self._draw_things(i, flat_image, flat_semantic, flat_instances)
        flat_image[self._occ_index] = self._occ_image
        flat_semantic[self._occ_index] = self._occ_labels
        flat_instances[self._occ_index] = 0
        self._add_noise(i, image)
        return self._gt_objects(instances, drawn)

    def _check_buffers(self, image: np.ndarray, semantic: np.ndarray, instances: np.ndarray) -> None:
        """ValueError unless the three frame buffers have this sequence's shapes and dtypes, C-contiguous."""
        c = self.config
        for name, buf, shape, dtype in (
            ("image", image, (c.height, c.width, 3), np.uint8),
            ("semantic", semantic, (c.height, c.width), np.uint8),
            ("instances", instances, (c.height, c.width), np.uint16),
        ):
            if buf.shape != shape or buf.dtype != dtype or not buf.flags.c_contiguous:
                raise ValueError(
                    f"{name} buffer must be a C-contiguous {np.dtype(dtype).name}{list(shape)}, "
                    f"got {buf.dtype.name}{list(buf.shape)}"
                )

    def _draw_things(
        self, i: int, flat_image: np.ndarray, flat_semantic: np.ndarray, flat_instances: np.ndarray
    ) -> list[_Drawn]:
        """Draw the objects alive in frame ``i`` far to near into the flat frame buffers.

        Returns, per object with pixels in the frame: its plan, its whole silhouette's box, its base row,
        the silhouette's area, its area inside the frame, and the frame region ``(x0, y0, x1, y1)`` its
        patch covered (for :meth:`_gt_objects`)."""
        c = self.config
        alive = np.nonzero((self._first <= i) & (i < self._end))[0]
        dt = (i - self._first[alive]) / c.fps
        xs = self._x[alive] + self._vx[alive] * dt
        ys = self._y[alive] + self._vy[alive] * dt
        order = np.lexsort((alive, ys))  # far (small base row) first; ties by id
        drawn: list[_Drawn] = []
        for k in order:
            plan = self.plans[alive[k]]
            x, y = float(xs[k]), float(ys[k])
            w, h = (float(v) for v in self._box_size(plan.class_id, plan.size, y))
            box = (x - w / 2, y - h, x + w / 2, y)
            if box[2] <= 0 or box[0] >= c.width or box[3] <= 0 or box[1] >= c.height:
                continue
            travelled = abs(x - plan.x) / max(h, 1.0)
            patch = draw_thing(
                plan.class_id, box, look=plan.look, facing_left=plan.vx < 0, phase=travelled * 2.2 * math.pi
            )
            ph, pw = patch.mask.shape
            fy0, fx0 = max(patch.y0, 0), max(patch.x0, 0)
            fy1, fx1 = min(patch.y0 + ph, c.height), min(patch.x0 + pw, c.width)
            if fy1 <= fy0 or fx1 <= fx0:
                continue
            py, px = np.nonzero(patch.mask[fy0 - patch.y0 : fy1 - patch.y0, fx0 - patch.x0 : fx1 - patch.x0])
            if len(py) == 0:
                continue
            flat = (py + fy0) * c.width + (px + fx0)
            flat_image[flat] = patch.image[py + (fy0 - patch.y0), px + (fx0 - patch.x0)]
            flat_semantic[flat] = plan.class_id
            flat_instances[flat] = plan.object_id
            rows = np.nonzero(patch.mask.any(axis=1))[0]
            cols = np.nonzero(patch.mask.any(axis=0))[0]
            silhouette_box = (
                float(patch.x0 + cols[0]),
                float(patch.y0 + rows[0]),
                float(patch.x0 + cols[-1] + 1),
                float(patch.y0 + rows[-1] + 1),
            )
            drawn.append(
                (plan, silhouette_box, y, int(np.count_nonzero(patch.mask)), len(py), (fx0, fy0, fx1, fy1))
            )
        return drawn

    def _add_noise(self, i: int, image: np.ndarray) -> None:
        """In place: frame ``i``'s crop of the pre-drawn sensor noise (saturating; none when sigma is 0)."""
        if self._noise is None:
            return
        c = self.config
        dy, dx = (int(v) for v in self._noise_offsets[i])
        window = (slice(dy, dy + c.height), slice(dx, dx + c.width))
        cv2.add(image, self._noise[0][window], dst=image)  # saturating: noise never wraps around
        cv2.subtract(image, self._noise[1][window], dst=image)

    @staticmethod
    def _gt_objects(instances: np.ndarray, drawn: list[_Drawn]) -> tuple[GtObject, ...]:
        """Visible boxes/areas/centroids of the drawn objects, each measured inside its own drawn region
        (an object's pixels cannot lie outside the region its patch covered)."""
        out: list[GtObject] = []
        for plan, box, base_y, full_area, inframe, (x0, y0, x1, y1) in drawn:
            m = instances[y0:y1, x0:x1] == plan.object_id
            rows, cols = np.any(m, axis=1), np.any(m, axis=0)
            area = int(np.count_nonzero(m))
            if area == 0:
                continue
            r = np.nonzero(rows)[0]
            q = np.nonzero(cols)[0]
            yy, xx = np.nonzero(m)
            out.append(
                GtObject(
                    object_id=plan.object_id,
                    class_id=plan.class_id,
                    box=(x0 + int(q[0]), y0 + int(r[0]), x0 + int(q[-1]) + 1, y0 + int(r[-1]) + 1),
                    area=area,
                    visible_fraction=area / full_area,
                    full_area=full_area,
                    inframe_area=inframe,
                    full_box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                    centroid=(x0 + float(xx.mean()), y0 + float(yy.mean())),
                    velocity=(plan.vx, plan.vy),
                    depth=base_y,
                )
            )
        return tuple(out)
