"""The ``perception`` command.

Each sub-command lives in its own module, which exposes ``register(subparsers)``; that function adds
a parser whose ``func`` attribute is called with the parsed namespace and returns an exit code.
Modules keep heavy imports (onnxruntime, cv2, torch) inside their handlers so ``--help`` is fast.

Errors from the project's exception tree print one line naming the cause and exit with code 2
(configuration / input errors) or the failing stage's code.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum, frame) -> None:
    """Ctrl-C before :func:`main` handles it (while modules load): one line, no traceback."""
    os.write(2, b"perception: interrupted\n")
    os._exit(130)


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import argparse  # noqa: E402 (after the handler: Ctrl-C while these load is handled too)
import logging  # noqa: E402

from perception.errors import PerceptionError, StageError  # noqa: E402
from perception.redact import RedactingFilter, redact  # noqa: E402


def _commands() -> tuple:
    """Every sub-command's module, in the order ``--help`` lists them (each keeps its heavy imports inside
    its handler, so importing them all costs little)."""
    from perception.cli import batch, build_engine, eval_tracking, keys, record, run, status, streams, view
    from perception.cli import eval as eval_command

    return run, streams, status, view, record, batch, eval_command, eval_tracking, build_engine, keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perception",
        description="Real-time video perception: segmentation, refinement, tracking, ZeroMQ publishing.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _commands():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except KeyboardInterrupt:
        print("perception: interrupted", file=sys.stderr)
        return 130
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, KeyboardInterrupt below
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname).1s %(processName)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for handler in logging.getLogger().handlers:  # no password of a camera URL in any log line
        handler.addFilter(RedactingFilter())
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # the reader went away (`perception eval-tracking | head`): stop quietly, as shell tools do;
        # stdout goes to /dev/null so that the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + 13  # killed by SIGPIPE, by the shell's convention
    except StageError as exc:
        print(redact(f"perception: error: stage {exc.stage!r} failed: {exc}"), file=sys.stderr)
        return exc.exit_code
    except PerceptionError as exc:
        print(redact(f"perception: error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("perception: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
