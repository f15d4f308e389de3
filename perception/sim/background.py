"""The static street seen from a stopped car: rendered once per scene, pixels and class ids together.

Geometry (image coordinates, ``y`` down): the horizon is the row ``horizon_y``; every receding line
(road edges, kerbs, building bases, roof lines) runs to one vanishing point ``(width / 2, horizon_y)``.
A position along a receding line is the parameter ``u`` in ``[0, 1]``: 0 at the near end (at or beyond
the bottom of the frame), 1 at the vanishing point; vertical sizes of things standing there shrink as
``1 - u``.

Everything here runs once per :class:`~perception.sim.scenes.SceneSequence`, not per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# CamVid class ids (perception.modelcard.CAMVID_CLASSES).
SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)

_SHIFT = 3
"""Fixed-point bits for OpenCV drawing calls (1/8 pixel), so shapes move smoothly at sub-pixel steps."""
_ONE = 1 << _SHIFT


def fixed(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates → int32 fixed-point coordinates for OpenCV's ``shift=_SHIFT``."""
    return np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32)


@dataclass(frozen=True, slots=True)
class Occluder:
    """A static thing standing nearer the camera than every moving object (pole, sign).

    ``image``/``labels``/``mask`` cover the frame rows ``y0:y1`` and columns ``x0:x1``.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    image: np.ndarray
    """uint8[y1-y0, x1-x0, 3] BGR."""
    labels: np.ndarray
    """uint8[y1-y0, x1-x0] CamVid class ids (Pole, SignSymbol)."""
    mask: np.ndarray
    """bool[y1-y0, x1-x0]: which pixels of the box the occluder covers."""


@dataclass(frozen=True, slots=True)
class Background:
    image: np.ndarray
    """uint8[H, W, 3] BGR, textured."""
    labels: np.ndarray
    """uint8[H, W] CamVid class ids (stuff classes only)."""
    occluders: tuple[Occluder, ...]


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """float32[height, width] smooth noise in about [-1, 1] with features ``cell`` pixels large."""
    small = rng.standard_normal((max(2, height // cell + 2), max(2, width // cell + 2))).astype(np.float32)
    return np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) * 0.6, -1.0, 1.0)


def _poly(image: np.ndarray, labels: np.ndarray, points, color, label: int) -> None:
    pts = fixed(points).reshape(-1, 1, 2)
    cv2.fillPoly(image, [pts], color, lineType=cv2.LINE_AA, shift=_SHIFT)
    cv2.fillPoly(labels, [pts], int(label), lineType=cv2.LINE_8, shift=_SHIFT)


_Line = tuple[tuple[float, float], tuple[float, float]]
"""A receding line: its far end (on the horizon) and its near end (on the bottom row), ``(x, y)`` pixels."""


@dataclass(frozen=True, slots=True)
class _Street:
    """The frame size, horizon, vanishing point and the four receding lines of the street's layout."""

    W: float
    H: float
    hy: float
    vx: float
    left_kerb: _Line
    right_kerb: _Line
    left_wall: _Line
    right_wall: _Line


def _along(far: tuple[float, float], near: tuple[float, float], u: float) -> tuple[float, float]:
    """The point at ``u`` (0 near, 1 far) of the line from ``near`` to ``far``."""
    return (near[0] + (far[0] - near[0]) * u, near[1] + (far[1] - near[1]) * u)


def render_background(
    *, width: int, height: int, horizon_y: float, rng: np.random.Generator, num_occluders: int
) -> Background:
    """Render the static street and the static occluders.

    Args:
        width, height: frame size in pixels.
        horizon_y: row of the horizon / vanishing point, pixels from the top.
        rng: random stream for colours, building heights, texture (consumed).
        num_occluders: how many poles/signs to stand in front of the moving objects, on the pavements.

    Returns:
        The textured image (BGR), its class-id map and the occluders (not drawn into the image).
    """
    W, H, hy = float(width), float(height), float(horizon_y)
    vx = W / 2.0
    image = np.zeros((height, width, 3), np.uint8)
    labels = np.zeros((height, width), np.uint8)
    _draw_sky(image, rng)

    # Ground: road, pavements, the strip beyond them (building bases). Near ends lie below the frame.
    road_half_far, pave_half_far = 0.012 * W, 0.03 * W
    road_near = (-0.05 * W, 1.05 * W)
    pave_near = (-0.75 * W, 1.75 * W)
    street = _Street(
        W=W,
        H=H,
        hy=hy,
        vx=vx,
        left_kerb=((vx - road_half_far, hy), (road_near[0], H)),
        right_kerb=((vx + road_half_far, hy), (road_near[1], H)),
        left_wall=((vx - pave_half_far, hy), (pave_near[0], H)),
        right_wall=((vx + pave_half_far, hy), (pave_near[1], H)),
    )
    _draw_ground(image, labels, street)
    _draw_lane_markings(image, labels, street)
    _draw_buildings(image, labels, street, rng)
    _draw_fence(image, labels, street)
    _draw_trees(image, labels, street, rng)
    _draw_kerb_poles(image, labels, street)
    image = _textured(image, labels, rng)

    occluders = tuple(
        _occluder(
            width=width, height=height, rng=rng, side=(-1.0 if k % 2 == 0 else 1.0), with_sign=(k % 3 == 1)
        )
        for k in range(num_occluders)
    )
    return Background(image=image, labels=labels, occluders=occluders)


def _draw_sky(image: np.ndarray, rng: np.random.Generator) -> None:
    """Fill the whole frame with the sky: vertical gradient (paler at the horizon) plus soft clouds."""
    height, width = image.shape[:2]
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    top, bottom = np.array([200, 150, 110], np.float32), np.array([235, 220, 205], np.float32)
    sky = top + (bottom - top) * rows[..., None]
    clouds = np.clip(_smooth_noise(rng, height, width, 90), 0, 1)[..., None] * 45.0
    image[:] = np.clip(sky + clouds, 0, 255).astype(np.uint8)


def _draw_ground(image: np.ndarray, labels: np.ndarray, st: _Street) -> None:
    """The strip of building bases below the horizon, the two pavements and the road."""
    W, H, hy = st.W, st.H, st.hy
    left_kerb, right_kerb, left_wall, right_wall = st.left_kerb, st.right_kerb, st.left_wall, st.right_wall
    _poly(image, labels, [(0, hy), (W, hy), (W, H), (0, H)], (120, 125, 128), BUILDING)
    _poly(image, labels, [left_wall[0], left_kerb[0], left_kerb[1], left_wall[1]], (150, 160, 165), PAVEMENT)
    _poly(
        image, labels, [right_kerb[0], right_wall[0], right_wall[1], right_kerb[1]], (150, 160, 165), PAVEMENT
    )
    _poly(image, labels, [left_kerb[0], right_kerb[0], right_kerb[1], left_kerb[1]], (88, 86, 84), ROAD)


def _draw_lane_markings(image: np.ndarray, labels: np.ndarray, st: _Street) -> None:
    """Lane markings (class Road, as in CamVid's 11-class set): dashed centre line, solid edge lines."""
    W, H, hy, vx = st.W, st.H, st.hy, st.vx
    for a, b in ((0.0, 0.12), (0.2, 0.3), (0.38, 0.46), (0.53, 0.59), (0.65, 0.69), (0.74, 0.77)):
        half_a, half_b = 0.006 * W * (1 - a), 0.006 * W * (1 - b)
        ya, yb = H + (hy - H) * a, H + (hy - H) * b
        _poly(
            image,
            labels,
            [(vx - half_a, ya), (vx + half_a, ya), (vx + half_b, yb), (vx - half_b, yb)],
            (225, 230, 230),
            ROAD,
        )
    for kerb, sign in ((st.left_kerb, 1.0), (st.right_kerb, -1.0)):
        inner = [_along(kerb[0], kerb[1], u) for u in (0.0, 0.97)]
        offset = [(x + sign * 0.02 * W * (1 - u), y) for (x, y), u in zip(inner, (0.0, 0.97), strict=True)]
        _poly(image, labels, [inner[0], inner[1], offset[1], offset[0]], (210, 215, 215), ROAD)


def _draw_buildings(image: np.ndarray, labels: np.ndarray, st: _Street, rng: np.random.Generator) -> None:
    """Facades along both wall lines, each a segment [u0, u1] with its own height and colour, windowed."""
    H = st.H
    for wall in (st.left_wall, st.right_wall):
        u = 0.0
        while u < 0.93:
            u1 = min(0.97, u + rng.uniform(0.12, 0.3))
            tall = rng.uniform(0.55, 1.3) * H
            color = tuple(int(c) for c in rng.integers(70, 200, 3))
            b0, b1 = _along(wall[0], wall[1], u), _along(wall[0], wall[1], u1)
            r0, r1 = (b0[0], b0[1] - tall * (1 - u)), (b1[0], b1[1] - tall * (1 - u1))
            _poly(image, labels, [b0, b1, r1, r0], color, BUILDING)
            _draw_windows(image, labels, wall, u, u1, tall, H, tuple(int(c * 0.45) for c in color))
            u = u1


def _draw_windows(
    image: np.ndarray, labels: np.ndarray, wall: _Line, u: float, u1: float, tall: float, H: float, win: tuple[int, ...]
) -> None:
    """Windows of the facade between ``u`` and ``u1`` on ``wall``, ``tall`` pixels high at u = 0: a grid
    of quads."""
    nu, nv = max(2, int((u1 - u) * 25)), max(2, int(tall / H * 8))
    for i in range(nu):
        ua, ub = u + (u1 - u) * (i + 0.25) / nu, u + (u1 - u) * (i + 0.75) / nu
        pa, pb = _along(wall[0], wall[1], ua), _along(wall[0], wall[1], ub)
        for j in range(nv):
            va, vb = (j + 0.3) / (nv + 0.5), (j + 0.75) / (nv + 0.5)
            if va > 0.92:
                continue
            quad = [
                (pa[0], pa[1] - tall * (1 - ua) * va),
                (pb[0], pb[1] - tall * (1 - ub) * va),
                (pb[0], pb[1] - tall * (1 - ub) * vb),
                (pa[0], pa[1] - tall * (1 - ua) * vb),
            ]
            _poly(image, labels, quad, win, BUILDING)


def _draw_fence(image: np.ndarray, labels: np.ndarray, st: _Street) -> None:
    """Two stretches of fence along the right wall line, with posts."""
    H, right_wall = st.H, st.right_wall
    for u0, u1 in ((0.05, 0.35), (0.5, 0.7)):
        base = [_along(right_wall[0], right_wall[1], u) for u in (u0, u1)]
        fh = [0.12 * H * (1 - u) for u in (u0, u1)]
        _poly(
            image,
            labels,
            [base[0], base[1], (base[1][0], base[1][1] - fh[1]), (base[0][0], base[0][1] - fh[0])],
            (60, 90, 110),
            FENCE,
        )
        for k in range(16):
            uk = u0 + (u1 - u0) * k / 16
            p = _along(right_wall[0], right_wall[1], uk)
            cv2.line(
                image,
                tuple(fixed(p)),
                tuple(fixed((p[0], p[1] - 0.12 * H * (1 - uk)))),
                (40, 60, 75),
                max(1, int(3 * (1 - uk))),
                cv2.LINE_AA,
                _SHIFT,
            )


def _draw_trees(image: np.ndarray, labels: np.ndarray, st: _Street, rng: np.random.Generator) -> None:
    """Three trees along each wall line at random places: a trunk and an elliptic crown."""
    W, H = st.W, st.H
    for wall in (st.left_wall, st.right_wall):
        for u in rng.uniform(0.1, 0.8, 3):
            p = _along(wall[0], wall[1], u)
            s = 1 - u
            trunk = [
                (p[0] - 0.008 * W * s, p[1]),
                (p[0] + 0.008 * W * s, p[1]),
                (p[0] + 0.008 * W * s, p[1] - 0.3 * H * s),
                (p[0] - 0.008 * W * s, p[1] - 0.3 * H * s),
            ]
            _poly(image, labels, trunk, (40, 60, 85), TREE)
            centre = fixed((p[0], p[1] - 0.42 * H * s))
            axes = fixed((0.07 * W * s + 2, 0.17 * H * s + 2))
            green = (int(rng.integers(30, 70)), int(rng.integers(110, 150)), int(rng.integers(40, 80)))
            cv2.ellipse(image, tuple(centre), tuple(axes), 0, 0, 360, green, -1, cv2.LINE_AA, _SHIFT)
            cv2.ellipse(labels, tuple(centre), tuple(axes), 0, 0, 360, TREE, -1, cv2.LINE_8, _SHIFT)


def _draw_kerb_poles(image: np.ndarray, labels: np.ndarray, st: _Street) -> None:
    """Background poles at both kerbs, and one background sign per side."""
    W, H = st.W, st.H
    for kerb in (st.left_kerb, st.right_kerb):
        for u in (0.55, 0.72, 0.84):
            p = _along(kerb[0], kerb[1], u)
            s = 1 - u
            post = [
                (p[0] - 0.003 * W * s - 0.5, p[1]),
                (p[0] + 0.003 * W * s + 0.5, p[1]),
                (p[0] + 0.003 * W * s + 0.5, p[1] - 0.55 * H * s),
                (p[0] - 0.003 * W * s - 0.5, p[1] - 0.55 * H * s),
            ]
            _poly(image, labels, post, (70, 70, 75), POLE)
        # One background sign per side.
        p = _along(kerb[0], kerb[1], 0.72)
        s = 0.28
        plate = [
            (p[0] - 0.02 * W * s, p[1] - 0.55 * H * s),
            (p[0] + 0.02 * W * s, p[1] - 0.55 * H * s),
            (p[0] + 0.02 * W * s, p[1] - 0.45 * H * s),
            (p[0] - 0.02 * W * s, p[1] - 0.45 * H * s),
        ]
        _poly(image, labels, plate, (40, 40, 200), SIGN)


def _textured(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A new image: large-scale shading and fine grain, stronger on asphalt and walls than on the sky."""
    height, width = labels.shape
    gain = np.full(11, 0.10, np.float32)
    gain[[SKY]] = 0.03
    gain[[ROAD, PAVEMENT, BUILDING]] = 0.16
    shade = _smooth_noise(rng, height, width, 40) * gain[labels]
    grain = rng.standard_normal((height, width)).astype(np.float32) * (gain[labels] * 40.0)
    textured = image.astype(np.float32) * (1.0 + shade[..., None]) + grain[..., None]
    return np.clip(textured, 0, 255).astype(np.uint8)


def _occluder(*, width: int, height: int, rng: np.random.Generator, side: float, with_sign: bool) -> Occluder:
    """A near pole (optionally carrying a sign plate) on the left (side < 0) or right pavement."""
    W, H = float(width), float(height)
    cx = W / 2 + side * rng.uniform(0.12, 0.45) * W
    half = rng.uniform(0.006, 0.014) * W
    top = rng.uniform(0.0, 0.25) * H
    x0, x1 = int(np.floor(cx - max(half, 0.05 * W))), int(np.ceil(cx + max(half, 0.05 * W)))
    x0, x1 = max(0, x0), min(width, x1)
    y0, y1 = int(top), height
    h, w = y1 - y0, x1 - x0
    img = np.zeros((h, w, 3), np.uint8)
    lab = np.zeros((h, w), np.uint8)
    post = [(cx - half - x0, 0), (cx + half - x0, 0), (cx + half - x0, h), (cx - half - x0, h)]
    grey = int(rng.integers(90, 150))
    _poly(img, lab, post, (grey, grey, grey + 10), POLE)
    if with_sign:
        pw, ph = 0.045 * W, 0.07 * H
        plate = [
            (cx - pw - x0, 0.05 * H),
            (cx + pw - x0, 0.05 * H),
            (cx + pw - x0, 0.05 * H + ph),
            (cx - pw - x0, 0.05 * H + ph),
        ]
        _poly(img, lab, plate, (30, 150, 230), SIGN)
    mask = lab > 0
    # Shading across the post so it is not flat.
    ramp = np.linspace(0.75, 1.15, w, dtype=np.float32)[None, :, None]
    img = np.clip(img.astype(np.float32) * ramp, 0, 255).astype(np.uint8)
    return Occluder(y0=y0, y1=y1, x0=x0, x1=x1, image=img, labels=lab, mask=mask)
