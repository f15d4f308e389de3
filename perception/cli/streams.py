"""``perception streams list|add|remove``: change a running pipeline's streams (``runtime.control``)."""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_CONTROL = "tcp://127.0.0.1:5560"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "streams", help="list, add or remove the streams of a running pipeline",
        description="Talk to a running pipeline's control endpoint (runtime.control in its configuration).",
    )
    p.add_argument("--control", default=DEFAULT_CONTROL, metavar="ADDR",
                   help=f"the pipeline's control endpoint (default {DEFAULT_CONTROL})")
    p.add_argument("--timeout", type=float, default=15.0, metavar="S",
                   help="seconds to wait for the reply (an add waits for its source to open)")
    p.add_argument("--json", action="store_true", help="print the reply as JSON")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="the streams and their state")
    add = sub.add_parser("add", help="start a stream: [ID=]SRC (the forms of perception run --source)")
    add.add_argument("source", metavar="[ID=]SRC")
    add.add_argument("--mode", choices=("live", "replay"), help="the stream's mode (default: from the source)")
    add.add_argument("--loop", action="store_true", help="loop a file, folder or generated scene")
    add.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="keys",
                     help="any other key of a source section, e.g. --set fps=10 (value as YAML)")
    rm = sub.add_parser("remove", help="stop a stream and free its slots and tracker")
    rm.add_argument("id", metavar="ID")
    p.set_defaults(func=main)


def _source(args: argparse.Namespace) -> dict:
    from perception.cli.run import split_source
    from perception.config import parse_assignment

    cam, uri = split_source(args.source)
    source: dict = {"uri": uri}
    if cam:
        source["camera_id"] = cam
    if args.mode:
        source["mode"] = args.mode
    if args.loop:
        source["loop"] = True
    for item in args.keys:
        key, value = parse_assignment(item, option="--set", example="fps=10")
        source[key] = value
    return source


def main(args: argparse.Namespace) -> int:
    from perception.runtime.control import request

    if args.action == "list":
        body = {"cmd": "list"}
    elif args.action == "add":
        body = {"cmd": "add", "source": _source(args)}
    else:
        body = {"cmd": "remove", "id": args.id}
    reply = request(args.control, body, timeout_s=args.timeout)
    if args.json:
        print(json.dumps(reply))
    elif not reply.get("ok"):
        print(f"perception: error: {reply.get('error')}", file=sys.stderr)
    else:
        _print(args.action, reply)
    return 0 if reply.get("ok") else 1


def _print(action: str, reply: dict) -> None:
    rows = reply.get("streams") or ([reply["stream"]] if "stream" in reply else [])
    if action == "remove":
        print("removed")
        return
    for s in rows:
        size = f"{s.get('width')}x{s.get('height')}" if s.get("width") else "?"
        print(f"{s['id']:<12} {s['state']:<9} {s.get('mode') or '?':<7} {size:<10} {s.get('frames', 0):>7} frames  "
              f"{s['uri']}" + (f"  ({s['error']})" if s.get("error") else ""))
