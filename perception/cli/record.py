"""``perception record``: subscribe to a running pipeline and write its outputs to MCAP (and/or Rerun)."""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger(__name__)

RECORD_RCVHWM = 256
"""Messages the recorder's socket queues while it is busy encoding PNGs. A recording wants every frame,
so this is far above a viewer's; the cost is memory (256 x one message) during a burst. The publisher's
own ``publish.hwm`` still bounds what it queues for us: raise it too for fast replays (``--speed 0``)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "record",
        help="record a pipeline's outputs to MCAP (Foxglove) and/or stream them to Rerun",
        description=(
            "Subscribe to a perception publisher and write every label message to an MCAP file that "
            "Foxglove opens as is: colourised label and instance maps, track boxes and ids, latencies, and "
            "(--with-input) the preview frames, all stamped with the input frames' capture times. The "
            "recording can be replayed as a source (perception run --source FILE.mcap --topic "
            "/perception/CAM/input). Optionally streams the same to a Rerun viewer."
        ),
    )
    from perception.cli.keys import add_subscriber_arguments

    add_subscriber_arguments(p)
    p.add_argument("--out", metavar="FILE.mcap", default=None,
                   help="MCAP file to write (required unless a --rerun option is given)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="stop after N frames (default: until --timeout or Ctrl-C)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="stop when no message arrives for S seconds, e.g. after a replay ended "
                        "(default: wait forever); exit status 1 if nothing was recorded")
    p.add_argument("--with-input", action="store_true",
                   help="also record the input preview frames (the publisher must send previews)")
    p.add_argument("--compression", choices=("zstd", "lz4", "none"), default="zstd",
                   help="MCAP chunk compression (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    from perception.outputs.rerun import add_rerun_arguments

    add_rerun_arguments(p)
    p.set_defaults(func=run_record)


def run_record(args: argparse.Namespace) -> int:
    from pathlib import Path

    from perception.cli.keys import silence_reason, subscriber_from_args
    from perception.errors import PerceptionError
    from perception.outputs.overlay import refuse_existing
    from perception.outputs.recorder import McapRecorder, record

    want_rerun = bool(args.rerun or args.rerun_connect or args.rerun_save)
    if args.out is None and not want_rerun:
        print("perception record: give --out FILE.mcap and/or a --rerun option", file=sys.stderr)
        return 2
    if args.max_frames is not None and args.max_frames < 1:
        print("perception record: --max-frames must be >= 1", file=sys.stderr)
        return 2
    sinks = []
    recorder = None
    silence = ""
    try:
        if args.out is not None:
            refuse_existing(Path(args.out), overwrite=args.force, what="--out")
        if want_rerun:
            from perception.outputs.rerun import rerun_sink_from_args

            sinks.append(rerun_sink_from_args(args))
        with subscriber_from_args(args, rcvhwm=RECORD_RCVHWM) as sub:  # bad key files fail before --out is created
            if args.out is not None:
                recorder = McapRecorder(args.out, with_input=args.with_input, compression=args.compression)
            try:
                stats = record(subscriber=sub, recorder=recorder, max_frames=args.max_frames,
                               idle_timeout_s=args.timeout, progress=not args.no_progress, sinks=sinks)
            except KeyboardInterrupt:
                stats = recorder.stats if recorder is not None else None
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
    frames = stats.frames if stats is not None else 0
    where = f" to {args.out}" if args.out else ""
    print(f"recorded {frames} frame(s){where} ({gaps} missed by the subscriber)", file=sys.stderr)
    if frames == 0:
        print(f"perception record: no message arrived on {args.connect}, topic {args.topic!r}: {silence}",
              file=sys.stderr)
        return 1
    return 0
