"""``perception batch``: re-process many recorded drives on Ray (this machine's cores, or a cluster)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BATCH_HELP = """\
Run every drive through the same processing as `perception run CONFIG --source DRIVE --speed 0
--record ...` (model, refinement, panoptic grouping, tracking per camera in stamp order), on Ray.

Per drive, DIR/<name>-<hash>/ holds the recording (recording.mcap, or the ROS 2 bag folder
`recording` with --format ros2), summary.json and manifest.json (content hashes of the input, the
configuration and the model, and of every output). A rerun skips drives whose outputs are complete for
the same input, configuration and model. DIR/report.json lists every input.

DRIVES: bags, MCAP files, ROS 2 bag folders, videos, image folders; globs ('drives/**/*.bag', quoted)
and @FILE (one drive or glob per line). Exit status: 0 all succeeded, 1 some failed, 2 usage error.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="re-process recorded drives on Ray (local cores or a cluster)",
                       description=BATCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("drives", nargs="*", metavar="DRIVE", help="drive, glob or @LIST_FILE")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; shared by every node)")
    p.add_argument("--config", metavar="CONFIG", default=None,
                   help="YAML configuration, as for perception run (default: configs/default.yaml)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a configuration key (repeatable), as for perception run")
    p.add_argument("--format", choices=("foxglove", "ros2"), dest="record_format",
                   help="recording format (overrides output.record_format; default foxglove)")
    p.add_argument("--topic", action="append", metavar="T", dest="topics",
                   help="image topic to process from each drive (repeatable; default every image topic)")
    p.add_argument("--address", metavar="auto|ray://HOST:PORT", default=None,
                   help="Ray cluster to run on (default: a local Ray on this machine's cores)")
    p.add_argument("--num-cpus", type=int, metavar="N", help="CPUs of the local Ray (default: all)")
    p.add_argument("--actors", type=int, metavar="N",
                   help="inference actors (default: one per GPU, else one per 4 CPUs)")
    p.add_argument("--gpus-per-actor", type=float, metavar="G",
                   help="GPUs per inference actor (default: 1 where the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-drive", type=float, default=1.0, metavar="C",
                   help="CPUs a drive task (decode + post-processing) reserves (default: %(default)s)")
    p.add_argument("--infer-batch", type=int, default=1, metavar="N",
                   help="frames per backend call (default 1: bit-identical to perception run; more "
                        "uses a GPU better, outputs then differ in the last bits)")
    p.add_argument("--chunk", type=int, default=8, metavar="N", help="frames per inference request (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.set_defaults(func=main)


def _positive(args: argparse.Namespace) -> str | None:
    for name in ("num_cpus", "actors", "infer_batch", "chunk"):
        v = getattr(args, name)
        if v is not None and v < 1:
            return f"--{name.replace('_', '-')} must be >= 1"
    for name in ("gpus_per_actor", "cpus_per_drive"):
        v = getattr(args, name)
        if v is not None and v < 0:
            return f"--{name.replace('_', '-')} must be >= 0"
    return None


def config_fingerprint(config, per_call: int) -> dict:
    """The parts of the configuration that change a drive's outputs (what the manifest hashes)."""
    import perception

    data = config.model_dump(mode="json")
    source = {k: v for k, v in data["source"].items() if k not in ("uri", "loop", "mode")}
    output = {k: data["output"][k] for k in ("record_format", "record_image", "calibration")}
    model = {k: v for k, v in data["model"].items() if k != "path"}
    return {"version": getattr(perception, "__version__", "?"), "source": source, "output": output, "model": model,
            "postprocess": data["postprocess"], "tracking": data["tracking"], "analytics": data["analytics"],
            "per_call": per_call}


def build(args: argparse.Namespace):
    """The configuration, the model and one job per drive; raises ConfigError on a usage error."""
    from perception.batch.drive import DriveJob
    from perception.batch.fleet import ModelFiles
    from perception.batch.inputs import expand_inputs, hash_json, output_name
    from perception.config import load_config
    from perception.errors import ConfigError
    from perception.modelcard import load_card

    drives = expand_inputs(args.drives)
    if not drives:
        raise ConfigError("no drive given (DRIVE..., a glob or @LIST_FILE)")
    overrides = list(args.overrides)
    if args.record_format:
        overrides.append(f"output.record_format={args.record_format}")
    if args.topics:
        overrides.append(f"source.topics={json.dumps(list(args.topics))}")
    config = load_config(args.config, overrides)
    if config.sources:
        raise ConfigError("the configuration has 'sources': perception batch runs its 'source' section with "
                          "each drive in turn; give a configuration with one 'source'")
    path = config.model.resolved_path()
    load_card(path)  # a missing model or card is a usage error, before Ray starts
    model = ModelFiles.read(path)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a folder")
    config_sha = hash_json(config_fingerprint(config, args.infer_batch))
    jobs = [DriveJob(input=d, out_dir=str(out / output_name(d)), config=config, config_sha256=config_sha,
                     model_sha256=model.sha256, chunk=args.chunk) for d in drives]
    return config, model, jobs


def main(args: argparse.Namespace) -> int:
    from perception.batch.fleet import ClusterOptions, run_batch
    from perception.batch.summary import table, write_report

    problem = _positive(args)
    if problem:
        print(f"perception batch: {problem}", file=sys.stderr)
        return 2
    config, model, jobs = build(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = ClusterOptions(address=args.address, num_cpus=args.num_cpus, actors=args.actors,
                             gpus_per_actor=args.gpus_per_actor, cpus_per_drive=args.cpus_per_drive,
                             per_call=args.infer_batch)
    results = run_batch(jobs, model, options, progress=not args.no_progress)
    report = write_report(out, results, {"config": args.config, "model": str(config.model.resolved_path()),
                                         "model_sha256": model.sha256})
    failed = sum(r["status"] == "failed" for r in results)
    if args.json:
        print(report.read_text(), end="")
    else:
        print(table(results))
        frames = sum(r["frames"] for r in results if r["status"] == "ok")
        skipped = sum(r["status"] == "skipped" for r in results)
        print(f"perception batch: {len(results) - failed - skipped} processed ({frames} frames), {skipped} "
              f"skipped (already complete), {failed} failed; report {report}", file=sys.stderr)
    return 1 if failed else 0
