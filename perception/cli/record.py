"""``perception record``: subscribe to a running pipeline and write its outputs to a Foxglove MCAP
recording or a ROS 2 bag (and/or stream them to Rerun)."""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger(__name__)

RECORD_RCVHWM = 256
"""Messages the recorder's socket queues while it is busy encoding images. A recording wants every frame,
so this is far above a viewer's; the cost is memory (256 x one message) during a burst. The publisher's
own ``publish.hwm`` still bounds what it queues for us: raise it too for fast replays (``--speed 0``)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "record",
        help="record a pipeline's outputs to MCAP (Foxglove) or a ROS 2 bag, and/or stream them to Rerun",
        description=(
            "Subscribe to a perception publisher and write every label message to a recording: "
            "--format foxglove (default) writes an MCAP file with Foxglove's protobuf schemas (label maps "
            "in class colours, instance maps, track boxes and ids, tracks, latencies, the class table and "
            "(--with-input) the preview frames); --format ros2 writes a ROS 2 bag (MCAP storage: "
            "sensor_msgs/Image labels and frames, vision_msgs/Detection2DArray tracks) that ros2 bag play "
            "replays. Every message carries the input frame's stamp. A recording can be replayed as a "
            "source (perception run --source FILE.mcap --topic /perception/CAM/input). Optionally streams "
            "the same to a Rerun viewer."
        ),
    )
    from perception.cli.keys import add_subscriber_arguments

    add_subscriber_arguments(p)
    p.add_argument("--out", metavar="FILE.mcap", default=None,
                   help="recording to write: an .mcap file (foxglove), a bag folder (ros2; out/run.mcap "
                        "becomes the folder out/run); required unless a --rerun option is given")
    p.add_argument("--format", choices=("foxglove", "ros2"), default="foxglove",
                   help="foxglove: MCAP with Foxglove's schemas; ros2: a ROS 2 bag (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="stop after N frames (default: until --timeout or Ctrl-C)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="stop when no message arrives for S seconds, e.g. after a replay ended "
                        "(default: wait forever); exit status 1 if nothing was recorded")
    p.add_argument("--with-input", action="store_true",
                   help="also record the input preview frames (the publisher must send previews)")
    p.add_argument("--compression", choices=("zstd", "lz4", "none"), default="zstd",
                   help="MCAP chunk compression of a Foxglove recording (default: %(default)s; ROS 2 bags: zstd)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    from perception.outputs.rerun import add_rerun_arguments

    add_rerun_arguments(p)
    p.set_defaults(func=run_record)


def run_record(args: argparse.Namespace) -> int:
    from perception.cli.keys import silence_reason, subscriber_from_args
    from perception.errors import PerceptionError
    from perception.outputs.recorder import RecordStats, open_recorder, record

    want_rerun = bool(args.rerun or args.rerun_connect or args.rerun_save)
    if args.out is None and not want_rerun:
        print("perception record: give --out FILE.mcap (or a bag folder with --format ros2) and/or a --rerun "
              "option", file=sys.stderr)
        return 2
    if args.max_frames is not None and args.max_frames < 1:
        print("perception record: --max-frames must be >= 1", file=sys.stderr)
        return 2
    sinks = []
    recorder = None
    silence = ""
    stats = RecordStats()
    try:
        if args.out is not None:
            _refuse_existing_out(args)
        if want_rerun:
            from perception.outputs.rerun import rerun_sink_from_args

            sinks.append(rerun_sink_from_args(args))
        with subscriber_from_args(args, rcvhwm=RECORD_RCVHWM) as sub:  # bad key files fail before --out is created
            if args.out is not None:
                recorder = open_recorder(args.out, fmt=args.format, with_input=args.with_input,
                                         compression=args.compression, overwrite=args.force)
            try:
                record(subscriber=sub, recorder=recorder, max_frames=args.max_frames, idle_timeout_s=args.timeout,
                       progress=not args.no_progress, sinks=sinks, stats=stats)
            except KeyboardInterrupt:
                log.info("interrupted; closing the recording")
            gaps = sub.gaps
            silence = silence_reason(sub, args)
    except PerceptionError as exc:
        print(f"perception record: {exc}", file=sys.stderr)
        return 1
    finally:
        if recorder is not None:
            recorder.close()
        for sink in sinks:
            sink.close()
    frames = stats.frames
    where = f" to {recorder.path}" if recorder is not None else ""
    cost = f", {stats.write_s / frames * 1e3:.2f} ms per frame" if frames and recorder is not None else ""
    print(f"recorded {frames} frame(s){where} ({gaps} missed by the subscriber{cost})", file=sys.stderr)
    if frames == 0:
        print(f"perception record: no message arrived on {args.connect}, topic {args.topic!r}: {silence}",
              file=sys.stderr)
        return 1
    return 0


def _refuse_existing_out(args: argparse.Namespace) -> None:
    """Fail before subscribing when --out exists (and --force is not given)."""
    from pathlib import Path

    from perception.outputs.overlay import refuse_existing
    from perception.outputs.ros2 import bag_folder, refuse_existing_bag

    if args.format == "ros2":
        refuse_existing_bag(bag_folder(args.out), overwrite=args.force, what="--out")
    else:
        refuse_existing(Path(args.out), overwrite=args.force, what="--out")
