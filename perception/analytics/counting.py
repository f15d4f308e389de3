"""Line crossings and zone occupancy by class, from tracks (pure geometry + one small per-camera state).

Conventions: points are ``(x, y)`` full-resolution pixels, image axes (y down). A line runs from its
first point A to its last (a polyline through the points between). Seen on the image, its *right*
side is where you would turn right walking from A to B (for A left and B right: below it). A track
crossing from the left side to the right counts in ``directions[0]``, the other way in
``directions[1]``. A track's position is its *anchor*: the bottom centre of its box (``foot``, where a
person stands) or the box centre (``centre``).

Crossings are counted between a track's last matched position and its new matched one, so a person
hidden for a few frames while crossing is still counted once; coasting (predicted) positions never
count. Zone occupancy counts every reported, non-lost track whose anchor is inside the polygon (the
instances' box anchors when tracking is off; there are no crossings without tracks).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.errors import ConfigError, TransportError
from perception.types import Analytics, ClassInfo, Instance, LineCount, Track, TrackState, ZoneCount

FORGET_FRAMES = 600
"""A track's last position is forgotten this many frames after it was last matched."""


# ------------------------------------------------------------------------------------------ geometry
def _side(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Cross product ``(b - a) x (p - a)`` for points ``p: [N, 2]``: > 0 right of a→b on the image."""
    return (b[0] - a[0]) * (p[:, 1] - a[1]) - (b[1] - a[1]) * (p[:, 0] - a[0])


def segments_cross(p0: np.ndarray, p1: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Which way each movement ``p0[i] → p1[i]`` crosses a (poly)line.

    Args:
        p0, p1: ``float64[N, 2]`` start and end ``(x, y)`` of N movements.
        line: ``float64[M, 2]`` the line's points, ``M >= 2``.

    Returns:
        ``int8[N]``: +1 crossed from the left of the line to its right (``directions[0]``), -1 from
        right to left, 0 not crossed (or crossed both ways within the movement). A point exactly on
        the line counts as on its right, so a track that stops on the line is counted once.
    """
    p0 = np.asarray(p0, np.float64).reshape(-1, 2)
    p1 = np.asarray(p1, np.float64).reshape(-1, 2)
    total = np.zeros(len(p0), np.int64)
    for a, b in itertools.pairwise(line):
        s0, s1 = _side(a, b, p0), _side(a, b, p1)
        left0, left1 = s0 < 0, s1 < 0
        # the segment a-b must straddle the movement's own line (not only its extension)
        d = p1 - p0
        da = d[:, 0] * (a[1] - p0[:, 1]) - d[:, 1] * (a[0] - p0[:, 0])
        db = d[:, 0] * (b[1] - p0[:, 1]) - d[:, 1] * (b[0] - p0[:, 0])
        hit = (left0 != left1) & (da * db <= 0) & ((da != 0) | (db != 0))
        total += np.where(hit, np.where(left0, 1, -1), 0)
    return np.sign(total).astype(np.int8)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """``bool[N]``: which ``(x, y)`` points lie inside a polygon (even-odd rule, ray casting).

    ``polygon`` is ``float64[M, 2]``, ``M >= 3`` corners in order (either orientation).
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    x, y = pts[:, 0:1], pts[:, 1:2]
    xa, ya = polygon[:, 0], polygon[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    straddle = (ya > y) != (yb > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xcross = xa + (y - ya) * (xb - xa) / (yb - ya)
    return (np.count_nonzero(straddle & (x < xcross), axis=1) % 2) == 1


def anchor_points(boxes: np.ndarray, anchor: str) -> np.ndarray:
    """``float64[N, 2]`` anchor ``(x, y)`` of boxes ``[N, 4]`` ``(x0, y0, x1, y1)``: foot or centre."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x = (b[:, 0] + b[:, 2]) / 2.0
    y = b[:, 3] if anchor == "foot" else (b[:, 1] + b[:, 3]) / 2.0
    return np.stack([x, y], axis=1)


# ------------------------------------------------------------------------------------ configuration
@dataclass(frozen=True, slots=True)
class _Shape:
    name: str
    points: np.ndarray
    """``float64[M, 2]`` full-resolution pixels."""
    class_ids: frozenset[int] | None
    """Classes counted (None: every thing class)."""
    directions: tuple[str, str] = ("in", "out")


@dataclass(frozen=True, slots=True)
class Geometry:
    """Lines and zones of one camera in its pixels."""

    lines: tuple[_Shape, ...]
    zones: tuple[_Shape, ...]


def _class_ids(names: Sequence[str], classes: Sequence[ClassInfo], key: str) -> frozenset[int] | None:
    if not names:
        return None
    by_name = {c.name.lower(): c.id for c in classes}
    out = set()
    for n in names:
        if n.lower() not in by_name:
            raise ConfigError(f"'{key}': the model has no class {n!r}; it has {[c.name for c in classes]}")
        out.add(by_name[n.lower()])
    return frozenset(out)


def resolve_geometry(config: Any, classes: Sequence[ClassInfo], size: tuple[int, int], *, camera: str = "") -> Geometry:
    """Lines and zones of ``config`` (:class:`perception.config.AnalyticsConfig`) in pixels of a ``size``
    ``(W, H)`` frame.

    Raises:
        ConfigError: a pixel point outside the frame, or an unknown class name; the message names the
            key (``analytics.lines.0.points``).
    """
    W, H = size
    out: dict[str, list[_Shape]] = {"lines": [], "zones": []}
    for what in ("lines", "zones"):
        for i, item in enumerate(getattr(config, what)):
            key = f"analytics.{what}.{i}"
            pts = np.asarray(item.points, np.float64).reshape(-1, 2)
            if item.units == "fraction":
                pts = pts * np.array([W, H], np.float64)
            else:
                bad = np.flatnonzero((pts[:, 0] > W) | (pts[:, 1] > H))
                if bad.size:
                    x, y = pts[bad[0]]
                    raise ConfigError(f"'{key}.points': point {bad[0]} ({x:g}, {y:g}) is outside the {W}x{H} "
                                      f"frame{' of camera ' + camera if camera else ''}")
            ids = _class_ids(item.classes, classes, f"{key}.classes")
            dirs = tuple(getattr(item, "directions", ("in", "out")))
            out[what].append(_Shape(item.name, pts, ids, dirs))  # type: ignore[arg-type]
    return Geometry(lines=tuple(out["lines"]), zones=tuple(out["zones"]))


# ------------------------------------------------------------------------------------------ counter
class Counter:
    """Counts of one camera: cumulative line crossings and per-frame zone occupancy, by class.

    Args:
        config: :class:`perception.config.AnalyticsConfig`.
        classes: the model's class table (names → ids; only thing classes are counted).
    """

    def __init__(self, config: Any, classes: Sequence[ClassInfo]) -> None:
        self.config = config
        self.classes = tuple(classes)
        self.things = frozenset(c.id for c in self.classes if c.is_thing)
        resolve_geometry(config, self.classes, (1 << 30, 1 << 30))  # class names checked now
        self.geometry: Geometry | None = None
        self._size: tuple[int, int] | None = None
        self._last: dict[int, tuple[float, float, int]] = {}  # track id -> (x, y, frame)
        self._crossed: list[tuple[dict[int, int], dict[int, int]]] = [({}, {}) for _ in config.lines]
        self._frame = 0

    def _geometry(self, size: tuple[int, int], camera: str) -> Geometry:
        if self.geometry is None or self._size != size:
            self.geometry = resolve_geometry(self.config, self.classes, size, camera=camera)
            self._size = size
        return self.geometry

    def update(self, *, size: tuple[int, int], tracks: Sequence[Track] | None = None,
               instances: Sequence[Instance] = (), camera: str = "") -> Analytics:
        """The counts after this frame. ``tracks`` None: tracking is off (occupancy from ``instances``)."""
        geo = self._geometry(size, camera)
        self._frame += 1
        if tracks is None:
            objs = [(0, d.class_id, d.box, False) for d in instances if d.class_id in self.things]
        else:
            objs = [(t.track_id, t.class_id, t.box, t.instance_index != 0) for t in tracks
                    if t.class_id in self.things and t.state != TrackState.LOST]
        cls = np.array([o[1] for o in objs], np.int64)
        pts = anchor_points(np.array([o[2] for o in objs], np.float64), self.config.anchor)
        zones = tuple(ZoneCount(name=z.name, points=_tuples(z.points), counts=_tally(
                      cls[self._selected(z, cls, points_in_polygon(pts, z.points))]))
                      for z in geo.zones)
        if tracks is not None and geo.lines:
            self._cross(geo, objs, cls, pts)
        lines = tuple(LineCount(name=ln.name, directions=ln.directions, counts=(dict(a), dict(b)),
                                points=_tuples(ln.points))
                      for ln, (a, b) in zip(geo.lines, self._crossed))
        return Analytics(zones=zones, lines=lines)

    @staticmethod
    def _selected(shape: _Shape, cls: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if shape.class_ids is None:
            return mask
        return mask & np.isin(cls, list(shape.class_ids))

    def _cross(self, geo: Geometry, objs: list, cls: np.ndarray, pts: np.ndarray) -> None:
        matched = np.array([o[3] for o in objs], bool)
        ids = [o[0] for o in objs]
        prev = np.array([self._last.get(i, (np.nan, np.nan, 0))[:2] for i in ids], np.float64).reshape(-1, 2)
        moved = matched & np.isfinite(prev[:, 0])
        if moved.any():
            for ln, counts in zip(geo.lines, self._crossed):
                way = segments_cross(prev[moved], pts[moved], ln.points)
                sel = self._selected(ln, cls[moved], way != 0)
                for c, w in zip(cls[moved][sel].tolist(), way[sel].tolist()):
                    d = counts[0 if w > 0 else 1]
                    d[c] = d.get(c, 0) + 1
        for k in np.flatnonzero(matched):
            self._last[ids[k]] = (float(pts[k, 0]), float(pts[k, 1]), self._frame)
        if self._frame % 100 == 0:
            self._last = {i: v for i, v in self._last.items() if self._frame - v[2] <= FORGET_FRAMES}


def _tuples(points: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((float(x), float(y)) for x, y in points)


def _tally(cls: np.ndarray) -> dict[int, int]:
    ids, n = np.unique(cls, return_counts=True)
    return {int(i): int(k) for i, k in zip(ids, n)}


# ------------------------------------------------------------------------------------------ the wire
def _pairs(counts: Mapping[int, int]) -> list[list[int]]:
    return [[int(c), int(n)] for c, n in sorted(counts.items())]


def counts_to_header(a: Analytics) -> dict[str, Any]:
    """The ``counts`` header value (msgpack-ready; class counts as ``[class_id, n]`` pairs)."""
    return {
        "zones": [{"name": z.name, "occ": _pairs(z.counts), "pts": [[x, y] for x, y in z.points]} for z in a.zones],
        "lines": [{"name": ln.name, "dirs": list(ln.directions), "n": [_pairs(ln.counts[0]), _pairs(ln.counts[1])],
                   "pts": [[x, y] for x, y in ln.points]} for ln in a.lines],
    }


def _from_pairs(value: Any, what: str) -> dict[int, int]:
    try:
        return {int(c): int(n) for c, n in value}
    except (TypeError, ValueError) as exc:
        raise TransportError(f"malformed message: {what} must be a list of [class_id, count] pairs") from exc


def _points(value: Any) -> tuple[tuple[float, float], ...]:
    try:
        return tuple((float(x), float(y)) for x, y in value)
    except (TypeError, ValueError) as exc:
        raise TransportError("malformed message: counts 'pts' must be a list of [x, y] pairs") from exc


def counts_from_header(header: Mapping[str, Any]) -> Analytics | None:
    """The :class:`Analytics` of a label message header's ``counts`` key; None when it has none.

    Raises:
        TransportError: a ``counts`` value of the wrong shape, naming what is wrong.
    """
    c = header.get("counts")
    if c is None:
        return None
    try:
        zones = tuple(ZoneCount(name=str(z["name"]), counts=_from_pairs(z["occ"], f"counts.zones.{i}.occ"),
                                points=_points(z.get("pts", ())))
                      for i, z in enumerate(c.get("zones", ())))
        lines = tuple(
            LineCount(name=str(ln["name"]), directions=(str(ln["dirs"][0]), str(ln["dirs"][1])),
                      counts=(_from_pairs(ln["n"][0], f"counts.lines.{i}.n"),
                              _from_pairs(ln["n"][1], f"counts.lines.{i}.n")), points=_points(ln.get("pts", ())))
            for i, ln in enumerate(c.get("lines", ())))
    except (AttributeError, KeyError, IndexError, TypeError) as exc:
        raise TransportError(f"malformed message: 'counts' is not as docs/wire-format.md describes ({exc!r})") from exc
    return Analytics(zones=zones, lines=lines)


def counts_lines(a: Analytics, classes: Iterable[ClassInfo] | None = None) -> list[str]:
    """Short text lines for a HUD: ``zone door: Pedestrian 2`` and ``line L: in Pedestrian 3 / out ...``."""
    names = {c.id: c.name for c in classes or ()}

    def fmt(counts: Mapping[int, int]) -> str:
        return ", ".join(f"{names.get(c, c)} {n}" for c, n in sorted(counts.items())) or "0"

    out = [f"zone {z.name}: {fmt(z.counts)}" for z in a.zones]
    out += [f"line {ln.name}: {ln.directions[0]} {fmt(ln.counts[0])} | {ln.directions[1]} {fmt(ln.counts[1])}"
            for ln in a.lines]
    return out
