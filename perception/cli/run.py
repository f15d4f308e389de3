"""``perception run``: the pipeline from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys

RUN_HELP = """\
Run the pipeline: capture -> inference -> full-resolution labels -> tracking -> ZeroMQ.

SRC forms: a video file; an image folder; camera:N or /dev/videoN; rtsp://... or http(s)://...;
gst:<GStreamer pipeline>; a recorded drive (.bag, .mcap, ROS 2 bag folder); synthetic or
synthetic:key=value,... (a generated street scene; needs no camera).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the pipeline", description=RUN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default=None,
                   help="YAML configuration (default: configs/default.yaml: ONNX Runtime on the CPU, "
                        "the bundled model, a synthetic scene)")
    p.add_argument("--source", metavar="[ID=]SRC", action="append", dest="sources",
                   help="input to read (overrides source.uri); see the forms above. Repeat it for several "
                        "streams in one run, each optionally named ID= (letters, digits, - and _; default "
                        "cam0, cam1, ... in order)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override any configuration key, e.g. --set publish.encoding=zstd "
                        "--set model.backend=auto (repeatable; values are YAML)")
    p.add_argument("--publish", metavar="ADDR", help="ZeroMQ address to bind (overrides publish.address; "
                                                     "default tcp://127.0.0.1:5555)")
    p.add_argument("--overlay", metavar="OUT.mp4", help="write the label colours blended over the frames to a video")
    p.add_argument("--record", metavar="OUT.mcap",
                   help="record every frame's outputs: a Foxglove MCAP file, or with --format ros2 a ROS 2 bag "
                        "(out/run.mcap becomes the bag folder out/run)")
    p.add_argument("--format", choices=("foxglove", "ros2"), dest="record_format",
                   help="format of --record (overrides output.record_format; default foxglove)")
    p.add_argument("--foxglove", metavar="HOST:PORT", nargs="?", const="127.0.0.1:8765",
                   help="serve the outputs live to Foxglove (its WebSocket protocol; default 127.0.0.1:8765)")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing output files (--overlay, --record); without it an existing file is "
                        "an error")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (overrides source.max_frames)")
    p.add_argument("--mode", choices=("live", "replay"),
                   help="live: drop stale frames; replay: every frame, paced at the recorded rate x "
                        "replay.speed (default: live for cameras and URLs, replay otherwise)")
    p.add_argument("--speed", type=float, metavar="X",
                   help="replay speed factor (overrides replay.speed; 0 = as fast as possible)")
    p.add_argument("--topic", action="append", metavar="T", dest="topics",
                   help="image topic to replay from a recorded drive (repeatable)")
    p.add_argument("--metrics", nargs="?", const="127.0.0.1:9108", metavar="HOST:PORT",
                   help="serve Prometheus metrics (default 127.0.0.1:9108; needs prometheus-client)")
    p.add_argument("--json", action="store_true", help="print the run summary as one JSON object")
    p.set_defaults(func=main)


def split_source(text: str) -> tuple[str | None, str]:
    """``"front=rtsp://..."`` → ``("front", "rtsp://...")``; a SRC without an ``ID=`` prefix (or one whose
    part before ``=`` is not an id, as in ``synthetic:num_frames=30``) → ``(None, text)``."""
    m = _ID_PREFIX.fullmatch(text)
    return (m.group(1), m.group(2)) if m else (None, text)


_ID_PREFIX = re.compile(r"([A-Za-z0-9_-]+)=(.+)", re.DOTALL)


def _source_overrides(args: argparse.Namespace) -> tuple[list[str], list[dict] | None]:
    """``--source``, ``--max-frames`` and ``--topic`` as ``--set`` overrides of ``source`` (one stream), or
    as the entries of ``sources`` (several)."""
    per_source = {}
    if args.max_frames is not None:
        per_source["max_frames"] = args.max_frames
    if args.topics:
        per_source["topics"] = list(args.topics)
    if args.sources and len(args.sources) > 1:
        entries = []
        for text in args.sources:
            cam, uri = split_source(text)
            entries.append({"uri": uri, **({"camera_id": cam} if cam else {}), **per_source})
        return [], entries
    overrides = [f"source.{k}={json.dumps(v)}" for k, v in per_source.items()]
    if args.sources:
        cam, uri = split_source(args.sources[0])
        overrides.append(f"source.uri={json.dumps(uri)}")
        if cam:
            overrides.append(f"source.camera_id={json.dumps(cam)}")
    return overrides, None


def build_config(args: argparse.Namespace):
    from perception.config import load_config

    overrides, sources = _source_overrides(args)
    overrides = list(args.overrides) + overrides
    if args.publish:
        overrides.append(f"publish.address={json.dumps(args.publish)}")
    if args.overlay:
        overrides.append(f"output.overlay={json.dumps(args.overlay)}")
    if args.record:
        overrides.append(f"output.record={json.dumps(args.record)}")
    if args.record_format:
        overrides.append(f"output.record_format={args.record_format}")
    if args.foxglove:
        overrides.append(f"output.foxglove={json.dumps(args.foxglove)}")
    if args.force:
        overrides.append("output.overwrite=true")
    if args.mode:
        overrides.append(f"mode={args.mode}")
    if args.speed is not None:
        overrides.append(f"replay.speed={args.speed}")
    if args.metrics:
        overrides.append(f"runtime.metrics={json.dumps(args.metrics)}")
    return load_config(args.config, overrides, sources=sources)


def main(args: argparse.Namespace) -> int:
    from perception.runtime.supervisor import Pipeline

    config = build_config(args)
    pipeline = Pipeline(config=config)
    from perception.redact import redact

    logging.getLogger(__name__).info("sources %s, model %s", ", ".join(redact(s.uri) for s in config.streams()),
                                     config.model.path)
    summary = pipeline.run()
    if args.json:
        print(json.dumps(summary.__dict__))
    else:
        print(summary_line(summary, config), file=sys.stderr)
        for line in stream_lines(summary):
            print(line, file=sys.stderr)
    failed = [cam for cam, s in summary.streams.items() if s.get("state") == "failed"]
    for cam in failed:
        print(f"perception: error: stream {cam!r} failed: {redact(summary.streams[cam].get('error', ''))}",
              file=sys.stderr)
    if summary.interrupted:
        return 130
    return 11 if failed else 0


def summary_line(summary, config) -> str:
    """The run in one line: frames, rate, latency, drops, outputs."""
    lat = (f", capture->publish latency p50 {summary.latency_ms_p50:.1f} ms, p99 {summary.latency_ms_p99:.1f} ms"
           if summary.latency_ms_p50 is not None else "")
    c = summary.counters
    drops = sum(c.get(k, 0) for k in ("dropped_capture", "dropped_post"))
    behind = c.get("dropped_publish", 0)
    head = "interrupted after " if summary.interrupted else ""
    # dropped_publish is not a pipeline drop: a reader's full queue refused the frame, the others got it
    return (f"perception: {head}{summary.frames} frames in {summary.seconds:.1f} s "
            f"({summary.fps:.1f} frames/s){lat}; "
            f"dropped {drops} (capture {c.get('dropped_capture', 0)}, post {c.get('dropped_post', 0)})"
            + (f"; a reader fell behind {behind} time(s) (it lost frames, see its seq gaps; the other "
               "readers were unaffected)" if behind else "")
            + (f"; overlay written to {config.output.overlay}" if config.output.overlay else "")
            + (f"; recorded to {config.output.record} ({config.output.record_format})" if config.output.record else ""))


def stream_lines(summary) -> list[str]:
    """One line per stream when there are several."""
    if len(summary.streams) < 2:
        return []
    return [f"  {cam}: {s.get('state', '?')}, {s.get('frames', 0)} frames ({s.get('fps', 0.0):.1f} frames/s)"
            for cam, s in summary.streams.items()]
