"""Drawing label maps and tracks for people: colour lookup, overlays, boxes, a text HUD.

Pure functions (inputs are never modified); the per-pixel work is one table lookup and one OpenCV
blend, so a 1920x1080 overlay costs a few milliseconds. Used by the pipeline's ``--overlay`` writer
and by ``perception view``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import cv2
import numpy as np

from perception.types import ClassInfo

UNKNOWN_COLOR_BGR = (0, 0, 0)
"""Colour of label ids that are not in the class table (e.g. 255 = ignore)."""


class _BoxLike(Protocol):
    track_id: int
    class_id: int
    score: float
    box: tuple[float, float, float, float]


def palette(classes: Iterable[ClassInfo]) -> np.ndarray:
    """Colour lookup table for :func:`colorize`.

    Args:
        classes: class table; ``ClassInfo.color`` is RGB, ids must be 0..255.

    Returns:
        ``uint8[256, 3]`` **BGR**; row ``i`` is the colour of class id ``i``; ids not in the table are
        :data:`UNKNOWN_COLOR_BGR`.
    """
    lut = np.empty((256, 3), np.uint8)
    lut[:] = UNKNOWN_COLOR_BGR
    for c in classes:
        if not 0 <= c.id <= 255:
            raise ValueError(f"class id {c.id} ({c.name!r}) does not fit a uint8 label map")
        r, g, b = c.color
        lut[c.id] = (b, g, r)
    return lut


def generated_palette(seed: int = 0) -> np.ndarray:
    """A deterministic palette of distinct colours, for label maps whose class table is not known yet.

    Returns ``uint8[256, 3]`` BGR; id 0 is dark grey, 255 is black.
    """
    rng = np.random.default_rng(seed)
    hsv = np.stack(
        [
            (np.arange(256) * 47) % 180,  # hue steps spread neighbours apart
            rng.integers(160, 256, 256),
            rng.integers(160, 256, 256),
        ],
        axis=1,
    ).astype(np.uint8)
    lut = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]
    lut[0] = (64, 64, 64)
    lut[255] = (0, 0, 0)
    return lut


def _check_lut(lut: np.ndarray) -> None:
    if lut.shape != (256, 3) or lut.dtype != np.uint8:
        raise ValueError(f"lut must be uint8[256, 3] (see palette()), got {lut.dtype}{list(lut.shape)}")


def colorize(labels: np.ndarray, lut: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Label map -> colour image.

    Args:
        labels: ``uint8[H, W]`` class ids.
        lut: ``uint8[256, 3]`` BGR from :func:`palette`.
        out: optional ``uint8[H, W, 3]`` to write into (no allocation).

    Returns:
        ``uint8[H, W, 3]`` BGR (``out`` when given).
    """
    _check_lut(lut)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8[H, W], got {labels.dtype}{list(labels.shape)}")
    if out is not None and (out.shape != (*labels.shape, 3) or out.dtype != np.uint8):
        raise ValueError(f"out must be uint8{[*labels.shape, 3]}, got {out.dtype}{list(out.shape)}")
    return np.take(lut, labels, axis=0, out=out)


def overlay(
    image_bgr: np.ndarray,
    labels: np.ndarray,
    lut: np.ndarray,
    alpha: float = 0.5,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Blend label colours over an image: ``out = (1 - alpha) * image + alpha * lut[labels]``.

    Args:
        image_bgr: ``uint8[H, W, 3]`` BGR.
        labels: ``uint8[H, W]`` class ids, same H, W as the image (resize with nearest first).
        lut: ``uint8[256, 3]`` BGR from :func:`palette`.
        alpha: weight of the label colours, 0..1 (0 = image only, 1 = colours only).
        out: optional preallocated ``uint8[H, W, 3]``, not the image itself; with it nothing is allocated.

    Returns:
        ``uint8[H, W, 3]`` BGR (``out`` when given).
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"image must be BGR uint8[H, W, 3], got {image_bgr.dtype}{list(image_bgr.shape)}")
    if labels.shape != image_bgr.shape[:2]:
        raise ValueError(f"labels {list(labels.shape)} and image {list(image_bgr.shape[:2])} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if out is not None and np.shares_memory(out, image_bgr):
        raise ValueError("out must not share memory with image_bgr (the image is an input)")
    colour = colorize(labels, lut, out=out)
    return cv2.addWeighted(image_bgr, 1.0 - alpha, colour, alpha, 0.0, dst=colour)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int]) -> None:
    """Text with a dark outline so it reads on any background (in place).

    The outline is the same text drawn 1 px off in four directions, not a thicker stroke: OpenCV 5's
    font engine makes glyphs wider with thickness, so a thick outline would run past the text.
    """
    thick = max(1, round(scale * 2))
    x, y = org
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        cv2.putText(img, text, (x + dx, y + dy), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def draw_tracks(
    image: np.ndarray,
    tracks: Sequence[_BoxLike],
    classes: Sequence[ClassInfo] | None,
    *,
    scale: float = 1.0,
    copy: bool = True,
) -> np.ndarray:
    """Draw each track's box and ``#id class score`` label.

    Args:
        image: ``uint8[H, W, 3]`` BGR.
        tracks: objects with ``track_id``, ``class_id``, ``score`` and ``box`` (``x0, y0, x1, y1``
            full-resolution pixels, x1/y1 exclusive): :class:`~perception.types.Track` or the
            subscriber's ``TrackRecord``.
        classes: class table for names and colours (None: ids only, white boxes).
        scale: image pixels per full-resolution pixel (e.g. 1/3 when drawing on a downscaled preview).
        copy: True (default) draws on a copy and leaves ``image`` alone; False draws in place (cheaper
            on the hot path when the caller owns the image).

    Returns:
        The drawn image (a copy unless ``copy=False``).
    """
    img = image.copy() if copy else image
    by_id = {c.id: c for c in classes or ()}
    fs = max(0.4, min(img.shape[:2]) / 900.0)
    for t in tracks:
        info = by_id.get(int(t.class_id))
        colour = (255, 255, 255) if info is None else (int(info.color[2]), int(info.color[1]), int(info.color[0]))
        name = str(t.class_id) if info is None else info.name
        x0, y0, x1, y1 = (float(v) * scale for v in t.box)
        p0 = (int(round(x0)), int(round(y0)))
        p1 = (max(p0[0], int(round(x1)) - 1), max(p0[1], int(round(y1)) - 1))  # x1/y1 exclusive
        cv2.rectangle(img, p0, p1, colour, max(1, round(fs * 2)), cv2.LINE_AA)
        label = f"#{t.track_id} {name} {float(t.score):.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        ty = max(th + base, p0[1])  # label tab above the box, kept inside the image
        cv2.rectangle(img, (p0[0], ty - th - base), (p0[0] + tw + 4, ty), colour, -1)
        ink = (0, 0, 0) if sum(colour) > 3 * 140 else (255, 255, 255)  # readable on the tab's colour
        cv2.putText(img, label, (p0[0] + 2, ty - base), cv2.FONT_HERSHEY_SIMPLEX, fs, ink, 1, cv2.LINE_AA)
    return img


def draw_hud(image: np.ndarray, lines: Sequence[str], *, copy: bool = True) -> np.ndarray:
    """Write text lines (fps, latency...) in the top-left corner over a dark band.

    Args:
        image: ``uint8[H, W, 3]`` BGR.
        lines: one string per line.
        copy: True draws on a copy; False in place.

    Returns:
        The drawn image.
    """
    img = image.copy() if copy else image
    if not lines:
        return img
    fs = max(0.4, min(img.shape[:2]) / 800.0)
    step = int(30 * fs) + 4
    thick = max(1, round(fs * 2))  # as drawn by _text
    tw = max(cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, fs, thick)[0][0] for line in lines)
    band = img[: min(img.shape[0], step * len(lines) + 8), : min(img.shape[1], tw + 16)]
    band //= 2  # darken (in place on img, a view)
    for i, line in enumerate(lines):
        _text(img, line, (8, step * (i + 1)), fs, (255, 255, 255))
    return img


def draw_analytics(
    image: np.ndarray,
    analytics,
    classes: Sequence[ClassInfo] | None = None,
    *,
    scale: float = 1.0,
    copy: bool = True,
) -> np.ndarray:
    """Draw counting zones (outlined), lines (with an arrow towards the side ``directions[0]`` counts
    into) and their counts in the bottom-left corner.

    Args:
        image: ``uint8[H, W, 3]`` BGR.
        analytics: a :class:`~perception.types.Analytics` (points in full-resolution pixels).
        classes: class table for names in the counts (None: class ids).
        scale: image pixels per full-resolution pixel.
        copy: True draws on a copy; False in place.

    Returns:
        The drawn image.
    """
    from perception.analytics.counting import counts_lines

    img = image.copy() if copy else image
    if analytics is None:
        return img
    fs = max(0.4, min(img.shape[:2]) / 900.0)
    thick = max(1, round(fs * 2))
    for z in analytics.zones:
        if len(z.points) >= 3:
            pts = np.round(np.asarray(z.points) * scale).astype(np.int32)
            cv2.polylines(img, [pts], True, (0, 200, 255), thick, cv2.LINE_AA)
            x0, y0 = pts.min(axis=0)
            _text(img, z.name, (int(x0) + 4, int(y0) + int(20 * fs)), fs * 0.8, (0, 200, 255))
    for ln in analytics.lines:
        if len(ln.points) < 2:
            continue
        pts = np.asarray(ln.points, np.float64) * scale
        cv2.polylines(img, [np.round(pts).astype(np.int32)], False, (255, 0, 255), thick, cv2.LINE_AA)
        a, b = pts[0], pts[-1]
        mid, d = (a + b) / 2.0, b - a
        n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6)  # towards the right of A→B on the image
        tip = mid + n * 30 * fs
        cv2.arrowedLine(img, tuple(int(v) for v in np.round(mid)), tuple(int(v) for v in np.round(tip)),
                        (255, 0, 255), thick, cv2.LINE_AA, tipLength=0.35)
        _text(img, f"{ln.name}: {ln.directions[0]}", (int(round(tip[0])) + 4, int(round(tip[1]))), fs * 0.7,
              (255, 0, 255))
    lines = counts_lines(analytics, classes)
    step = int(26 * fs) + 4
    y0 = img.shape[0] - step * len(lines) - 4
    for i, line in enumerate(lines):
        _text(img, line, (8, y0 + step * (i + 1) - 6), fs * 0.8, (255, 255, 255))
    return img
