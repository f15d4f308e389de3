"""``perception status``: a running pipeline's health, from its ``<topic>/status`` messages."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from perception.cli.keys import add_subscriber_arguments

    p = subparsers.add_parser(
        "status", help="print a running pipeline's health (streams, frames, drops, restarts)",
        description="Subscribe to <topic>/status of a running pipeline and print it (docs/wire-format.md).",
    )
    add_subscriber_arguments(p)
    p.add_argument("--json", action="store_true", help="print the status message as one JSON object")
    p.add_argument("--follow", action="store_true", help="keep printing, once a second, until Ctrl-C")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="give up when no status arrives within S seconds (default %(default)s)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from perception.cli.keys import silence_reason, subscriber_from_args

    with subscriber_from_args(args) as sub:
        while True:
            status = sub.recv_status(args.timeout)
            if status is None:
                print(f"perception: error: no status from {args.connect} within {args.timeout:g} s: "
                      f"{silence_reason(sub, args)}", file=sys.stderr)
                return 1
            print(json.dumps(status) if args.json else format_status(status), flush=True)
            if not args.follow:
                return 0


def format_status(status: dict) -> str:
    """A person's view of a status message: one line for the pipeline, one per stream."""
    stages = ", ".join(f"{k} {'up' if v.get('alive') else 'DOWN'}" for k, v in status.get("stages", {}).items())
    lines = [f"pipeline {status.get('state', '?')}, up {status.get('uptime_s', 0):.0f} s, "
             f"{status.get('restarts', 0)} restart(s); {stages}"]
    for s in status.get("streams", []):
        drops = sum((s.get("dropped") or {}).values())
        age = s.get("age_s")
        lines.append(f"  {s.get('id', '?'):<12} {s.get('state', '?'):<12} in {s.get('frames_in', 0):>7}  "
                     f"out {s.get('frames_out', 0):>7}  dropped {drops:>5}  skipped {s.get('skipped', 0):>4}  "
                     f"reconnects {s.get('reconnects', 0):>3}  last frame "
                     + (f"{age:.1f} s ago" if age is not None else "never")
                     + (f"  ({s['error']})" if s.get("error") else ""))
    return "\n".join(lines)
