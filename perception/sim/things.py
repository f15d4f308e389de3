"""Draw one moving thing (car, pedestrian, bicyclist) into a small patch: colour pixels and silhouette.

Each drawing function takes the thing's box in frame pixels (floats; the patch's origin is the box's
floor corner so sub-pixel motion is kept through OpenCV's fixed-point drawing) and returns the patch
origin, the BGR patch and its silhouette mask. Shapes are side views: the thing moves left or right.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from perception.sim.background import _SHIFT, BICYCLIST, CAR, PEDESTRIAN, fixed

BASE_ASPECT = {CAR: 2.2, PEDESTRIAN: 0.34, BICYCLIST: 0.8}
"""Width / height of each thing's box."""

BASE_HEIGHT = {CAR: 0.40, PEDESTRIAN: 0.55, BICYCLIST: 0.52}
"""Box height at perspective scale 1 (a thing standing on the bottom row), fraction of the frame height."""


@dataclass(frozen=True, slots=True)
class Look:
    """Per-object appearance, fixed for the object's life."""

    body: tuple[int, int, int]
    """Main colour (car paint, shirt, rider's jacket), BGR."""
    second: tuple[int, int, int]
    """Second colour (trousers, bike frame), BGR."""
    skin: tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Patch:
    y0: int
    x0: int
    image: np.ndarray
    """uint8[h, w, 3] BGR."""
    mask: np.ndarray
    """bool[h, w] silhouette."""


def _draw(image: np.ndarray, mask: np.ndarray, kind: str, color, *args) -> None:
    """Draw one primitive in both the colour patch and the mask (args in float patch pixels)."""
    if kind == "poly":
        pts = [fixed(np.asarray(p, np.float64)).reshape(-1, 1, 2) for p in args[0]]
        cv2.fillPoly(image, pts, color, cv2.LINE_AA, shift=_SHIFT)
        cv2.fillPoly(mask, pts, 1, cv2.LINE_8, shift=_SHIFT)
    elif kind == "circle":
        (cx, cy), r = args[0], args[1]
        thickness = -1 if len(args) < 3 else max(1, int(round(args[2])))
        c, rr = tuple(fixed((cx, cy))), int(round(r * (1 << _SHIFT)))
        cv2.circle(image, c, rr, color, thickness, cv2.LINE_AA, _SHIFT)
        cv2.circle(mask, c, rr, 1, thickness, cv2.LINE_8, _SHIFT)
    elif kind == "ellipse":
        (cx, cy), (ax, ay) = args[0], args[1]
        c, a = tuple(fixed((cx, cy))), tuple(fixed((max(ax, 0.5), max(ay, 0.5))))
        cv2.ellipse(image, c, a, 0, 0, 360, color, -1, cv2.LINE_AA, _SHIFT)
        cv2.ellipse(mask, c, a, 0, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    elif kind == "line":
        p, q, t = args
        t = max(1, int(round(t)))
        cv2.line(image, tuple(fixed(p)), tuple(fixed(q)), color, t, cv2.LINE_AA, _SHIFT)
        cv2.line(mask, tuple(fixed(p)), tuple(fixed(q)), 1, t, cv2.LINE_8, _SHIFT)
    else:  # pragma: no cover - internal misuse
        raise ValueError(kind)


def _dark(c: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, v * f)) for v in c)  # type: ignore[return-value]


_Point = Callable[[float, float], tuple[float, float]]
"""Box-relative ``(u, v)`` in [0, 1] → patch pixels (mirrored when the thing faces left)."""


def draw_thing(
    class_id: int, box: tuple[float, float, float, float], *, look: Look, facing_left: bool, phase: float
) -> Patch:
    """Draw a thing whose box is ``(x0, y0, x1, y1)`` (frame pixels, floats, x1/y1 exclusive).

    Args:
        class_id: CamVid id, one of Car (8), Pedestrian (9), Bicyclist (10).
        box: where the thing's full (unoccluded, unclipped) silhouette fits.
        look: its colours.
        facing_left: mirror the side view (the thing moves towards smaller x).
        phase: gait / wheel phase in radians (pedestrian legs swing with it).

    Returns:
        The patch, its origin ``(y0, x0)`` = floor of the box corner, covering the whole box (it may
        extend outside the frame; the caller clips).
    """
    bx0, by0, bx1, by1 = box
    ox, oy = math.floor(bx0), math.floor(by0)
    w, h = bx1 - bx0, by1 - by0
    pw, ph = math.ceil(bx1) - ox + 1, math.ceil(by1) - oy + 1
    image = np.zeros((ph, pw, 3), np.uint8)
    mask = np.zeros((ph, pw), np.uint8)
    fx, fy = bx0 - ox, by0 - oy

    def P(u: float, v: float) -> tuple[float, float]:
        """Box-relative (u, v) in [0, 1] → patch pixels; u is mirrored when facing left."""
        if facing_left:
            u = 1.0 - u
        return (fx + u * w, fy + v * h)

    if class_id == CAR:
        _draw_car(image, mask, P, look, w, h, phase)
    elif class_id == PEDESTRIAN:
        _draw_pedestrian(image, mask, P, look, w, h, phase)
    elif class_id == BICYCLIST:
        _draw_bicyclist(image, mask, P, look, w, h, phase)
    else:
        raise ValueError(f"class id {class_id} is not a thing class (Car=8, Pedestrian=9, Bicyclist=10)")
    return Patch(y0=oy, x0=ox, image=image, mask=mask.astype(bool))


def _draw_car(image: np.ndarray, mask: np.ndarray, P: _Point, look: Look, w: float, h: float, phase: float) -> None:
    """A car's side view: body, cabin, windows, sill, wheels, headlight."""
    _draw(image, mask, "poly", look.body, [[P(0.02, 0.38), P(0.98, 0.42), P(0.98, 0.84), P(0.02, 0.84)]])
    _draw(
        image,
        mask,
        "poly",
        _dark(look.body, 0.85),
        [[P(0.22, 0.40), P(0.32, 0.04), P(0.70, 0.04), P(0.84, 0.41)]],
    )
    glass = (120, 100, 80)
    _draw(image, mask, "poly", glass, [[P(0.27, 0.37), P(0.35, 0.09), P(0.50, 0.09), P(0.50, 0.37)]])
    _draw(image, mask, "poly", glass, [[P(0.53, 0.37), P(0.53, 0.09), P(0.68, 0.09), P(0.79, 0.37)]])
    _draw(
        image,
        mask,
        "poly",
        _dark(look.body, 0.6),
        [[P(0.02, 0.68), P(0.98, 0.68), P(0.98, 0.74), P(0.02, 0.74)]],
    )
    r = 0.17 * h
    for u in (0.2, 0.8):
        c = P(u, 1.0 - 0.17)
        _draw(image, mask, "circle", (25, 25, 25), c, r)
        _draw(image, mask, "circle", (150, 150, 150), c, 0.45 * r)
    _draw(image, mask, "circle", (200, 230, 240), P(0.97, 0.5), 0.05 * h)


def _draw_pedestrian(
    image: np.ndarray, mask: np.ndarray, P: _Point, look: Look, w: float, h: float, phase: float
) -> None:
    """A pedestrian: legs swinging with ``phase``, torso, arms, head and hair."""
    swing = 0.28 * math.sin(phase)
    hip, thick = P(0.5, 0.5), 0.22 * w
    for s in (swing, -swing):
        _draw(image, mask, "line", look.second, hip, P(0.5 + s, 0.97), thick)
    _draw(image, mask, "ellipse", look.body, P(0.5, 0.33), (0.36 * w, 0.18 * h))
    for s in (-swing, swing):
        _draw(image, mask, "line", _dark(look.body, 0.8), P(0.5, 0.2), P(0.5 + 0.8 * s, 0.48), 0.12 * w)
    _draw(image, mask, "circle", look.skin, P(0.5, 0.085), 0.075 * h)
    _draw(image, mask, "circle", (40, 40, 50), P(0.48, 0.06), 0.06 * h)


def _draw_bicyclist(
    image: np.ndarray, mask: np.ndarray, P: _Point, look: Look, w: float, h: float, phase: float
) -> None:
    """A bicyclist: wheels, frame, the leg on a pedal turning with ``phase``, body, arm, head, helmet."""
    r = 0.2 * h
    wheel = max(1.0, 0.03 * h)
    back, front = P(0.2, 1.0 - 0.2), P(0.8, 1.0 - 0.2)
    for c in (back, front):
        _draw(image, mask, "circle", (30, 30, 30), c, r, wheel)
    seat, bar, crank = P(0.4, 0.48), P(0.72, 0.44), P(0.47, 0.8)
    for a, b in ((back, seat), (seat, crank), (crank, back), (seat, bar), (bar, front), (crank, bar)):
        _draw(image, mask, "line", look.second, a, b, max(1.0, 0.025 * h))
    pedal = (crank[0] + 0.08 * h * math.cos(phase), crank[1] + 0.08 * h * math.sin(phase))
    _draw(image, mask, "line", _dark(look.body, 0.7), seat, pedal, max(1.0, 0.06 * h))
    _draw(image, mask, "line", look.body, seat, P(0.55, 0.16), max(1.0, 0.11 * h))
    _draw(image, mask, "line", look.body, P(0.55, 0.18), bar, max(1.0, 0.04 * h))
    _draw(image, mask, "circle", look.skin, P(0.58, 0.08), 0.07 * h)
    _draw(image, mask, "circle", (20, 160, 230), P(0.57, 0.05), 0.06 * h)

