#!/usr/bin/env python
"""Train the default panoptic network (EfficientNet-Lite0 + FPN) on CamVid; select on val by mIoU.

    .venv/bin/python tools/train.py --time-budget-min 60            # fresh run
    .venv/bin/python tools/train.py --resume                         # continue checkpoints/camvid_lite0/last.pt
    .venv/bin/python tools/train.py --config configs/training/panoptic_v3.yaml   # the bundled model

Writes ``<out>/last.pt`` every epoch, ``<out>/best.pt`` when the evaluation mIoU improves and one JSON
line per epoch to ``<out>/log.jsonl``. What it evaluates on: ``--eval-split`` (default val); the images
of ``--holdout-sequence`` (removed from the training splits: one fold of a cross-validation by sequence,
see tools/crossval.py); or nothing (``--eval-split none``, for a final model trained on train + val:
best.pt is then simply the last checkpoint, a fixed schedule chosen beforehand).

The learning rate follows a poly schedule over ``--epochs``; with a
``--time-budget-min`` it follows whichever of (iterations done / total) and (time spent / budget) is
further along, so a run on a slow or busy machine still anneals before it stops. A run stopped by the
budget ends cleanly after a final evaluation. Runs on CPU (``--threads``, default 2) or CUDA when present.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

# Threads sleep at OpenMP barriers instead of spinning: on a shared 2-core machine spinning threads
# burn 5-10x the CPU of the useful work (measured); must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.errors import DataError  # noqa: E402
from perception.models.data import AugmentConfig, Split, augment, collate, concat, load_split  # noqa: E402
from perception.models.network import NetworkConfig, build_network  # noqa: E402
from perception.models.pennfudan import PEDESTRIAN, hold_out, load_pennfudan  # noqa: E402
from perception.models.training import (  # noqa: E402
    LossConfig,
    class_weights,
    evaluate,
    panoptic_loss,
    save_checkpoint,
    teacher,
)
from perception.models.warmstart import freeze_batchnorm, network_from_onnx  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WxH, got {text!r}") from exc
    if w % 32 or h % 32:
        raise argparse.ArgumentTypeError(f"{text}: both sides must be multiples of 32")
    return w, h


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None,
                   help="YAML file of these options (keys as the long option names, e.g. init-onnx: ...); "
                   "options given on the command line win. Relative paths in it are relative to the repository")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "camvid")
    p.add_argument("--out", type=Path, default=REPO / "checkpoints" / "camvid_lite0")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-iters", type=int, default=100)
    p.add_argument("--crop", type=_size, default=(384, 288), help="training crop WxH")
    p.add_argument("--input-size", type=_size, default=(480, 352), help="inference/eval size WxH")
    p.add_argument("--scale-min", type=float, default=0.75)
    p.add_argument("--scale-max", type=float, default=1.5)
    p.add_argument("--color-jitter", type=float, default=0.25,
                   help="max relative brightness/contrast/saturation change")
    p.add_argument("--gamma", type=float, default=0.0, help="random gamma exp(U(-g, g)); 0 off")
    p.add_argument("--blur-prob", type=float, default=0.0, help="chance of a Gaussian blur (sigma 0.5-1.5 px)")
    p.add_argument("--noise-std", type=float, default=0.0, help="max sensor-noise std (0..255 units); 0 off")
    p.add_argument("--train-splits", nargs="+", default=["train"], help="CamVid splits trained on (e.g. train val)")
    p.add_argument("--eval-split", default="val",
                   help="CamVid split evaluated on (selects best.pt); 'none': no evaluation, best.pt = last")
    p.add_argument("--holdout-sequence", default=None,
                   help="leave this recording (e.g. 0016E5) out of the training splits and evaluate on it")
    p.add_argument("--ohem-keep", type=float, default=0.3)
    p.add_argument("--time-budget-min", type=float, default=None, help="stop cleanly after this many minutes")
    p.add_argument("--freeze-blocks", type=int, default=3,
                   help="keep the stem and the first N encoder blocks (strides 2-4) at their ImageNet weights and "
                   "BN statistics: ~20%% less CPU per step (measured), little accuracy cost; 0 trains everything")
    p.add_argument("--no-channels-last", action="store_true",
                   help="keep NCHW-contiguous tensors (channels-last is ~28%% less CPU per step on this CPU, measured)")
    p.add_argument("--eval-every", type=int, default=2, help="evaluate on val every N epochs (and at the end)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-pretrained", action="store_true", help="random encoder (tests only)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train/val images (smoke tests)")
    p.add_argument("--init-onnx", type=Path, default=None,
                   help="fine-tune: start from this exported model (e.g. engines/camvid_lite0_panoptic.onnx); its "
                   "BatchNorm was folded away, so every BatchNorm stays in eval mode (scale and shift still learn)")
    p.add_argument("--pennfudan", type=Path, default=None,
                   help="also train on this Penn-Fudan folder (real per-person masks; the rest of each image "
                   "labelled by the starting model where it is confident)")
    p.add_argument("--pennfudan-holdout-every", type=int, default=4,
                   help="hold out every Nth Penn-Fudan image (listed in <out>/pennfudan_holdout.txt) for "
                   "`perception eval --layout pennfudan --split`; 0 holds out none")
    p.add_argument("--pennfudan-repeat", type=int, default=2, help="times each Penn-Fudan image appears per epoch")
    p.add_argument("--pennfudan-scale-min", type=float, default=0.35,
                   help="Penn-Fudan rescale range: its people are 150-300 px at the base size; 0.35-1.5 gives "
                   "people of ~50-450 px, as fixed cameras see them")
    p.add_argument("--pennfudan-scale-max", type=float, default=1.5)
    known, _ = p.parse_known_args(argv)
    if known.config is not None:
        p.set_defaults(**_config_defaults(p, known.config))
    return p.parse_args(argv)


def _config_defaults(parser: argparse.ArgumentParser, path: Path) -> dict:
    """The options a ``--config`` YAML sets, converted by each option's own type; exits naming a bad key."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        parser.error(f"--config {path}: {exc}")
    if not isinstance(data, dict):
        parser.error(f"--config {path}: expected a mapping of option: value")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    out = {}
    for key, raw in data.items():
        dest = str(key).replace("-", "_")
        action = actions.get(dest)
        if action is None:
            parser.error(f"--config {path}: unknown option {key!r}")
        value = raw
        if action.type is not None and raw is not None and not isinstance(raw, bool):
            value = action.type(str(raw))
        if isinstance(value, Path) and not value.is_absolute():
            value = REPO / value
        out[dest] = value
    return out


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def machine(threads: int, device: str) -> str:
    """The training machine in one line, for the model card (the CPU as lscpu names it)."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    where = f"CUDA {torch.cuda.get_device_name(0)}" if device == "cuda" else "CPU only"
    return f"{where}: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads"


def load_camvid(args: argparse.Namespace) -> tuple[Split, Split | None]:
    """(the training images, the evaluation images or None) that ``args`` ask for."""
    train = concat([load_split(args.data, name) for name in args.train_splits])
    if args.holdout_sequence:
        train, val = train.split_sequence(args.holdout_sequence)
    elif args.eval_split == "none":
        val = None
    elif args.eval_split in args.train_splits:
        raise ValueError(f"--eval-split {args.eval_split} is also trained on (--train-splits); "
                         "pass --eval-split none or --holdout-sequence")
    else:
        val = load_split(args.data, args.eval_split)
    if args.limit:
        train, val = train.subset(args.limit), val.subset(args.limit) if val is not None else None
    return train, val


def build_model(args: argparse.Namespace, net_cfg: NetworkConfig, device: str) -> torch.nn.Module:
    if args.init_onnx is not None:
        model = network_from_onnx(args.init_onnx, config=net_cfg)
        print(f"starting from {args.init_onnx} (BatchNorm kept in eval mode)", flush=True)
    else:
        model = build_network(pretrained=not args.no_pretrained, config=net_cfg)
    return model.to(device)


def load_pennfudan_sets(args: argparse.Namespace, model: torch.nn.Module, device: str) -> tuple[Split, list[str]]:
    """Penn-Fudan's training part (labelled with the starting model as teacher) and the held-out stems,
    which are written to ``<out>/pennfudan_holdout.txt``."""
    from perception.eval.instances import pennfudan_pairs

    train_pairs, held_pairs = hold_out(pennfudan_pairs(args.pennfudan, "train"), every=args.pennfudan_holdout_every)
    if args.limit:
        train_pairs, held_pairs = train_pairs[: args.limit], held_pairs[: args.limit]
    held = [p.name for p in held_pairs]
    (args.out / "pennfudan_holdout.txt").write_text("".join(f"{s}\n" for s in held))
    label = teacher(model, input_size=args.input_size, device=device)
    split = load_pennfudan(train_pairs, teacher=label)
    persons = sum(c.count(PEDESTRIAN) for c in split.instance_classes)
    print(f"Penn-Fudan: {len(train_pairs)} images ({persons} persons) for training, {len(held)} held out "
          f"({args.out / 'pennfudan_holdout.txt'})", flush=True)
    return split, held


def person_scores(model: torch.nn.Module, args: argparse.Namespace) -> dict:
    """Person instance scores on the held-out Penn-Fudan images (``<out>/pennfudan_holdout.txt``), through
    the exported ONNX model as the pipeline runs it (``perception eval --layout pennfudan``'s code)."""
    from perception.backends.factory import open_backend
    from perception.eval.instances import evaluate_instances, pennfudan_pairs
    from perception.modelcard import save_card
    from perception.models.export import build_card, export_onnx

    path = args.out / "eval_tmp.onnx"
    export_onnx(model, path, example_size=args.input_size)
    save_card(build_card(input_size=args.input_size), path)
    pairs = pennfudan_pairs(args.pennfudan, str(args.out / "pennfudan_holdout.txt"))
    with open_backend(path, kind="onnxruntime", threads=args.threads) as backend:
        report = evaluate_instances(pairs, backend, progress=False)
    return {k: round(v, 4) for k, v in report.scores.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = (
        "cuda" if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    seed_all(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "log.jsonl"

    t0 = time.perf_counter()
    try:
        train, val = load_camvid(args)
    except (DataError, ValueError) as exc:
        print(f"train.py: {exc}", file=sys.stderr)
        return 2
    print(f"loaded {len(train.images)} training images ({', '.join(args.train_splits)}"
          f"{f' without {args.holdout_sequence}' if args.holdout_sequence else ''}) / "
          f"{len(val.images) if val else 0} evaluation images in {time.perf_counter() - t0:.1f}s", flush=True)

    net_cfg = NetworkConfig()
    aug_cfg = AugmentConfig(base_size=args.input_size, crop_size=args.crop,
                            scale_range=(args.scale_min, args.scale_max), color_jitter=args.color_jitter,
                            gamma=args.gamma, blur_prob=args.blur_prob, noise_std=args.noise_std)
    loss_cfg = LossConfig(ohem_keep=args.ohem_keep)
    model = build_model(args, net_cfg, device)
    sources: list[tuple[Split, AugmentConfig]] = [(train, aug_cfg)]
    pool = [(0, i) for i in range(len(train.images))]
    held: list[str] = []
    if args.pennfudan is not None:
        pf, held = load_pennfudan_sets(args, model, device)
        sources.append((pf, replace(aug_cfg, scale_range=(args.pennfudan_scale_min, args.pennfudan_scale_max))))
        pool += [(1, i) for i in range(len(pf.images))] * args.pennfudan_repeat
    frozen = [model.encoder.stem, *model.encoder.blocks[: args.freeze_blocks]] if args.freeze_blocks else []
    for module in frozen:
        for param in module.parameters():
            param.requires_grad_(False)  # still in the optimizer (no grad -> skipped), so checkpoints stay compatible
    channels_last = not args.no_channels_last and device == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    enc = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    dec = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    opt = torch.optim.AdamW(
        [{"params": enc, "lr_scale": 0.5}, {"params": dec, "lr_scale": 1.0}], lr=args.lr, weight_decay=args.weight_decay
    )
    weights = class_weights(c=loss_cfg.class_weight_c).to(device)

    steps_per_epoch = len(pool) // args.batch_size
    total_iters = steps_per_epoch * args.epochs
    start_epoch, it, best, spent = 0, 0, -1.0, 0.0
    last_path, best_path = args.out / "last.pt", args.out / "best.pt"
    if args.resume:
        if not last_path.is_file():
            print(f"--resume: {last_path} does not exist", file=sys.stderr)
            return 2
        state = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, it, best, spent = state["epoch"] + 1, state["iter"], state["best_miou"], state["time_spent_s"]
        print(f"resumed from {last_path}: epoch {start_epoch}, iter {it}, best mIoU {best:.4f}, "
              f"{spent / 60:.1f} min spent", flush=True)

    budget_s = args.time_budget_min * 60.0 if args.time_budget_min else None
    recipe = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "network": asdict(net_cfg),
        "augment": asdict(aug_cfg),
        "loss": asdict(loss_cfg),
        "optimizer": "AdamW, encoder lr x0.5, linear warmup then poly(0.9)",
        "machine": machine(args.threads, device),
    }
    run_start = time.perf_counter() - spent
    eval_cost_s = 30.0  # updated after the first evaluation

    def lr_at(i: int) -> float:
        progress = i / max(total_iters, 1)
        if budget_s:
            progress = max(progress, (time.perf_counter() - run_start) / budget_s)
        factor = (1.0 - min(progress, 0.999)) ** 0.9
        if i < args.warmup_iters:
            factor *= (i + 1) / args.warmup_iters
        return args.lr * factor

    def checkpoint(epoch: int, metrics: dict | None) -> dict:
        state = dict(
            model=model.state_dict(),
            optimizer=opt.state_dict(),
            epoch=epoch,
            iter=it,
            best_miou=best,
            time_spent_s=time.perf_counter() - run_start,
            metrics=metrics if metrics is not None else last_metrics,
            recipe=recipe,
            input_size=list(args.input_size),
        )
        save_checkpoint(last_path, **state)
        return state

    last_metrics: dict | None = None

    stop = False
    for epoch in range(start_epoch, args.epochs):
        model.train()
        for module in frozen:
            module.eval()  # frozen layers keep their ImageNet BN statistics
        if args.init_onnx is not None:
            freeze_batchnorm(model)  # folded statistics: mean 0, variance 1 (see perception/models/warmstart.py)
        rng = np.random.default_rng([args.seed, epoch])
        order = rng.permutation(len(pool))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}", mininterval=20, file=sys.stdout)
        sums = {"loss": 0.0, "sem": 0.0, "center": 0.0, "offset": 0.0}
        for step in bar:
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            batch = collate([_sample(sources, *pool[i], rng) for i in idx])
            tb = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
            if channels_last:
                tb["image"] = tb["image"].contiguous(memory_format=torch.channels_last)
            lr = lr_at(it)
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_scale"]
            loss, parts = panoptic_loss(model(tb["image"]), tb, cfg=loss_cfg, weights=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            loss_value = loss.item()
            sums["loss"] += loss_value
            for k, v in parts.items():
                sums[k] += v
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", refresh=False)
            if budget_s and time.perf_counter() - run_start + eval_cost_s > budget_s:
                stop = True
                break
        bar.close()
        done = step + 1
        last_epoch = stop or epoch == args.epochs - 1
        if not (last_epoch or (epoch + 1) % args.eval_every == 0):
            checkpoint(epoch, None)
            print(f"epoch {epoch}: loss {sums['loss'] / done:.3f} (no evaluation this epoch)", flush=True)
            continue
        te = time.perf_counter()
        metrics = evaluate(model, val, input_size=args.input_size, device=device) if val is not None else {}
        if held:
            metrics["pennfudan_holdout"] = person_scores(model, args)
        eval_cost_s = time.perf_counter() - te + 5.0
        improved = val is None or metrics["miou"] > best  # nothing to select on: best.pt = the latest
        if improved and val is not None:
            best = metrics["miou"]
        last_metrics = metrics
        state = checkpoint(epoch, metrics)
        if improved:
            save_checkpoint(best_path, **state)
        line = {
            "epoch": epoch,
            "iter": it,
            "minutes": round((time.perf_counter() - run_start) / 60, 2),
            "lr": lr,
            **{k: round(v / done, 4) for k, v in sums.items()},
            **({
                "val_miou": round(metrics["miou"], 4),
                "val_pixel_accuracy": round(metrics["pixel_accuracy"], 4),
                "val_per_class_iou": [round(v, 3) for v in metrics["per_class_iou"]],
                "val_confusion": metrics["confusion"],
                "best": round(best, 4),
            } if val is not None else {}),
            **({"pennfudan_holdout": metrics["pennfudan_holdout"]} if held else {}),
        }
        with log_path.open("a") as fh:
            fh.write(json.dumps(line) + "\n")
        scores = (f"val mIoU {metrics['miou']:.4f} (best {best:.4f}) pixel acc {metrics['pixel_accuracy']:.4f} "
                  if val is not None else "")
        print(f"epoch {epoch}: {scores}loss {line['loss']:.3f} [{line['minutes']} min]"
              + (f" persons {metrics['pennfudan_holdout']}" if held else ""), flush=True)
        if stop:
            print(f"time budget of {args.time_budget_min} min reached; "
                  + (f"best val mIoU {best:.4f} in {best_path}" if val is not None
                     else f"last checkpoint in {best_path}"),
                  flush=True)
            break
    print("done", flush=True)
    return 0


def _sample(sources: list[tuple[Split, AugmentConfig]], source: int, index: int, rng: np.random.Generator):
    split, cfg = sources[source]
    if split.instances is None:
        return augment(split.images[index], split.labels[index], cfg, rng)
    return augment(split.images[index], split.labels[index], cfg, rng, instances=split.instances[index],
                   instance_classes=split.instance_classes[index])


if __name__ == "__main__":
    raise SystemExit(main())
