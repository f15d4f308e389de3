"""``perception view``: subscribe to a pipeline and show or record its label colours.

Renders the label colours over the message's preview image when it has one (the publisher's
``preview: jpeg``), else the colourised label map alone; draws tracks and a HUD; writes ``--out`` with
OpenCV's VideoWriter (mp4v); opens a window only when a display exists and ``--no-window`` is absent;
prints frames/s and capture→receive latency (p50/p99 over the last second) once a second.
"""

from __future__ import annotations

import argparse
import os
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
            "and capture-to-receive latency once a second."
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
                   help="downscale renders wider than this (default: %(default)s)")
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
    if args.max_width < 16:
        raise ConfigError(f"--max-width must be >= 16, got {args.max_width}")
    if args.out:
        refuse_existing(Path(args.out), overwrite=args.force, what="--out")


class _Renderer:
    """Label colours over the preview (or alone), tracks and a HUD, at most ``max_width`` wide."""

    def __init__(self, *, max_width: int, alpha: float) -> None:
        from perception.viz import generated_palette

        self.max_width, self.alpha = max_width, alpha
        self.lut, self.lut_version = generated_palette(), None
        self.canvas = None
        self.hud: list[str] = []

    def render(self, msg, sub):
        import cv2
        import numpy as np

        from perception.viz import colorize, draw_analytics, draw_hud, draw_tracks, overlay, palette

        if sub.classes_version is not None and sub.classes_version != self.lut_version:
            self.lut, self.lut_version = palette(sub.classes), sub.classes_version
        base = msg.preview
        h, w = msg.labels.shape if base is None else base.shape[:2]
        if w > self.max_width:
            h, w = max(1, round(h * self.max_width / w)), self.max_width
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
        return draw_hud(img, self.hud, copy=False)


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


def _loop(args: argparse.Namespace, sub, sink) -> tuple[int | None, int]:
    """Receive, render and write until the end; returns (exit code to return at once or None, frames)."""
    import time

    from perception.cli.keys import silence_reason

    rates, renderer, outputs = _Rates(), _Renderer(max_width=args.max_width, alpha=args.alpha), _Outputs(args)
    frames, last_print = 0, time.monotonic_ns()
    try:
        while args.max_frames is None or frames < args.max_frames:
            msg = sub.recv(args.timeout)
            if msg is None and sub.end is not None:
                _ended(sub)
                break
            if msg is None:
                print(f"view: no message on {args.connect} topic {args.topic!r} for {args.timeout:g} s; "
                      f"{silence_reason(sub, args)}", file=sys.stderr, flush=True)
                return 1, frames
            now = time.monotonic_ns()
            rates.add(now, (msg.t_receive_wall_ns - msg.t_capture_wall_ns) / 1e6)
            if sink is not None:
                sink.log(msg, sub.classes)
            if not outputs.write(renderer.render(msg, sub)):
                return 0, frames
            frames += 1
            if now - last_print >= 1_000_000_000:
                fps, p50, p99 = rates.summary(now)
                print(f"view: {fps:.1f} frames/s  latency p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
                      f"gaps {sub.gaps}  skipped {sub.skipped}  frames {frames}", flush=True)
                _print_counts(msg, sub)
                renderer.hud = [f"{fps:.1f} fps", f"latency p50 {p50:.0f} ms p99 {p99:.0f} ms"]
                last_print = now
    finally:
        outputs.close()
    return None, frames


def _print_counts(msg, sub) -> None:
    """The publisher's counts (zones, lines), once a second beside the rates."""
    counts = msg.counts
    if counts is not None:
        from perception.analytics.counting import counts_lines

        for line in counts_lines(counts, sub.classes):
            print(f"view: {line}", flush=True)


def run_view(args: argparse.Namespace) -> int:
    from perception.cli.keys import subscriber_from_args
    from perception.outputs.rerun import rerun_sink_from_args

    _check_args(args)
    sink = rerun_sink_from_args(args)  # None unless --rerun / --rerun-save was given
    try:
        with subscriber_from_args(args, latest_only=args.latest_only) as sub:
            code, frames = _loop(args, sub, sink)
    finally:
        if sink is not None:
            sink.close()
    if code is not None:
        return code
    missing = sub.gaps + (sub.missing_at_end or 0)
    before = f", {sub.first_seq} sent before the first one received" if sub.first_seq else ""
    print(f"view: {frames} frames received, {missing} missing, {sub.skipped} skipped{before}", flush=True)
    return 0
