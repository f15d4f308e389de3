#!/usr/bin/env python3
"""The post-processing stage alone (issue 28): per-step medians and the total, ms per frame.

Runs :class:`perception.runtime.post.PostProcessor` with the default configuration (refine
upsampling, panoptic grouping, tracking with colour appearance) on the bundled model's real outputs
for the dash-cam clip (``../shared/data/video/solidWhiteRight.mp4``, 221 frames, 960×540). The model
is run once per frame first (its outputs are kept, or read from ``--cache``), so only the post stage
is timed. Each pass starts a fresh :class:`PostProcessor` (the tracker sees the clip from its first
frame) and warms it as the stage does (:meth:`PostProcessor.warm`).

Prints the median over all timed frames of each step the stage times (``upsample``, ``panoptic``,
``tracking``, ``post`` = the whole stage), plus the upsampler's own sub-steps. ``--digest`` writes a
per-frame fingerprint of the outputs (labels, instance map, instances, tracks) as JSON, to check that
two versions of the code give identical results. ``--cv-threads`` sets OpenCV's thread count first
(the stage itself leaves OpenCV's default).

    python tools/bench_post.py [--passes 3] [--cache /tmp/post_outputs.npz] [--digest out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.backends.factory import open_backend  # noqa: E402
from perception.config import load_config  # noqa: E402
from perception.modelcard import load_card  # noqa: E402
from perception.runtime.post import PostProcessor  # noqa: E402
from perception.runtime.protocol import OUTPUT_KEYS  # noqa: E402
from perception.types import FrameMeta  # noqa: E402

DASHCAM = REPO.parent / "shared" / "data" / "video" / "solidWhiteRight.mp4"
if not DASHCAM.is_file():
    DASHCAM = Path("/work/shared/data/video/solidWhiteRight.mp4")


def read_frames(video: Path, limit: int | None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames: list[np.ndarray] = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise SystemExit(f"no frames read from {video}")
    return frames


def model_outputs(model: Path, frames: list[np.ndarray], threads: int, cache: Path | None) -> dict[str, np.ndarray]:
    """``{kind: float32[N, ...]}`` for every frame (read from ``cache`` when it holds as many frames)."""
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            data = {k: z[k] for k in z.files}
        if all(v.shape[0] == len(frames) for v in data.values()):
            return data
    from perception.inference import Segmenter

    per: dict[str, list[np.ndarray]] = {}
    with open_backend(model, threads=threads) as b:
        seg = Segmenter(backend=b)
        for f in frames:
            out = seg(f)
            for k in OUTPUT_KEYS:
                v = getattr(out, k)
                if v is not None:
                    per.setdefault(k, []).append(np.array(v, np.float32, copy=True))
        data = {k: np.stack(v) for k, v in per.items()}
        data["input_size"] = np.asarray(seg.input_size, np.int64)[None].repeat(len(frames), 0)
    if cache is not None:
        np.savez(cache, **data)
    return data


def _fingerprint(result) -> dict:
    h = hashlib.sha1(np.ascontiguousarray(result.labels).tobytes()).hexdigest()[:16]
    im = result.instance_map
    hi = hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest()[:16] if im is not None else None
    return {"labels": h, "instance_map": hi, "instances": repr(result.instances), "tracks": repr(result.tracks)}


def run_pass(config, card, frames, outputs, *, digest: list | None) -> list[dict[str, float]]:
    """One pass over the clip with a fresh PostProcessor: per-frame stage timings (ms)."""
    input_size = tuple(int(v) for v in outputs["input_size"][0])
    post = PostProcessor(card=card, postprocess=config.postprocess, tracking=config.tracking, input_size=input_size)
    H, W = frames[0].shape[:2]
    post.warm("cam0", (W, H))
    timings = []
    for i, frame in enumerate(frames):
        meta = FrameMeta(seq=i, camera_id="cam0", frame_index=i, t_mono_ns=time.monotonic_ns(),
                         t_wall_ns=time.time_ns(), pts_ns=int(i * 4e7), width=W, height=H)
        feeds = {k: outputs[k][i] for k in post.output_keys}
        t: dict[str, float] = {}
        result = post.process(meta=meta, frame=frame, outputs=feeds, timings_ms=t)
        up = post._upsampler((W, H))  # the stage's own upsampler (its sub-step times; no public accessor)
        t.update({f"upsample.{k}": v for k, v in up.last_timing_ms.items() if k != "total"})
        timings.append(t)
        if digest is not None:
            digest.append(_fingerprint(result))
    return timings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=DASHCAM)
    ap.add_argument("--frames", type=int, default=None, help="first N frames only (default: all)")
    ap.add_argument("--passes", type=int, default=3, help="timed passes over the clip (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for the model run")
    ap.add_argument("--cache", type=Path, default=None, help="npz of the model outputs (written if missing)")
    ap.add_argument("--digest", type=Path, default=None, help="write per-frame output fingerprints (JSON)")
    ap.add_argument("--json", action="store_true", help="print the medians as one JSON line")
    ap.add_argument("--cv-threads", type=int, default=None, help="cv2.setNumThreads before the run (default: leave)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = ap.parse_args()
    if args.cv_threads is not None:
        cv2.setNumThreads(args.cv_threads)
    config = load_config(None, args.set)
    card = load_card(config.model.path)
    frames = read_frames(args.video, args.frames)
    outputs = model_outputs(Path(config.model.path), frames, args.threads, args.cache)
    digest: list | None = [] if args.digest else None
    every: list[dict[str, float]] = []
    for p in range(args.passes):
        every += run_pass(config, card, frames, outputs, digest=digest if p == 0 else None)
    keys = ["upsample", "panoptic", "tracking", "post"]
    keys += sorted({k for t in every for k in t if k.startswith("upsample.")})
    med = {k: float(np.median([t[k] for t in every if k in t])) for k in keys if any(k in t for t in every)}
    if args.digest:
        args.digest.write_text(json.dumps(digest))
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in med.items()}))
        return 0
    print(f"post stage alone: {len(frames)} frames of {args.video.name} at {frames[0].shape[1]}x{frames[0].shape[0]}, "
          f"{args.passes} passes; medians (ms per frame):")
    for k, v in med.items():
        print(f"  {k:<20} {v:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
