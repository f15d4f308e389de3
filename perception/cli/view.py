"""``perception view``: subscribe to a pipeline and show or record its label colours.

Renders the label colours over the message's preview image when it has one (the publisher's
``preview: jpeg``), else the colourised label map alone; draws tracks and a HUD; writes ``--out`` with
OpenCV's VideoWriter (mp4v); opens a window only when a display exists and ``--no-window`` is absent;
prints frames/s and capture→receive latency (p50/p99 over the last second) once a second.

A pipeline with several streams sends every camera's messages on one socket and topic, each header
naming its camera (``cam``). The view shows them as a mosaic: one tile per camera id seen, each the
newest frame of that camera with its own HUD (id, frames/s, latency); ``--cam ID`` shows that camera
alone (the others are received and dropped: ZeroMQ topics are per publisher, not per camera).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections import deque
from pathlib import Path

DEFAULT_FPS = 10.0
DEFAULT_MAX_WIDTH = 1280


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "view",
        help="subscribe to a pipeline and show / record its label overlay",
        description=(
            "Subscribe to a perception publisher, render the label colours (over the preview image when "
            "the publisher sends one), show them in a window and/or write a video, and print frames/s "
            "and capture-to-receive latency once a second. Several cameras are shown as a mosaic (one "
            "tile per camera id); --cam ID shows one."
        ),
    )
    from perception.cli.keys import add_subscriber_arguments

    add_subscriber_arguments(p)
    p.add_argument("--out", metavar="FILE.mp4", default=None,
                   help="write the rendered frames to this video file (mp4v codec)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS,
                   help="frame rate written into --out (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="exit with status 0 after N frames (default: run until Ctrl-C)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="exit with status 1 when no message arrives for S seconds (default: wait forever)")
    p.add_argument("--latest-only", action=argparse.BooleanOptionalAction, default=True,
                   help="render only the newest message, skipping any that queued up while rendering "
                        "(default; --no-latest-only renders every message and falls behind when slow)")
    p.add_argument("--no-window", action="store_true",
                   help="never open a window (also the case when no display is available)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="weight of the label colours over the preview image, 0..1 (default: %(default)s)")
    p.add_argument("--max-width", type=int, default=DEFAULT_MAX_WIDTH, metavar="PX",
                   help="downscale renders (the whole mosaic) wider than this (default: %(default)s)")
    p.add_argument("--cam", metavar="ID", default=None,
                   help="show only this camera (a stream id, e.g. cam1); default: every camera, as a mosaic")
    p.add_argument("--settle", type=float, default=1.0, metavar="S",
                   help="seconds after the first message to wait for the other cameras before the mosaic's "
                        "size (the --out frame size) is fixed; later cameras share it (default: %(default)s)")
    from perception.outputs.rerun import add_rerun_arguments

    add_rerun_arguments(p)
    p.set_defaults(func=run_view)


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class _Rates:
    """Frames/s and latency percentiles over a sliding one-second window."""

    def __init__(self) -> None:
        self._events: deque[tuple[int, float]] = deque()  # (receive mono ns, latency ms)

    def add(self, t_ns: int, latency_ms: float) -> None:
        self._events.append((t_ns, latency_ms))

    def summary(self, now_ns: int) -> tuple[float, float, float]:
        while self._events and now_ns - self._events[0][0] > 1_000_000_000:
            self._events.popleft()
        if not self._events:
            return 0.0, float("nan"), float("nan")
        import numpy as np

        lat = np.fromiter((e[1] for e in self._events), float)
        return float(len(self._events)), float(np.percentile(lat, 50)), float(np.percentile(lat, 99))

    def latencies(self, now_ns: int) -> list[float]:
        """The latencies (ms) of the last second."""
        self.summary(now_ns)
        return [e[1] for e in self._events]


def _check_args(args: argparse.Namespace) -> None:
    from perception.errors import ConfigError
    from perception.outputs.overlay import refuse_existing

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.fps <= 0:
        raise ConfigError(f"--fps must be > 0, got {args.fps}")
    if args.settle < 0:
        raise ConfigError(f"--settle must be >= 0 seconds, got {args.settle}")
    if args.max_width < 16:
        raise ConfigError(f"--max-width must be >= 16, got {args.max_width}")
    if args.out:
        refuse_existing(Path(args.out), overwrite=args.force, what="--out")


class _Renderer:
    """Label colours over the preview (or alone), tracks and counts, at a given size (one camera's tile)."""

    def __init__(self, *, alpha: float) -> None:
        from perception.viz import generated_palette

        self.alpha = alpha
        self.lut, self.lut_version = generated_palette(), None
        self.canvas = None

    def render(self, msg, sub, size: tuple[int, int]):
        """``msg`` drawn at ``size`` = (w, h); returns this renderer's buffer (valid until its next render)."""
        import cv2
        import numpy as np

        from perception.viz import colorize, draw_analytics, draw_tracks, overlay, palette

        if sub.classes_version is not None and sub.classes_version != self.lut_version:
            self.lut, self.lut_version = palette(sub.classes), sub.classes_version
        w, h = size
        base = msg.preview
        if base is not None and base.shape[:2] != (h, w):
            base = cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA)
        labels = msg.labels
        if labels.shape != (h, w):
            labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        if self.canvas is None or self.canvas.shape[:2] != (h, w):
            self.canvas = np.empty((h, w, 3), np.uint8)
        if base is None:
            img = colorize(labels, self.lut, out=self.canvas)
        else:
            img = overlay(base, labels, self.lut, alpha=self.alpha, out=self.canvas)
        if msg.tracks:
            img = draw_tracks(img, msg.tracks, sub.classes, scale=w / msg.width, copy=False)
        counts = msg.counts  # zone occupancy and line crossings, when the publisher counts
        if counts is not None:
            img = draw_analytics(img, counts, sub.classes, scale=w / msg.width, copy=False)
        return img


class _Tile:
    """One camera in the mosaic: its newest message, its rendering, its rates and HUD."""

    def __init__(self, cam: str, *, alpha: float) -> None:
        self.cam, self.renderer, self.rates = cam, _Renderer(alpha=alpha), _Rates()
        self.msg = None
        self.image = None  # the newest message rendered at the tile's size (the renderer's buffer)
        self.dirty = False
        self.rendered = 0  # messages of this camera drawn
        self.last_ns = 0  # when its newest message arrived (host monotonic)
        self.hud = [cam]

    def take(self, msg, now_ns: int) -> None:
        self.msg, self.dirty, self.last_ns = msg, True, now_ns
        self.rendered += 1
        self.rates.add(now_ns, (msg.t_receive_wall_ns - msg.t_capture_wall_ns) / 1e6)

    def refresh_hud(self, now_ns: int) -> tuple[float, float, float]:
        fps, p50, p99 = self.rates.summary(now_ns)
        self.hud = [self.cam, f"{fps:.1f} fps", f"p50 {p50:.0f} p99 {p99:.0f} ms"]
        return fps, p50, p99


def _grid(n: int) -> tuple[int, int]:
    """(columns, rows) of a mosaic of ``n`` tiles: as square as possible, filled row by row."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return cols, max(1, math.ceil(n / cols))


def _fit(w: int, h: int, cell: tuple[int, int]) -> tuple[int, int]:
    """(w, h) scaled to the largest size that fits ``cell`` = (cw, ch) with the same aspect ratio."""
    cw, ch = cell
    s = min(cw / w, ch / h)
    return max(1, min(cw, round(w * s))), max(1, min(ch, round(h * s)))


def _natural(cam: str) -> list:
    """Sort key putting cam2 before cam10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", cam)]


STALE_S = 2.0
"""A tile whose camera sent nothing for this long says so in its HUD (a removed or stalled stream)."""


class _Mosaic:
    """Every camera seen, one tile each (its newest frame), in a grid on a canvas of fixed size.

    The canvas size (the ``--out`` video's frame size) is fixed when the first mosaic is composed,
    ``settle_s`` after the first message, from the cameras seen by then: columns × rows tiles of the
    first camera's frame size, downscaled so the canvas is at most ``max_width`` wide. One camera gives
    a canvas of its own frame size. A camera that appears later re-lays the grid out on the same canvas
    (smaller tiles), so the video keeps one size.
    """

    def __init__(self, *, max_width: int, alpha: float, settle_s: float) -> None:
        self.max_width, self.alpha, self.settle_s = max_width, alpha, settle_s
        self.tiles: dict[str, _Tile] = {}
        self.order: list[str] = []  # cameras in natural order of their ids
        self.first_ns: int | None = None
        self.canvas = None
        self.cells: dict[str, tuple[int, int, int, int]] = {}  # cam -> (x, y, cw, ch)

    def take(self, msg, now_ns: int) -> None:
        cam = msg.camera_id
        if cam not in self.tiles:
            self.tiles[cam] = _Tile(cam, alpha=self.alpha)
            self.order = sorted(self.tiles, key=_natural)
            self.cells = {}  # re-lay out at the next composition
        self.tiles[cam].take(msg, now_ns)
        if self.first_ns is None:
            self.first_ns = now_ns

    def ready(self, now_ns: int, *, ended: bool = False) -> bool:
        """Whether a mosaic can be composed: the canvas is fixed, or it may be fixed now."""
        if self.canvas is not None:
            return True
        if not self.tiles:
            return False
        return ended or now_ns - self.first_ns >= self.settle_s * 1e9

    def _fix_canvas(self) -> None:
        import numpy as np

        cols, rows = _grid(len(self.order))
        ref = self.tiles[self.order[0]].msg
        tw = min(ref.width, max(16, self.max_width // cols))
        th = max(1, round(tw * ref.height / ref.width))
        self.canvas = np.zeros((rows * th, cols * tw, 3), np.uint8)

    def _lay_out(self) -> None:
        if self.canvas is None:
            self._fix_canvas()
        cols, rows = _grid(len(self.order))
        h, w = self.canvas.shape[:2]
        cw, ch = w // cols, h // rows
        self.cells = {cam: ((i % cols) * cw, (i // cols) * ch, cw, ch) for i, cam in enumerate(self.order)}
        for tile in self.tiles.values():
            tile.dirty = tile.msg is not None  # new tile sizes: draw every camera again

    def compose(self, sub, now_ns: int):
        """The mosaic: each tile's newest frame (re-rendered only when it changed) and its HUD."""
        from perception.viz import draw_hud

        if not self.cells:
            self._lay_out()
        self.canvas[:] = 0
        for cam in self.order:
            tile, (x, y, cw, ch) = self.tiles[cam], self.cells[cam]
            if tile.dirty:
                tile.image = tile.renderer.render(tile.msg, sub, _fit(tile.msg.width, tile.msg.height, (cw, ch)))
                tile.dirty = False
            th, tw = tile.image.shape[:2]
            ox, oy = x + (cw - tw) // 2, y + (ch - th) // 2
            cell = self.canvas[oy : oy + th, ox : ox + tw]
            cell[:] = tile.image
            hud = tile.hud
            if now_ns - tile.last_ns > STALE_S * 1e9:
                hud = [*hud, f"no frames for {(now_ns - tile.last_ns) / 1e9:.0f} s"]
            draw_hud(cell, hud, copy=False)
        return self.canvas


class _Outputs:
    """The --out video (opened at the first frame) and the window; ``write`` returns False on q / Esc."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.path, self.fps = args.out, args.fps
        self.show = not args.no_window and _has_display()
        if not args.no_window and not self.show:
            print("view: no display found (DISPLAY/WAYLAND_DISPLAY unset): not opening a window", flush=True)
        self.writer = None
        self.size: tuple[int, int] | None = None

    def _write_video(self, img) -> None:
        import cv2

        from perception.errors import ConfigError

        h, w = img.shape[:2]
        if self.writer is None:
            self.size = (w, h)
            self.writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                self.writer = None
                raise ConfigError(f"--out: cannot open {self.path!r} for writing (mp4v)")
        if (w, h) != self.size:
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(img)

    def write(self, img) -> bool:
        import cv2

        if self.path:
            self._write_video(img)
        if not self.show:
            return True
        try:
            cv2.imshow("perception view", img)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            self.show = False
            print("view: this OpenCV has no GUI support (headless build); not showing a window; "
                  "use --out to record", flush=True)
            return True
        return key not in (27, ord("q"))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if self.show:
            import cv2

            cv2.destroyAllWindows()


def _ended(sub) -> None:
    e = sub.end
    print(f"view: stream ended ({e.reason}): the publisher sent {e.published} of {e.last_seq + 1} frames "
          f"(a reader's full queue refused {e.dropped}); {sub.missing_at_end} missing after the last one "
          "received here", flush=True)


DRAIN_MAX = 256
"""Most messages read in one go in latest-only mode before rendering (bounds the time between renders)."""


class _Receiver:
    """Messages of the cameras shown: every one, or (latest-only) the newest queued one of each camera."""

    def __init__(self, args: argparse.Namespace, sub) -> None:
        self.sub, self.cam, self.latest_only = sub, args.cam, args.latest_only
        self.skipped = 0  # older messages of a camera replaced by a newer one (latest-only)
        self.other = 0  # messages of other cameras than --cam
        self.others_seen: set[str] = set()

    def _read(self, timeout_s: float | None) -> list:
        msg = self.sub.recv(timeout_s)
        if msg is None:
            return []
        msgs = [msg]
        while self.latest_only and len(msgs) < DRAIN_MAX:
            more = self.sub.recv(0)
            if more is None:
                break
            msgs.append(more)
        return msgs

    def next(self, timeout_s: float | None) -> list | None:
        """The next messages to render (oldest first), or None when the stream ended or ``timeout_s``
        passed without a message of a camera shown."""
        import time

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            msgs = self._read(remaining)
            if not msgs:  # the stream ended, or the time is up
                return None
            if self.cam is not None:
                self.others_seen |= {m.camera_id for m in msgs if m.camera_id != self.cam}
                kept = [m for m in msgs if m.camera_id == self.cam]
                self.other += len(msgs) - len(kept)
                msgs = kept
            if msgs:
                if not self.latest_only:
                    return msgs
                newest = {m.camera_id: m for m in msgs}  # dict keeps each camera's last (newest) one
                self.skipped += len(msgs) - len(newest)
                return list(newest.values())

    def silence(self, args: argparse.Namespace) -> str:
        from perception.cli.keys import silence_reason

        if self.cam is None:
            return f"no message on {args.connect} topic {args.topic!r} for {args.timeout:g} s; " \
                   f"{silence_reason(self.sub, args)}"
        seen = ", ".join(sorted(self.others_seen, key=_natural)) or "none"
        return (f"no message of camera {self.cam!r} on {args.connect} topic {args.topic!r} for "
                f"{args.timeout:g} s (cameras seen: {seen}); "
                + ("check --cam" if self.others_seen else silence_reason(self.sub, args)))


def _print_rates(mosaic: _Mosaic, sub, receiver: _Receiver, frames: int, now: int) -> None:
    """Once a second: the rates of all cameras together, then each camera's (also into its HUD)."""
    per_cam = [(cam, *mosaic.tiles[cam].refresh_hud(now)) for cam in mosaic.order]
    lat = [t for tile in mosaic.tiles.values() for t in tile.rates.latencies(now)]
    fps = sum(c[1] for c in per_cam)
    p50, p99 = _percentiles(lat)
    print(f"view: {fps:.1f} frames/s  latency p50 {p50:.1f} ms  p99 {p99:.1f} ms  gaps {sub.gaps}  "
          f"skipped {receiver.skipped}  frames {frames}", flush=True)
    if len(per_cam) > 1:
        for cam, cfps, cp50, cp99 in per_cam:
            print(f"view:   {cam}: {cfps:.1f} frames/s  latency p50 {cp50:.1f} ms  p99 {cp99:.1f} ms", flush=True)
    for cam in mosaic.order:
        msg = mosaic.tiles[cam].msg
        _print_counts(msg, sub, prefix=f"{cam}: " if len(per_cam) > 1 else "")


def _percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    import numpy as np

    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def _loop(args: argparse.Namespace, sub, sink) -> tuple[int | None, int, _Mosaic, _Receiver]:
    """Receive, render and write until the end; returns (exit code to return at once or None, mosaic
    frames shown, the mosaic, the receiver)."""
    import time

    mosaic = _Mosaic(max_width=args.max_width, alpha=args.alpha, settle_s=0.0 if args.cam else args.settle)
    receiver, outputs = _Receiver(args, sub), _Outputs(args)
    frames, last_print = 0, time.monotonic_ns()
    try:
        while args.max_frames is None or frames < args.max_frames:
            msgs = receiver.next(args.timeout)
            now = time.monotonic_ns()
            if msgs is None and sub.end is not None:
                if frames == 0 and mosaic.ready(now, ended=True):  # ended while settling: show what came
                    outputs.write(mosaic.compose(sub, now))
                    frames += 1
                _ended(sub)
                break
            if msgs is None:
                print(f"view: {receiver.silence(args)}", file=sys.stderr, flush=True)
                return 1, frames, mosaic, receiver
            for msg in msgs:
                if sink is not None:
                    sink.log(msg, sub.classes)
                mosaic.take(msg, now)
            if now - last_print >= 1_000_000_000:
                _print_rates(mosaic, sub, receiver, frames, now)
                last_print = now
            if not mosaic.ready(now):
                continue
            if not outputs.write(mosaic.compose(sub, now)):
                return 0, frames, mosaic, receiver
            frames += 1
    finally:
        outputs.close()
    return None, frames, mosaic, receiver


def _print_counts(msg, sub, prefix: str = "") -> None:
    """The publisher's counts (zones, lines), once a second beside the rates."""
    counts = msg.counts
    if counts is not None:
        from perception.analytics.counting import counts_lines

        for line in counts_lines(counts, sub.classes):
            print(f"view: {prefix}{line}", flush=True)


def run_view(args: argparse.Namespace) -> int:
    from perception.cli.keys import subscriber_from_args
    from perception.outputs.rerun import rerun_sink_from_args

    _check_args(args)
    sink = rerun_sink_from_args(args)  # None unless --rerun / --rerun-save was given
    try:
        # latest-only is per camera, in _Receiver: the subscriber's own would keep one camera's newest only
        with subscriber_from_args(args, latest_only=False) as sub:
            code, frames, mosaic, receiver = _loop(args, sub, sink)
    finally:
        if sink is not None:
            sink.close()
    if code is not None:
        return code
    missing = sub.gaps + (sub.missing_at_end or 0)
    before = f", {sub.first_seq} sent before the first one received" if sub.first_seq else ""
    cams = ", ".join(f"{cam} {mosaic.tiles[cam].rendered}" for cam in mosaic.order) or "none"
    other = f", {receiver.other} of other cameras ignored (--cam {args.cam})" if args.cam else ""
    print(f"view: {frames} frames received, {missing} missing, {receiver.skipped} skipped{before}{other}; "
          f"messages shown by camera: {cams}", flush=True)
    return 0
