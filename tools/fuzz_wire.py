#!/usr/bin/env python3
"""Fuzz the wire decoder: every message must decode or raise ``TransportError``, within bounded memory.

Messages are mutations of real ones (the publisher's encoder on a street-like scene: every encoding,
with and without instance maps, tracks and a JPEG preview; class tables; end-of-stream messages):
bit flips, truncations, dropped/duplicated/swapped frames, header fields set to hostile values or
swapped, huge shapes, bad dtype strings, compression bombs (zstd/lz4 frames declaring hundreds of
megabytes), bogus JPEGs (huge declared size, progressive, PNG, truncated), plus random bytes.

Each message goes through the same calls as :class:`~perception.transport.subscriber.Subscriber`:
``unpack_header`` then ``decode_labels`` / ``decode_classes`` / ``decode_end``. Any other exception
is a failure (printed with the case number to reproduce it: ``--seed S --start N --count 1``).

Prints outcome counts, the slowest case, peak traced memory (``tracemalloc``: Python and numpy
allocations) and the process's peak resident set (``ru_maxrss``).

Usage: ``python tools/fuzz_wire.py [--count 100000] [--seed 0] [--no-tracemalloc]``
"""

from __future__ import annotations

import argparse
import collections
import random
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from perception.errors import TransportError  # noqa: E402
from perception.transport.wire import MessageDecoder, MessageEncoder  # noqa: E402
from perception.types import ClassInfo, FrameMeta, FrameResult, Instance, Track, TrackState  # noqa: E402

W, H = 96, 64
BOMB_PIXELS = 20000 * 20000
"""Content size declared by the compression bombs (400 MB of labels), far above the default limit."""

CLASSES = tuple(ClassInfo(id=i, name=n, color=(i * 40 % 256, 90, 200), is_thing=i >= 2)
                for i, n in enumerate(("sky", "road", "car", "pedestrian")))

HOSTILE = (
    0, 1, -1, 2**31, 2**32 + 7, 2**63 - 1, -(2**63), 2**64 - 1, 40000, 1 << 40, True, False, None,
    0.5, -0.0, float("nan"), float("inf"), -float("inf"), 1e308,
    "", "u1,(", "<f8", "uint16", "uint8", "O", "V8", "S1000000000", "(2,)u1", "zstd", "lz4", "raw", "jpeg",
    "labels", "instances", "preview", "\u00ff", b"\x00\xff", [], [1, 2], [40000, 40000],
    [2**62, 2**62], [-1, 5], [1, 2, 3], {}, {"v": 2}, [[[]]], {"name": "labels"},
)


# --------------------------------------------------------------------------------------------------
# seed messages: what the real encoder sends


def _scene(i: int) -> FrameResult:
    labels = np.zeros((H, W), np.uint8)
    labels[H // 2:] = 1
    x = (i * 7) % (W - 24)
    labels[20:40, x:x + 24] = 2
    labels[10:30, W - 10:W - 4] = 3
    imap = np.zeros((H, W), np.uint16)
    imap[labels == 2] = 1
    imap[labels == 3] = 2
    instances = (
        Instance(index=1, class_id=2, score=0.9, box=(x, 20, x + 24, 40), area=480, centroid=(x + 11.5, 29.5)),
        Instance(index=2, class_id=3, score=0.6, box=(W - 10, 10, W - 4, 30), area=120, centroid=(W - 7.5, 19.5)),
    )
    tracks = (
        Track(track_id=40 + i, instance_index=2, class_id=3, score=0.6, box=(W - 10, 10, W - 4, 30),
              velocity=(0.5, 0.0), age=9, hits=8, state=TrackState.CONFIRMED),
        Track(track_id=7, instance_index=1, class_id=2, score=0.9, box=(x, 20, x + 24, 40),
              velocity=(210.0, -1.5), age=30, hits=29, state=TrackState.CONFIRMED),
        Track(track_id=3, instance_index=0, class_id=2, score=0.4, box=(1, 2, 9, 9),
              velocity=(0.0, 0.0), age=4, hits=2, state=TrackState.LOST),
    )
    frame = np.zeros((H, W, 3), np.uint8)
    frame[..., 1] = np.arange(W, dtype=np.uint8)[None, :] * 2
    meta = FrameMeta(seq=i, camera_id="cam0", frame_index=i, t_mono_ns=10**12 + i, t_wall_ns=1_700_000_000 * 10**9 + i,
                     pts_ns=i * 66_666_667, width=W, height=H)
    return FrameResult(meta=meta, labels=labels, instance_map=imap, instances=instances, tracks=tracks,
                       latencies_ms={"inference": 20.5, "post": 4.0}, frame=frame)


def seed_messages() -> list[tuple[str, list[bytes]]]:
    """``(kind, frames)`` of real messages, topic removed; ``kind`` is labels, classes or end."""
    out: list[tuple[str, list[bytes]]] = []
    for k, (encoding, preview) in enumerate([(e, p) for e in ("raw", "zstd", "lz4") for p in ("none", "jpeg")]):
        enc = MessageEncoder(encoding=encoding, preview=preview, preview_max_width=64, session=100 + k)
        full = _scene(k)
        bare = FrameResult(meta=full.meta, labels=full.labels)
        for result in (full, bare):
            frames = enc.encode_labels(result, seq=k, classes_version="abc", t_publish_wall_ns=5)
            out.append(("labels", [bytes(memoryview(f).cast("B")) for f in frames]))
        out.append(("classes", [enc.encode_classes(CLASSES, t_publish_wall_ns=5)]))
        out.append(("end", [enc.encode_end(last_seq=k, published=k + 1, dropped=0, reason="end",
                                           t_publish_wall_ns=5)]))
    return out


def _bombs() -> dict[str, bytes]:
    """Small compressed frames that declare (and hold) ``BOMB_PIXELS`` bytes of zeros, made by streaming."""
    import lz4.frame
    import zstandard

    chunk = bytes(1 << 22)
    zobj = zstandard.ZstdCompressor(level=1, write_content_size=True).compressobj(size=BOMB_PIXELS)
    zparts = [zobj.compress(chunk) for _ in range(BOMB_PIXELS // len(chunk))]
    zparts += [zobj.compress(bytes(BOMB_PIXELS % len(chunk))), zobj.flush()]
    lz = lz4.frame.LZ4FrameCompressor(auto_flush=True)
    lparts = [lz.begin(source_size=BOMB_PIXELS)]
    lparts += [lz.compress(chunk) for _ in range(BOMB_PIXELS // len(chunk))]
    lparts += [lz.compress(bytes(BOMB_PIXELS % len(chunk))), lz.flush()]
    no_size = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(bytes(W * H))
    return {"zstd": b"".join(zparts), "lz4": b"".join(lparts), "zstd-nosize": no_size}


def _jpegs() -> dict[str, bytes]:
    import cv2

    img = np.full((32, 48, 3), 90, np.uint8)
    base = cv2.imencode(".jpg", img)[1].tobytes()
    prog = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_PROGRESSIVE), 1])[1].tobytes()
    png = cv2.imencode(".png", img)[1].tobytes()
    sof = base.index(b"\xff\xc0")
    huge = bytearray(base)
    huge[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2  # 20000 x 20000 declared in 700 bytes
    return {"base": base, "huge": bytes(huge), "progressive": prog, "png": png, "truncated": base[: len(base) // 2],
            "soi-only": b"\xff\xd8\xff\xd9", "random": b"\xff\xd8" + random.Random(1).randbytes(200)}


# --------------------------------------------------------------------------------------------------
# mutations


def _header(frames: list[bytes]) -> dict | None:
    try:
        h = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    except Exception:
        return None
    return h if isinstance(h, dict) else None


def _with_header(frames: list[bytes], header: dict) -> list[bytes]:
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]


def _containers(header: dict) -> list[dict]:
    """The header and the maps inside it (parts, tracks, classes) whose fields a mutation may change."""
    out = [header]
    for key in ("parts", "tracks", "classes"):
        v = header.get(key)
        if isinstance(v, list):
            out += [x for x in v if isinstance(x, dict)]
    return out


def m_bitflip(rng: random.Random, frames: list[bytes], _a) -> list[bytes]:
    if not frames:
        return frames
    i = rng.randrange(len(frames))
    if not frames[i]:
        return frames
    b = bytearray(frames[i])
    for _ in range(rng.randint(1, 8)):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return [*frames[:i], bytes(b), *frames[i + 1:]]


def m_truncate(rng: random.Random, frames: list[bytes], _a) -> list[bytes]:
    if not frames:
        return frames
    i = rng.randrange(len(frames))
    return [*frames[:i], frames[i][: rng.randrange(len(frames[i]) + 1)], *frames[i + 1:]]


def m_frames(rng: random.Random, frames: list[bytes], _a) -> list[bytes]:
    f = list(frames)
    op = rng.randrange(4)
    if op == 0 and f:
        del f[rng.randrange(len(f))]
    elif op == 1 and f:
        f.insert(rng.randrange(len(f) + 1), f[rng.randrange(len(f))])
    elif op == 2 and len(f) > 1:
        i, j = rng.sample(range(len(f)), 2)
        f[i], f[j] = f[j], f[i]
    else:
        f.append(rng.randbytes(rng.randrange(64)))
    return f


def m_field(rng: random.Random, frames: list[bytes], _a) -> list[bytes]:
    h = _header(frames)
    if h is None:
        return frames
    target = rng.choice(_containers(h))
    key = rng.choice([*target.keys(), "v", "w", "h", "ninst", "shape", "dtype", "enc", "idx", "size"])
    if rng.random() < 0.1:
        target.pop(key, None)
    else:
        target[key] = rng.choice(HOSTILE)
    return _with_header(frames, h)


def m_swap(rng: random.Random, frames: list[bytes], _a) -> list[bytes]:
    h = _header(frames)
    if h is None:
        return frames
    target = rng.choice(_containers(h))
    if len(target) < 2:
        return frames
    a, b = rng.sample(list(target), 2)
    target[a], target[b] = target[b], target[a]
    return _with_header(frames, h)


def m_shape(rng: random.Random, frames: list[bytes], _a) -> list[bytes]:
    h = _header(frames)
    if h is None or not isinstance(h.get("parts"), list):
        return frames
    big = rng.choice([40000, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, 65536, 1 << 20, 0])
    other = rng.choice([1, 2, big, 40000, 3])
    if rng.random() < 0.5:
        h["w"], h["h"] = big, other
    for p in h["parts"]:
        if isinstance(p, dict) and rng.random() < 0.7:
            p["shape"] = [other, big] if p.get("name") != "preview" else [big, other, 3]
            if rng.random() < 0.3:
                p["dtype"] = rng.choice(["u1,(", "uint64", "float32", "<u2", "S9", "uint8", "uint16", "V16"])
    return _with_header(frames, h)


def m_bomb(rng: random.Random, frames: list[bytes], assets) -> list[bytes]:
    h = _header(frames)
    if h is None or not isinstance(h.get("parts"), list) or len(frames) < 2:
        return frames
    enc = rng.choice(["zstd", "lz4", "zstd-nosize"])
    bomb = assets["bombs"][enc]
    p = h["parts"][0] if h["parts"] and isinstance(h["parts"][0], dict) else {}
    p.update(enc=enc.split("-")[0], size=len(bomb))
    if rng.random() < 0.5:  # a header that admits the size: the limits must refuse it
        h["w"] = h["h"] = 20000
        p["shape"] = [20000, 20000]
    return _with_header([frames[0], bomb, *frames[2:]], h)


def m_jpeg(rng: random.Random, frames: list[bytes], assets) -> list[bytes]:
    h = _header(frames)
    if h is None or not isinstance(h.get("parts"), list):
        return frames
    name = rng.choice(list(assets["jpegs"]))
    jpg = assets["jpegs"][name]
    shape = rng.choice([[32, 48, 3], [20000, 20000, 3], [48, 32, 3], [32, 48], [32, 48, 4], [0, 0, 3]])
    h["parts"].append({"name": "preview", "dtype": "uint8", "shape": shape, "enc": "jpeg", "size": len(jpg)})
    return _with_header([*frames[:1 + len(h["parts"]) - 1], jpg], h)


def m_random(rng: random.Random, frames: list[bytes], _a) -> list[bytes]:
    n = rng.randint(1, 4)
    return [rng.randbytes(rng.choice([0, 1, 7, 64, 500, 5000])) for _ in range(n)]


MUTATIONS: dict[str, Callable] = {
    "bitflip": m_bitflip, "truncate": m_truncate, "frames": m_frames, "field": m_field, "swap": m_swap,
    "shape": m_shape, "bomb": m_bomb, "jpeg": m_jpeg, "random": m_random,
}


# --------------------------------------------------------------------------------------------------
# running


def decode(decoder: MessageDecoder, kind: str, frames: list[bytes]) -> None:
    """What the subscriber does with a message of ``kind``'s topic (topic frame removed)."""
    if kind == "classes":
        decoder.decode_classes(frames)
    elif kind == "end":
        decoder.decode_end(frames)
    else:
        if len(frames) < 1:
            raise TransportError("malformed message: a label message has no header frame")
        decoder.decode_labels(frames, header=decoder.unpack_header(frames[0]))


class Fuzzer:
    """Makes and decodes case ``n`` of seed ``seed`` (the same case every time)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.seeds = seed_messages()
        self.assets = {"bombs": _bombs(), "jpegs": _jpegs()}
        self.decoder = MessageDecoder()

    def case(self, n: int) -> tuple[str, str, list[bytes]]:
        rng = random.Random(self.seed * 1_000_003 + n)
        kind, frames = rng.choice(self.seeds)
        names = rng.choices(list(MUTATIONS), weights=[3, 2, 1, 4, 1, 2, 1, 1, 1], k=rng.randint(1, 3))
        if kind != "labels" and "random" not in names:
            names = [m for m in names if m in ("bitflip", "truncate", "frames", "field", "swap")] or ["field"]
        for name in names:
            frames = MUTATIONS[name](rng, frames, self.assets)
        return kind, "+".join(names), frames

    def run(self, n: int) -> tuple[str, str, BaseException | None]:
        """``(mutation, outcome, unexpected exception or None)``; outcome ok / TransportError / the error type."""
        kind, names, frames = self.case(n)
        try:
            decode(self.decoder, kind, frames)
        except TransportError:
            return names, "TransportError", None
        except Exception as exc:  # the finding: anything else escaping the decoder
            return names, type(exc).__name__, exc
        return names, "ok", None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case number (to reproduce one)")
    ap.add_argument("--no-tracemalloc", action="store_true", help="faster; peak RSS only")
    args = ap.parse_args(argv)
    fuzzer = Fuzzer(args.seed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if not args.no_tracemalloc:
        tracemalloc.start()
    outcomes: collections.Counter = collections.Counter()
    by_mutation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    slowest = (0.0, -1)
    t0 = time.perf_counter()
    for n in range(args.start, args.start + args.count):
        t = time.perf_counter()
        names, outcome, exc = fuzzer.run(n)
        dt = time.perf_counter() - t
        slowest = max(slowest, (dt, n))
        outcomes[outcome] += 1
        for name in names.split("+"):
            by_mutation[name][outcome] += 1
        if exc is not None and len(failures) < 20:
            failures.append((n, names, repr(exc)[:200]))
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if not args.no_tracemalloc else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{args.count} messages (seed {args.seed}, cases {args.start}..{args.start + args.count - 1}) "
          f"in {elapsed:.1f} s ({args.count / elapsed:.0f}/s)")
    for outcome, k in outcomes.most_common():
        print(f"  {outcome:16s} {k}")
    print("by mutation (a case may apply up to three):")
    for name in MUTATIONS:
        c = by_mutation[name]
        print(f"  {name:9s} " + ", ".join(f"{o} {k}" for o, k in c.most_common()))
    print(f"slowest case: #{slowest[1]} {slowest[0] * 1e3:.1f} ms")
    if peak is not None:
        print(f"peak traced memory (tracemalloc, whole run incl. seeds and bombs): {peak / 2**20:.1f} MiB")
    print(f"peak RSS (ru_maxrss): {rss / 1024:.1f} MiB (at start of fuzzing: {rss_before / 1024:.1f} MiB)")
    for n, names, err in failures:
        print(f"FAILURE case {n} [{names}]: {err}")
    return 1 if failures or set(outcomes) - {"ok", "TransportError"} else 0


if __name__ == "__main__":
    raise SystemExit(main())
