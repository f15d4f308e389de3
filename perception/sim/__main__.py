"""Preview and time the scene generator: ``python -m perception.sim [--out preview.mp4] [--seed N] ...``.

Prints rendering and detector-simulator times per frame and the sequence's statistics (objects,
occlusions, entries, exits); with ``--out`` writes a video: the rendered frame on the left, the ground
truth (ids over instance colours) in the middle, the simulated detections on the right.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import cv2

    from perception.sim import Detections, DetectorSimulator, GtObject, SceneConfig, SceneSequence


def _colours(n: int) -> np.ndarray:
    """uint8[n, 3] distinct-ish BGR colours, black for id 0."""
    rng = np.random.default_rng(12345)
    table = rng.integers(60, 256, (n, 3)).astype(np.uint8)
    table[0] = 0
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m perception.sim", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="scene and detector seed (default 0)")
    parser.add_argument("--frames", type=int, default=150, help="frames to render (default 150)")
    parser.add_argument("--width", type=int, default=960, help="frame width in pixels (default 960)")
    parser.add_argument("--height", type=int, default=540, help="frame height in pixels (default 540)")
    parser.add_argument("--objects", type=int, default=8, help="object slots (default 8)")
    parser.add_argument("--miss-rate", type=float, default=0.1, help="detector miss rate (default 0.1)")
    parser.add_argument(
        "--fp-rate", type=float, default=0.05, help="false positives per object (default 0.05)"
    )
    parser.add_argument("--out", help="write a preview video here (.mp4)")
    return parser


def _preview(
    image: np.ndarray, instances: np.ndarray, objects: Sequence[GtObject], det: Detections, colours: np.ndarray
) -> np.ndarray:
    """One preview frame: the image, the ground truth (ids over instance colours) and the detections
    (ground-truth id or FP, and score, over their colours) side by side."""
    import cv2

    gt = cv2.addWeighted(image, 0.4, colours[instances % len(colours)], 0.6, 0)
    for o in objects:
        cv2.putText(
            gt,
            str(o.object_id),
            (o.box[0], max(12, o.box[1] - 3)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    dm = cv2.addWeighted(image, 0.4, colours[(det.instance_map * 37) % len(colours)], 0.6, 0)
    for inst, g in zip(det.instances, det.gt_ids, strict=True):
        label = f"{g}:{inst.score:.2f}" if g else f"FP:{inst.score:.2f}"
        x0, y0 = int(inst.box[0]), int(inst.box[1])
        cv2.putText(
            dm,
            label,
            (x0, max(12, y0 - 3)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (255, 255, 255) if g else (0, 0, 255),
            1,
            cv2.LINE_AA,
        )
    return np.hstack([image, gt, dm])


def _render(
    scene: SceneSequence, detector: DetectorSimulator, config: SceneConfig, writer: cv2.VideoWriter | None
) -> tuple[list[float], list[float], int, int, set[int]]:
    """Render every frame (and with a ``writer``, detect and write its preview).

    Returns the render and detector times (ms per frame), the visible object-frames, how many of them
    were partly hidden, and the ids seen."""
    from perception.sim import SceneFrame

    image = np.empty((config.height, config.width, 3), np.uint8)
    semantic = np.empty((config.height, config.width), np.uint8)
    instances = np.empty((config.height, config.width), np.uint16)
    colours = _colours(max(scene.num_ids + 1, 256))
    render_ms, detect_ms = [], []
    occluded = visible = 0
    seen: set[int] = set()
    for i in range(len(scene)):
        t0 = time.perf_counter()
        objects = scene.render_into(i, image=image, semantic=semantic, instances=instances)
        render_ms.append((time.perf_counter() - t0) * 1e3)
        visible += len(objects)
        occluded += sum(1 for o in objects if o.area < o.inframe_area)
        seen.update(o.object_id for o in objects)
        if writer is None:
            continue
        frame = SceneFrame(
            index=i, t_ns=0, image=image, semantic=semantic, instances=instances, objects=objects
        )
        t0 = time.perf_counter()
        det = detector(frame)
        detect_ms.append((time.perf_counter() - t0) * 1e3)
        writer.write(_preview(image, instances, objects, det, colours))
    return render_ms, detect_ms, visible, occluded, seen


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    import cv2

    from perception.errors import PerceptionError
    from perception.sim import DetectorSimulator, SceneConfig, SceneSequence

    try:
        config = SceneConfig(
            width=args.width,
            height=args.height,
            num_frames=args.frames,
            num_objects=args.objects,
            seed=args.seed,
        )
        t0 = time.perf_counter()
        scene = SceneSequence(config=config)
        setup_s = time.perf_counter() - t0
        detector = DetectorSimulator(miss_rate=args.miss_rate, fp_rate=args.fp_rate, seed=args.seed)
    except PerceptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    writer = None
    if args.out:
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        writer = cv2.VideoWriter(args.out, fourcc, config.fps, (3 * config.width, config.height))
        if not writer.isOpened():
            print(f"error: cannot write {args.out!r} (OpenCV VideoWriter failed to open it)", file=sys.stderr)
            return 2
    try:
        render_ms, detect_ms, visible, occluded, seen = _render(scene, detector, config, writer)
    finally:
        if writer is not None:
            writer.release()
    if writer is None:
        # Time the detector on a sample of frames when no video was written.
        for i in range(0, len(scene), max(1, len(scene) // 30)):
            frame = scene.frame(i)
            t0 = time.perf_counter()
            detector(frame)
            detect_ms.append((time.perf_counter() - t0) * 1e3)

    size = f"{config.width}x{config.height}"
    print(f"scene {size}, {len(scene)} frames, seed {config.seed}: setup {setup_s:.2f} s")
    print(
        f"render: p50 {np.median(render_ms):.2f} ms/frame, p99 {np.percentile(render_ms, 99):.2f} ms/frame; "
        f"detector simulator: p50 {np.median(detect_ms):.2f} ms/frame"
    )
    print(
        f"objects: {scene.num_ids} planned, {len(seen)} seen; {visible} visible object-frames, "
        f"{occluded} of them partly hidden by something nearer ({occluded / max(visible, 1):.0%})"
    )
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
