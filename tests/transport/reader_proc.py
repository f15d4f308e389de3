"""A subscriber in its own process, for isolation tests: ``python -m tests.transport.reader_proc MODE ADDR``.

MODE ``read`` reads every message as it comes, ``slow`` reads one a second, ``stuck`` subscribes and
never reads. Prints ``ready`` once its socket exists, then (read / slow) one JSON line of counts when
the stream ends or nothing arrives for ``--idle`` seconds; ``stuck`` sleeps until it is killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from perception.transport.subscriber import Subscriber


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("read", "slow", "stuck"))
    ap.add_argument("address")
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--rcvhwm", type=int, default=4)
    args = ap.parse_args()
    with Subscriber(address=args.address, rcvhwm=args.rcvhwm) as sub:
        print("ready", flush=True)
        if args.mode == "stuck":
            while True:
                time.sleep(3600)
        received, seqs = 0, []
        while (msg := sub.recv(args.idle)) is not None:
            received += 1
            seqs.append(msg.seq)
            if args.mode == "slow":
                time.sleep(1.0)
        end = sub.end
        print(json.dumps({
            "received": received, "gaps": sub.gaps, "first_seq": sub.first_seq,
            "missing_at_end": sub.missing_at_end, "last_seq": None if end is None else end.last_seq,
            "ordered": seqs == sorted(seqs),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
