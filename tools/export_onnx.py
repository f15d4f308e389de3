#!/usr/bin/env python
"""Export a trained checkpoint to ONNX + model card, and verify it on CamVid val.

    .venv/bin/python tools/export_onnx.py --checkpoint checkpoints/camvid_lite0/best.pt

Writes ``engines/camvid_lite0_panoptic.onnx`` and ``engines/camvid_lite0_panoptic.card.json``.

``--fp16`` also writes ``<out>_fp16.onnx`` (float16 weights and arithmetic, float32 inputs and outputs)
with its card: the model TensorRT 11 builds an FP16 engine from, since it has no FP16 builder flag
(docs/tensorrt.md). ``--from-onnx FILE`` converts an existing export instead of a checkpoint:

    .venv/bin/python tools/export_onnx.py --from-onnx engines/camvid_lite0_panoptic.onnx --fp16
Verification (skipped with ``--no-verify`` or when the data is absent): onnx.checker, label agreement
of ONNX Runtime vs PyTorch on val (must be >= 99.9 %, else exit 1), val mIoU of the ONNX model at the
default input size evaluated at the labels' 480x360, and ONNX Runtime frames/s (2 intra-op threads);
the figures go into the card's ``metrics``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see tools/train.py

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.modelcard import CAMVID_CLASSES, save_card  # noqa: E402
from perception.models.export import (  # noqa: E402
    CAMVID_TRAINING_PROVENANCE,
    DEFAULT_OPSET,
    INPUT_NAME,
    build_card,
    evaluate_onnx,
    export_onnx,
    label_agreement,
    load_checkpoint,
    onnx_session,
)

AGREEMENT_MIN = 0.999


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "camvid_lite0" / "best.pt")
    p.add_argument("--out", type=Path, default=REPO / "engines" / "camvid_lite0_panoptic.onnx")
    p.add_argument("--input-size", type=_size, default=None, help="default input WxH (default: the checkpoint's)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "camvid")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--version", default="1", help="the card's model version (raise it when the weights change)")
    p.add_argument("--note", default=None, help="free text for the card's training.notes (e.g. how the run went)")
    p.add_argument("--crossval", type=Path, default=None, metavar="JSON",
                   help="tools/crossval.py's crossval.json of the recipe: pooled and per-fold scores for the card")
    p.add_argument("--fp16", action="store_true", help="also write <out>_fp16.onnx and its card (for TensorRT 11)")
    p.add_argument("--from-onnx", type=Path, default=None, metavar="FILE",
                   help="with --fp16: convert this existing export (and its card) instead of exporting a checkpoint")
    args = p.parse_args(argv)
    if args.from_onnx is not None:
        if not args.fp16:
            p.error("--from-onnx only makes sense with --fp16")
        write_fp16(args.from_onnx)
        return 0

    import torch

    torch.set_num_threads(args.threads)
    if not args.checkpoint.is_file():
        print(f"checkpoint not found: {args.checkpoint}", file=sys.stderr)
        return 2
    model, state = load_checkpoint(args.checkpoint)
    input_size = args.input_size or tuple(state.get("input_size", (480, 352)))
    path = export_onnx(model, args.out, example_size=input_size, opset=args.opset)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), opset {args.opset}, onnx.checker OK")

    recipe = state.get("recipe", {})
    training = dict(CAMVID_TRAINING_PROVENANCE)
    training.update(finetune_provenance(recipe.get("args", {})))
    training["splits"] = splits_text(recipe.get("args", {}))
    training["recipe"] = recipe
    if recipe.get("machine"):
        training["machine"] = recipe["machine"]
    training["seed"] = recipe.get("args", {}).get("seed")
    training["epochs_trained"] = state.get("epoch", -1) + 1
    training["iterations"] = state.get("iter")
    training["train_minutes"] = round(state.get("time_spent_s", 0.0) / 60, 1)
    config = recipe.get("args", {}).get("config")
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in recipe.get("args", {}).items()
                     if k in ("time_budget_min", "seed", "epochs"))
    training["command"] = f"tools/train.py --config {_repo_relative(config)}" if config else f"tools/train.py {flags}"
    training["lr_schedule"] = ("AdamW, linear warm-up, then poly(0.9) over max(iterations done / planned, time spent / "
                               "--time-budget-min): the run anneals within its wall-clock budget, so the number of "
                               "epochs depends on the machine's speed (not bit-reproducible across machines)")
    if args.note:
        training["notes"] = args.note
    metrics: dict = {}
    if state.get("metrics") and "miou" in state["metrics"]:
        metrics["val_miou_pytorch"] = round(state["metrics"]["miou"], 4)
    if args.crossval is not None:
        metrics["crossval_by_sequence"] = crossval_metrics(args.crossval)
    val_seen = "val" in recipe.get("args", {}).get("train_splits", ["train"])

    code = 0
    if not args.no_verify and (args.data / "val.txt").is_file():
        verified, ok = verify_on_val(model, path, args, input_size=input_size, val_seen=val_seen)
        metrics.update(verified)
        code = 0 if ok else 1
    card = build_card(input_size=input_size, training=training, metrics=metrics, version=args.version)
    card_path = save_card(card, path)
    if not args.no_verify:  # scored through the backend, which needs the card written above
        persons = person_metrics(path, args.checkpoint.parent, recipe.get("args", {}), args.threads)
        if persons:
            save_card(build_card(input_size=input_size, training=training, metrics=metrics | persons,
                                 version=args.version), path)
    print(f"wrote {card_path}")
    if args.fp16:
        write_fp16(path)
    return code


def verify_on_val(model, path: Path, args: argparse.Namespace, *, input_size: tuple[int, int],
                  val_seen: bool) -> tuple[dict, bool]:
    """(card metrics, export agrees with PyTorch): agreement, mIoU through ONNX Runtime and speed on CamVid val.
    A model trained on val gets its val scores under ``camvid_val_trained_on``, not as a held-out figure."""
    from perception.models.data import load_split

    val = load_split(args.data, "val")
    agree = label_agreement(model, path, val.images, input_size=input_size, threads=args.threads)
    print(f"ONNX Runtime vs PyTorch label agreement on val: {100 * agree['agreement']:.4f} % "
          f"(max |logit diff| {agree['max_abs_logit_diff']:.2e})")
    ev = evaluate_onnx(path, val.images, val.labels, input_size=input_size, threads=args.threads)
    print(f"val mIoU (ONNX Runtime, input {input_size[0]}x{input_size[1]}, scored at 480x360): "
          f"{100 * ev['miou']:.2f}; pixel accuracy {100 * ev['pixel_accuracy']:.2f} %"
          + (" (val was trained on: not a held-out score)" if val_seen else ""))
    sess = onnx_session(path, threads=args.threads)
    x = np.random.default_rng(0).standard_normal((1, 3, input_size[1], input_size[0])).astype(np.float32)
    for _ in range(5):
        sess.run(None, {INPUT_NAME: x})
    times = []
    for _ in range(30):
        t = time.perf_counter()
        sess.run(None, {INPUT_NAME: x})
        times.append(time.perf_counter() - t)
    p50 = float(np.median(times))
    print(f"ONNX Runtime {args.threads} threads at {input_size[0]}x{input_size[1]}: "
          f"{1 / p50:.1f} frames/s (p50 {1000 * p50:.1f} ms)")
    val_scores: dict = {
        "camvid_val_miou": round(ev["miou"], 4),
        "camvid_val_pixel_accuracy": round(ev["pixel_accuracy"], 4),
        "camvid_val_per_class_iou": {c.name: round(v, 4) for c, v in zip(CAMVID_CLASSES, ev["per_class_iou"])},
        "evaluated": f"CamVid val (101 images), ONNX Runtime, input {input_size[0]}x{input_size[1]}, logits "
                     "upsampled bilinearly to the labels' 480x360, 11 classes, label 11 ignored",
    }
    if val_seen:  # a score on images it was trained on measures no generalisation: kept apart, named so
        val_scores = {"camvid_val_trained_on": val_scores | {
            "note": "val is one of the splits this model was trained on: not a held-out score (see "
                    "crossval_by_sequence)"}}
    metrics = val_scores | {
        "onnx_vs_pytorch_label_agreement": round(agree["agreement"], 6),
        "onnxruntime_cpu_fps_2_threads": round(1 / p50, 1),
        "fps_note": "inference alone, measured by tools/export_onnx.py on the 2-core dev CPU with load average "
                    f"{os.getloadavg()[0]:.1f} at the time "
                    "(shared machine, so indicative; rerun tools/bench_backend.py on a quiet one)",
        "command": f"tools/export_onnx.py --checkpoint {args.checkpoint.name}",
    }
    if agree["agreement"] < AGREEMENT_MIN:
        print(f"FAIL: agreement {agree['agreement']:.6f} < {AGREEMENT_MIN}", file=sys.stderr)
        return metrics, False
    return metrics, True


def splits_text(run_args: dict) -> str:
    """How the run used CamVid's splits (and Penn-Fudan's), in words, from its own options."""
    trained = run_args.get("train_splits", ["train"])
    sizes = {"train": 367, "val": 101}
    camvid = " + ".join(f"{s} ({sizes[s]} images)" if s in sizes else s for s in trained)
    held = run_args.get("holdout_sequence")
    if held:
        selection = f"sequence {held} left out of training and scored (one cross-validation fold)"
    elif run_args.get("eval_split", "val") == "none":
        selection = ("no checkpoint selection: the last checkpoint of a fixed schedule (the recipe chosen by "
                     "cross-validation by sequence, tools/crossval.py)")
    else:
        selection = f"checkpoint selected on CamVid {run_args.get('eval_split', 'val')} by mIoU"
    pf = ""
    if run_args.get("pennfudan"):
        every = run_args.get("pennfudan_holdout_every", 4)
        pf = (f" and Penn-Fudan's available part without every {every}th image (held out: pennfudan_holdout.txt, "
              f"reported only)")
    return f"trained on CamVid {camvid}{pf}; {selection}; CamVid test split not used"


def crossval_metrics(path: Path) -> dict:
    """The card's summary of a tools/crossval.py report."""
    report = json.loads(Path(path).read_text())
    return {
        "pooled_miou": report["pooled"]["miou"],
        "pooled_per_class_iou": report["pooled"]["per_class_iou"],
        "fold_miou": {seq: fold["miou"] for seq, fold in report["folds"].items()},
        "mean_of_fold_mious": report["mean_of_fold_mious"],
        "how": "one fold per CamVid recording (0001TP, 0006R0, 0016E5): trained on train + val without it, scored "
               "on it after a fixed schedule (last checkpoint); confusion matrices pooled over the folds",
        "command": f"tools/crossval.py --config {_repo_relative(report['config'])}"
                   + (f" -- {' '.join(report['train_args'])}" if report.get("train_args") else ""),
    }


def _repo_relative(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def finetune_provenance(run_args: dict) -> dict:
    """Card ``training`` fields for a run that started from a shipped model and/or used Penn-Fudan."""
    out: dict = {}
    if run_args.get("init_onnx"):
        from perception.modelcard import load_card

        start = Path(run_args["init_onnx"])
        base = load_card(start)
        out["fine_tuned_from"] = {
            "model": f"{base.name} v{base.version} ({start.name})",
            "its_training": {k: base.training.get(k) for k in ("splits", "train_minutes", "command", "notes")},
            "its_camvid_val_miou": base.metrics.get("camvid_val_miou"),
            "how": "rebuilt from the ONNX export with its folded BatchNorm unfolded exactly "
                   "(perception/models/warmstart.py); every BatchNorm kept in eval mode while fine-tuning",
        }
    if run_args.get("pennfudan"):
        out["dataset"] = (CAMVID_TRAINING_PROVENANCE["dataset"] + "; Penn-Fudan pedestrians (Wang, Shi, Song, "
                          "Shen, ACCV 2007), each person with its own mask")
        out["terms"] = (CAMVID_TRAINING_PROVENANCE["terms"] + " Penn-Fudan is released for research use only and "
                        "may not be redistributed; this model is trained on it: research use only.")
        out["instance_targets"] = (CAMVID_TRAINING_PROVENANCE["instance_targets"] + " Penn-Fudan: each masked "
                                   "person is its own instance (touching people stay apart); its other pixels take "
                                   "the starting model's class where that is at least 80 % sure and not a thing "
                                   "class, else they are ignored (perception/models/pennfudan.py).")
    return out


def person_metrics(path: Path, run_dir: Path, run_args: dict, threads: int) -> dict:
    """Person instance scores of the exported model on the run's held-out Penn-Fudan images, if any."""
    holdout = run_dir / "pennfudan_holdout.txt"
    root = run_args.get("pennfudan")
    if not root or not holdout.is_file() or not holdout.read_text().split() or not Path(root).is_dir():
        return {}
    from perception.backends.factory import open_backend
    from perception.eval.instances import evaluate_instances, pennfudan_pairs

    pairs = pennfudan_pairs(Path(root), str(holdout))
    with open_backend(path, kind="onnxruntime", threads=threads) as backend:
        report = evaluate_instances(pairs, backend, progress=False)
    print(f"Penn-Fudan held out ({len(pairs)} images, {report.persons} persons): "
          + ", ".join(f"{k} {v:.4f}" for k, v in report.scores.items()))
    return {
        "pennfudan_holdout": {k: round(v, 4) for k, v in report.scores.items()} | {
            "images": len(pairs), "persons": report.persons,
            "stems": holdout.read_text().split(),
            "command": "perception eval --data ../shared/data/pennfudan --layout pennfudan --split "
                       "<run>/pennfudan_holdout.txt",
        }
    }


def write_fp16(path: Path) -> Path:
    """Convert ``path`` (with its card) to ``<stem>_fp16.onnx`` and a card naming the conversion."""
    from perception.modelcard import load_card
    from perception.models.export import convert_to_fp16

    out = convert_to_fp16(path, path.with_name(f"{path.stem}_fp16.onnx"))
    card = load_card(path)
    fp16 = card.model_copy(update={
        "name": card.name + "-fp16",
        "description": card.description + " FP16 copy (float16 weights and arithmetic, float32 inputs and "
                       "outputs) made by tools/export_onnx.py --fp16, for strongly typed TensorRT builds.",
        "metrics": {},
    })
    save_card(fp16, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and its card; measure it: perception eval --model {out}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
