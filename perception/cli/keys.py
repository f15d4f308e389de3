"""``perception keys``: CURVE key pairs for an encrypted, authenticated publisher and its subscribers."""

from __future__ import annotations

import argparse

KEYS_HELP = """\
Generate a CURVE key pair in ZeroMQ's certificate format: NAME.key (the public key: hand it to the
other side) and NAME.key_secret (public and secret key, mode 0600: keep it where it is).

  perception keys generate server --dir keys      # the publisher's pair
  perception keys generate planner --dir keys     # one pair per client
  # config:  publish.curve: {secret_key: keys/server.key_secret, client_keys: [keys/planner.key]}
  # client:  perception view --server-key keys/server.key --client-key keys/planner.key_secret
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="generate CURVE key pairs (encrypted, authenticated publishing)",
                       description=KEYS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    g = ks.add_parser("generate", help="write NAME.key and NAME.key_secret", description=KEYS_HELP,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("name", help="file name stem, e.g. server, planner, viewer")
    g.add_argument("--dir", default=".", metavar="DIR", help="folder to write to (created; default: %(default)s)")
    g.add_argument("--force", action="store_true", help="replace an existing pair of that name")
    g.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from perception.transport.curve import read_public_key, write_key_pair

    public_path, secret_path = write_key_pair(args.dir, args.name, force=args.force)
    print(f"public key  {public_path}  ({read_public_key(public_path).decode()})")
    print(f"secret key  {secret_path}  (mode 0600; never share it)")
    return 0


# --- shared by the subscribing commands (view, record) ----------------------------------------------
def add_subscriber_arguments(p: argparse.ArgumentParser) -> None:
    """--connect, --topic and the CURVE options of a command that subscribes to a pipeline."""
    p.add_argument("--connect", default="tcp://127.0.0.1:5555", metavar="ADDR",
                   help="publisher endpoint to connect to (default: %(default)s)")
    p.add_argument("--topic", default="perception", metavar="T",
                   help="topic the publisher uses (default: %(default)s)")
    p.add_argument("--server-key", metavar="FILE.key", default=None,
                   help="CURVE: the publisher's public key file (its publish.curve.secret_key's pair)")
    p.add_argument("--client-key", metavar="FILE.key_secret", default=None,
                   help="CURVE: this client's secret key file; its .key must be in the publisher's "
                        "publish.curve.client_keys")


def subscriber_from_args(args: argparse.Namespace, **kwargs):
    """A :class:`~perception.transport.subscriber.Subscriber` for --connect/--topic/--server-key/--client-key."""
    from perception.errors import ConfigError
    from perception.transport.subscriber import Subscriber

    if (args.server_key is None) != (args.client_key is None):
        raise ConfigError("CURVE needs both --server-key (the publisher's .key) and --client-key (your .key_secret)")
    return Subscriber(address=args.connect, topic=args.topic, server_key=args.server_key,
                      client_keys=args.client_key, **kwargs)


def silence_reason(sub, args: argparse.Namespace) -> str:
    """Why nothing arrived, as far as the subscriber can tell (for a timeout message)."""
    if sub.handshake_failure:
        hint = ("check --server-key / --client-key" if args.server_key
                else "the publisher uses CURVE: give --server-key and --client-key")
        return f"{sub.handshake_failure}; {hint}"
    return "is the pipeline running with --publish at that address?"
