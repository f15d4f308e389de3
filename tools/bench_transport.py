#!/usr/bin/env python3
"""ZeroMQ publish -> receive throughput of 1920x1080 label maps, raw / zstd / lz4, CURVE off and on.

The publisher runs in this process and publishes as fast as it can for ``--seconds``; a subscriber in a
separate process (spawned, so nothing is shared but the socket) receives and fully decodes every
message. Label maps are synthetic street scenes in CamVid's classes (sky, buildings, road, pavement,
trees, poles, cars, pedestrians, with ragged boundaries like a real network's output), not noise,
so the compression ratios are representative.

Prints one row per encoding and CURVE setting: messages/s received, MB/s of label data (uncompressed
equivalent) and on the wire, compression ratio, publisher encode time and subscriber decode time per
message, how often the publisher found the subscriber's queue full (publish() returning False: the
publisher never waits, so that is how back-pressure shows) and the subscriber's gaps in ``seq``, and,
for CURVE rows, messages/s as a share of the same encoding without CURVE (the cost of encryption:
both ends encrypt / decrypt every byte on top of the rest).

    .venv/bin/python tools/bench_transport.py [--seconds 3] [--width 1920 --height 1080] [--curve off,on]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from perception.types import FrameResult


def street_labels(width: int, height: int, variant: int, seed: int = 0) -> np.ndarray:
    """A synthetic street-scene label map ``uint8[height, width]`` (CamVid ids); ``variant`` moves things."""
    import cv2

    rng = np.random.default_rng(seed + variant)
    lab = np.zeros((height, width), np.uint8)  # 0 sky
    horizon = int(height * 0.42)

    def ragged(poly: np.ndarray, amp: float) -> np.ndarray:
        """Densify a polygon's edges and jitter them (segmentation boundaries are never straight)."""
        pts = []
        for a, b in zip(poly, np.roll(poly, -1, axis=0)):
            n = max(2, int(np.hypot(*(b - a)) / 12))
            t = np.linspace(0, 1, n, endpoint=False)[:, None]
            pts.append(a + t * (b - a))
        pts = np.concatenate(pts)
        pts += rng.normal(0, amp, pts.shape)
        return pts.round().astype(np.int32)

    # buildings (1) on both sides with an uneven roof line
    for x0, x1 in ((0, int(width * 0.38)), (int(width * 0.62), width)):
        xs = np.linspace(x0, x1, 8)
        roof = rng.integers(int(height * 0.05), int(height * 0.3), 8)
        poly = np.array([[x0, horizon + 40]] + [[x, y] for x, y in zip(xs, roof)] + [[x1, horizon + 40]], float)
        cv2.fillPoly(lab, [ragged(poly, 2.0)], 1)
    # trees (5)
    for _ in range(5):
        c = (int(rng.integers(0, width)), int(rng.integers(int(height * 0.15), horizon)))
        cv2.ellipse(lab, c, (int(rng.integers(40, 140)), int(rng.integers(40, 110))), 0, 0, 360, 5, -1)
    # pavement (4) and road (3), fence (7) strip
    cv2.fillPoly(lab, [ragged(np.array([[0, horizon + 30], [width, horizon + 30], [width, height], [0, height]],
                                       float), 1.5)], 4)
    cv2.fillPoly(lab, [ragged(np.array([[int(width * 0.44), horizon + 30], [int(width * 0.56), horizon + 30],
                                        [int(width * 0.98), height], [int(width * 0.02), height]], float), 1.5)], 3)
    cv2.rectangle(lab, (0, horizon + 10), (int(width * 0.3), horizon + 30), 7, -1)
    # poles (2) and signs (6)
    for x in rng.integers(0, width, 4):
        cv2.rectangle(lab, (int(x), int(height * 0.2)), (int(x) + 8, horizon + 60), 2, -1)
        cv2.rectangle(lab, (int(x) - 15, int(height * 0.2)), (int(x) + 23, int(height * 0.2) + 30), 6, -1)
    # cars (8): boxes with rounded, ragged outlines, moving with the variant
    for k in range(6):
        w = int(rng.integers(140, 420))
        h = int(w * rng.uniform(0.45, 0.7))
        x = int((rng.integers(0, width - w) + variant * 23 * (k + 1)) % (width - w))
        y = int(rng.integers(horizon, height - h))
        poly = np.array([[x, y + h * 0.3], [x + w * 0.2, y], [x + w * 0.8, y], [x + w, y + h * 0.3],
                         [x + w, y + h], [x, y + h]], float)
        cv2.fillPoly(lab, [ragged(poly, 2.5)], 8)
    # pedestrians (9) and a bicyclist (10)
    for k in range(5):
        x = int((rng.integers(0, width - 40) + variant * 7) % (width - 40))
        y = int(rng.integers(horizon, height - 160))
        cv2.ellipse(lab, (x + 20, y + 80), (18, 75), 0, 0, 360, 9 if k else 10, -1)
    return lab


def _subscriber(endpoint: str, ready, results, idle_s: float, keys: tuple[str, str] | None) -> None:
    from perception.transport.subscriber import Subscriber

    logging.getLogger("perception").setLevel(logging.ERROR)  # the table says what fell behind
    server_key, client_keys = keys if keys else (None, None)
    with Subscriber(address=endpoint, rcvhwm=4, server_key=server_key, client_keys=client_keys) as sub:
        ready.set()
        n = 0
        wire = 0
        t_first = t_last = None
        while True:
            msg = sub.recv(idle_s)
            if msg is None:
                break
            t_last = time.perf_counter()
            if t_first is None:
                t_first = t_last
            n += 1
            wire += sum(p["size"] for p in msg.header["parts"])  # bytes of the data parts as sent
            if msg.labels.shape != (msg.height, msg.width):
                raise RuntimeError(f"bad label map shape {msg.labels.shape}")
        results.put({"n": n, "wire": wire, "span": (t_last - t_first) if n > 1 else 0.0, "gaps": sub.gaps})


def _decode_ms(encoding: str, labels: np.ndarray, reps: int) -> tuple[float, float, int]:
    """Encode and decode cost (ms per message) measured in-process, and the encoded size."""
    from perception.transport.wire import MessageDecoder, MessageEncoder
    from perception.types import FrameMeta

    h, w = labels.shape
    meta = FrameMeta(seq=0, camera_id="bench", frame_index=0, t_mono_ns=0, t_wall_ns=0, pts_ns=0, width=w, height=h)
    enc, dec = MessageEncoder(encoding=encoding), MessageDecoder()
    frames = enc.encode_labels(FrameResult(meta=meta, labels=labels), seq=0, t_publish_wall_ns=0)
    t0 = time.perf_counter()
    for i in range(reps):
        frames = enc.encode_labels(FrameResult(meta=meta, labels=labels), seq=i, t_publish_wall_ns=0)
    t1 = time.perf_counter()
    for _ in range(reps):
        dec.decode_labels(frames)
    t2 = time.perf_counter()
    size = frames[1].nbytes if isinstance(frames[1], np.ndarray) else len(frames[1])
    return (t1 - t0) / reps * 1e3, (t2 - t1) / reps * 1e3, size


def _keys(folder: Path) -> tuple[object, tuple[str, str]]:
    """A server and a client key pair in ``folder``: (server keys, (server .key, client .key_secret))."""
    from perception.transport.curve import CurveServerKeys, write_key_pair

    server_pub, server_secret = write_key_pair(folder, "server")
    client_pub, client_secret = write_key_pair(folder, "client")
    return CurveServerKeys.load(server_secret, [client_pub]), (str(server_pub), str(client_secret))


def bench(encoding: str, maps: list[np.ndarray], seconds: float, curve: tuple | None = None) -> dict:
    from perception.modelcard import CAMVID_CLASSES
    from perception.transport.publisher import Publisher
    from perception.types import ClassInfo, FrameMeta

    classes = [ClassInfo(id=c.id, name=c.name, color=tuple(c.color), is_thing=c.is_thing) for c in CAMVID_CLASSES]
    h, w = maps[0].shape
    ctx = mp.get_context("spawn")
    server_keys, client_files = curve if curve else (None, None)
    with Publisher(address="tcp://127.0.0.1:0", encoding=encoding, classes=classes, hwm=4, curve=server_keys,
                   log_interval_s=3600) as pub:
        ready, results = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=_subscriber, args=(pub.endpoint, ready, results, 1.0, client_files), daemon=True)
        proc.start()
        try:
            if not ready.wait(60):
                raise RuntimeError("subscriber process did not start")
            deadline = time.monotonic() + 30
            while pub.stats.subscriptions < 1:
                pub.poll()
                if time.monotonic() > deadline:
                    raise RuntimeError("subscriber never subscribed")
                time.sleep(0.01)
            i = 0
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                now = time.time_ns()
                meta = FrameMeta(seq=i, camera_id="bench", frame_index=i, t_mono_ns=time.monotonic_ns(),
                                 t_wall_ns=now, pts_ns=0, width=w, height=h)
                # the maps are never modified, so reusing them with zero-copy raw sends is safe
                if not pub.publish(FrameResult(meta=meta, labels=maps[i % len(maps)])):
                    time.sleep(0.0005)  # the subscriber is behind: back off briefly instead of spinning
                i += 1
            stats = pub.stats
            res = results.get(timeout=60)
        finally:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    res.update(published=stats.sent, dropped=stats.dropped)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="publishing time per row (default 3)")
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--encodings", default="raw,zstd,lz4")
    ap.add_argument("--curve", default="off,on", help="CURVE settings to run, 'off', 'on' or 'off,on' (default)")
    args = ap.parse_args(argv)
    logging.getLogger("perception").setLevel(logging.ERROR)  # the table says what fell behind

    maps = [street_labels(args.width, args.height, v) for v in range(8)]
    mb = maps[0].nbytes / 1e6
    print(f"label maps {args.width}x{args.height} uint8 ({mb:.2f} MB raw), {len(maps)} street-scene variants, "
          f"{args.seconds:g} s per row, subscriber in a separate process, TCP on 127.0.0.1")
    head = (f"{'encoding':8} {'curve':5} {'msg/s':>8} {'MB/s data':>10} {'MB/s wire':>10} {'ratio':>7} "
            f"{'enc ms':>7} {'dec ms':>7} {'sent':>6} {'full':>5} {'gaps':>5} {'vs off':>7}")
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory() as tmp:
        curve = _keys(Path(tmp)) if "on" in args.curve.split(",") else None
        for encoding in args.encodings.split(","):
            enc_ms, dec_ms, _size = _decode_ms(encoding, maps[0], 20)
            plain_rate = None
            for setting in args.curve.split(","):
                r = bench(encoding, maps, args.seconds, curve if setting == "on" else None)
                rate = (r["n"] - 1) / r["span"] if r["span"] > 0 else 0.0
                plain_rate = rate if setting == "off" else plain_rate
                vs = f"{rate / plain_rate:7.2f}" if setting == "on" and plain_rate else f"{'':7}"
                wire_per_msg = r["wire"] / max(1, r["n"])
                print(f"{encoding:8} {setting:5} {rate:8.1f} {rate * mb:10.1f} {rate * wire_per_msg / 1e6:10.2f} "
                      f"{maps[0].nbytes / wire_per_msg:7.1f} {enc_ms:7.2f} {dec_ms:7.2f} {r['published']:6d} "
                      f"{r['dropped']:5d} {r['gaps']:5d} {vs}")
    print("msg/s: messages received and decoded per second; MB/s data: uncompressed label bytes/s; "
          "MB/s wire: label-part bytes/s as sent; ratio = raw / wire size; enc/dec ms: per message, "
          "in-process (no CURVE); full: times publish() found the subscriber's queue full; gaps: messages "
          "the subscriber lost; vs off: msg/s with CURVE / without.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
