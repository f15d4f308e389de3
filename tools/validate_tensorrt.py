#!/usr/bin/env python
"""Validate the TensorRT backend against ONNX Runtime on CamVid val, at FP32, FP16 and INT8.

    .venv/bin/python tools/validate_tensorrt.py                                 # default model, all three
    .venv/bin/python tools/validate_tensorrt.py --precisions fp16 --limit 20    # quicker
    .venv/bin/python tools/validate_tensorrt.py --cuda-graph --json out/trt.json
    .venv/bin/python tools/validate_tensorrt.py --cpu-models engines/camvid_lite0_panoptic_fp16.onnx,\
        engines/camvid_lite0_panoptic_int8_trt.onnx                          # no GPU needed

``--cpu-models`` (no GPU, no TensorRT): ONNX Runtime on the CPU runs each listed ONNX file — the FP16
export and the Q/DQ INT8 model that a TensorRT 11 (strongly typed) build takes its precision from —
through the backend's own preprocessing (``infer_frame``), and compares its labels with the FP32
``--model``'s: "agree %" and ΔmIoU as below. ONNX Runtime's CPU kernels are not TensorRT's, so this
measures what the model's precision costs, not what a GPU engine will print.

Needs an NVIDIA GPU, TensorRT 10 and a CUDA build of PyTorch; without them it prints why and exits
with code 2. For each precision it builds the engine (or reuses it from the engine cache) from the model that
carries that precision when it lies beside ``--model`` (``<stem>_fp16.onnx``, ``<stem>_int8_trt.onnx``;
TensorRT 11 needs them), else from ``--model`` with TensorRT 10's builder flags (INT8 then
calibrated on CamVid *train* images, preprocessed exactly like the runtime); then for every val image:

* ONNX Runtime (CPU) runs the :class:`Preprocessor`'s input → reference labels (argmax at the
  network's output resolution);
* TensorRT ``infer()`` runs the *same* input → "agree %" (share of low-res label pixels equal to the
  reference) and mIoU against the ground truth;
* TensorRT ``infer_frame_labels()`` runs the raw frame (GPU resize/normalise + GPU argmax) → "frame agree %"
  (this also covers the GPU preprocessing).

A row ``ort + cuda prep`` separates the GPU preprocessing and argmax from the engine: ONNX Runtime
runs the input that :class:`TorchPreprocessor` made on the GPU from the raw frame ("frame agree %"),
and "agree %" compares the GPU argmax of the reference's own logits with the CPU argmax (target:
100 % and frame agree ≥ 99.5 %, the FP16 bar, so that the engine keeps that budget). It needs
only a CUDA build of PyTorch, so on a GPU without TensorRT the tool still prints it (and the
preprocessing times), then exits with code 2 naming what is missing.

mIoU: low-res labels upsampled to the label size with nearest neighbour, 11 CamVid classes,
Unlabelled ignored, with ``perception.eval.metrics`` (the same method for every row, so ΔmIoU
isolates the backend). Timing: ms per frame over the val set after ``--warmup`` frames; "infer" =
upload + engine + download of all outputs; "frame" = the whole ``infer_frame_labels`` path. Exit code 0
when every row meets the issue's targets (FP16: agree ≥ 99.5 %, |ΔmIoU| ≤ 0.3; INT8: |ΔmIoU| ≤ 1.0;
FP32: agree ≥ 99.9 %), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.backends.tensorrt import available  # noqa: E402

TARGETS = {
    "fp32": {"agree": 99.9, "dmiou": 0.3},
    "fp16": {"agree": 99.5, "dmiou": 0.3},
    "int8": {"agree": None, "dmiou": 1.0},
}
"""The issue's acceptance targets (FP32's is ours: it should match to rounding)."""


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "fps": 1000.0 / float(a.mean())}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _miou(cms: np.ndarray) -> float:
    from perception.eval.metrics import iou_from_confusion, mean_ignore_nan

    return 100.0 * mean_ignore_nan(iou_from_confusion(cms))


def _upsampled(labels: np.ndarray, like: np.ndarray) -> np.ndarray:
    return cv2.resize(labels, (like.shape[1], like.shape[0]), interpolation=cv2.INTER_NEAREST)


def _cuda() -> tuple[bool, str]:
    """Whether a CUDA build of PyTorch sees a GPU here, and which (or why not)."""
    try:
        import torch
    except ImportError:
        return False, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return False, f"PyTorch {torch.__version__} sees no CUDA GPU"
    return True, f"{torch.cuda.get_device_name(0)} (PyTorch {torch.__version__}, CUDA {torch.version.cuda})"


def _cuda_preprocessing_row(ort, card, data, inputs, ref_labels, *, ignore: int, warmup: int) -> tuple[dict, dict]:
    """The ``ort + cuda prep`` row (see the module docstring) and the per-frame preprocessing times
    of the CPU :class:`Preprocessor` and of :class:`TorchPreprocessor` (upload + preprocess, synchronised)."""
    import torch

    from perception.backends.preprocess import Preprocessor
    from perception.backends.tensorrt import TorchPreprocessor
    from perception.eval.metrics import confusion_matrix
    from perception.postprocess.labels import argmax_labels

    c = card.num_classes
    sem_name = card.output("semantic_logits").name
    prep = TorchPreprocessor(card=card, device="cuda:0")
    cpu_prep = Preprocessor(card=card)
    d_in = torch.empty((1, 3, card.input.height, card.input.width), dtype=torch.float32, device="cuda:0")
    agree = frame_agree = total = 0
    cm = np.zeros((c, c), np.int64)
    gpu_ms, cpu_ms = [], []
    for x, ref, (_, image, gt) in zip(inputs, ref_labels, data):
        torch.cuda.synchronize()
        t = time.perf_counter()
        prep(torch.from_numpy(image).to("cuda:0"), d_in)
        torch.cuda.synchronize()
        gpu_ms.append((time.perf_counter() - t) * 1000.0)
        t = time.perf_counter()
        cpu_prep(image)
        cpu_ms.append((time.perf_counter() - t) * 1000.0)
        logits = ort.infer({card.input.name: d_in.cpu().numpy()})[sem_name][0]
        labels = argmax_labels(logits)
        frame_agree += int((labels == ref).sum())
        cm += confusion_matrix(_upsampled(labels, gt), gt, c, ignore)
        ref_logits = torch.from_numpy(ort.infer({card.input.name: x})[sem_name][0]).to("cuda:0")
        agree += int((torch.argmax(ref_logits, dim=0).to(torch.uint8).cpu().numpy() == ref).sum())
        total += ref.size
    row = {"backend": "ort + cuda prep", "precision": "fp32", "agree": 100.0 * agree / total,
           "frame_agree": 100.0 * frame_agree / total, "cm": cm, "infer": None, "frame": None, "build_s": None}
    times = {"cpu Preprocessor": _percentiles(cpu_ms[warmup:] or cpu_ms),
             f"cuda TorchPreprocessor ({torch.cuda.get_device_name(0)}, upload included)":
                 _percentiles(gpu_ms[warmup:] or gpu_ms)}
    return row, times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "engines" / "camvid_lite0_panoptic.onnx")
    ap.add_argument("--camvid", type=Path, default=REPO.parent / "shared" / "data" / "camvid")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--calib-images", type=int, default=200, help="CamVid train images for INT8 calibration")
    ap.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default: the usual one)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N val images")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--cuda-graph", action="store_true", help="time with CUDA-graph capture on")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--cpu-models", default=None, metavar="A.onnx,B.onnx",
                    help="compare these models with --model on the CPU (ONNX Runtime) and exit; no GPU needed")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (--cpu-models)")
    args = ap.parse_args(argv)
    if args.cpu_models:
        return compare_on_cpu(args, [Path(m.strip()) for m in args.cpu_models.split(",") if m.strip()])

    ok, why = available()
    cuda, cuda_why = _cuda()
    if not ok and not cuda:
        print(f"validate_tensorrt: no usable TensorRT GPU here: {why}; and {cuda_why}", file=sys.stderr)
        return 2
    print(f"TensorRT backend: {why}" if ok else f"TensorRT backend NOT usable: {why}. Running on {cuda_why} "
          "only what needs no TensorRT: the GPU preprocessing and argmax")

    from perception.backends.engine_build import BuildOptions
    from perception.backends.engine_cache import default_cache_dir
    from perception.backends.onnxruntime import OnnxRuntimeBackend
    from perception.backends.preprocess import Preprocessor
    from perception.backends.tensorrt import TensorRTBackend
    from perception.errors import PerceptionError
    from perception.eval.datasets import open_dataset
    from perception.eval.metrics import confusion_matrix
    from perception.modelcard import load_card
    from perception.postprocess.labels import argmax_labels

    try:
        card = load_card(args.model)
        ignore = card.ignore_index if card.ignore_index is not None else 11
        data = list(open_dataset(args.camvid, layout="camvid", split="val", num_classes=card.num_classes,
                                 ignore_index=ignore, limit=args.limit))
    except PerceptionError as exc:
        print(f"validate_tensorrt: {exc}", file=sys.stderr)
        return 2
    c = card.num_classes
    sem_name = card.output("semantic_logits").name
    pre = Preprocessor(card=card)
    inputs = [pre(image).copy() for _, image, _ in data]
    cache_dir = args.cache_dir or default_cache_dir()

    # --- reference: ONNX Runtime on the CPU ---
    ref_labels, ort_ms = [], []
    cm = np.zeros((c, c), np.int64)
    with OnnxRuntimeBackend(model_path=args.model, card=card, providers="cpu") as ort:
        for x, (_, _, gt) in zip(inputs, data):
            t = time.perf_counter()
            out = ort.infer({card.input.name: x})
            ort_ms.append((time.perf_counter() - t) * 1000.0)
            labels = argmax_labels(out[sem_name][0])
            ref_labels.append(labels)
            cm += confusion_matrix(_upsampled(labels, gt), gt, c, ignore)
        ort_miou = _miou(cm)
        rows = [{"backend": "onnxruntime cpu", "precision": "fp32", "agree": 100.0, "frame_agree": None,
                 "miou": ort_miou, "dmiou": 0.0, "infer": _percentiles(ort_ms[args.warmup:] or ort_ms),
                 "frame": None, "build_s": None, "pass": True}]
        prep_times = {}
        if cuda:
            row, prep_times = _cuda_preprocessing_row(ort, card, data, inputs, ref_labels, ignore=ignore,
                                                       warmup=args.warmup)
            cm = row.pop("cm")
            row["miou"] = _miou(cm)
            row["dmiou"] = row["miou"] - ort_miou
            # the GPU argmax must be exact; the preprocessing (up to one grey level off, see
            # frame_to_input) must leave the FP16 engine's agreement budget to the engine
            row["pass"] = row["agree"] == 100.0 and row["frame_agree"] >= TARGETS["fp16"]["agree"]
            rows.append(row)

    for precision in [p.strip() for p in args.precisions.split(",") if p.strip()] if ok else []:
        model = _model_for(args.model, precision)
        options = BuildOptions(precision=precision)
        if precision == "int8" and model == args.model:
            options = BuildOptions(precision="int8", calib_dir=args.camvid / "train", calib_images=args.calib_images,
                                   calib_cache=cache_dir / f"{card.name}_{card.input.width}x{card.input.height}.calib")
        t_build = time.perf_counter()
        try:
            backend = TensorRTBackend(model_path=model, card=load_card(model), engine_cache_dir=cache_dir,
                                      precision=precision, build_options=options, use_cuda_graph=args.cuda_graph)
        except PerceptionError as exc:
            print(f"validate_tensorrt: {precision}: {exc}", file=sys.stderr)
            rows.append({"backend": "tensorrt", "precision": precision, "error": str(exc), "pass": False})
            continue
        build_s = time.perf_counter() - t_build
        agree = frame_agree = total = 0
        cm = np.zeros((c, c), np.int64)
        infer_ms, frame_ms = [], []
        with backend:
            for x, ref, (_, image, gt) in zip(inputs, ref_labels, data):
                t = time.perf_counter()
                out = backend.infer({card.input.name: x})
                infer_ms.append((time.perf_counter() - t) * 1000.0)
                labels = argmax_labels(out[sem_name][0])
                agree += int((labels == ref).sum())
                total += ref.size
                cm += confusion_matrix(_upsampled(labels, gt), gt, c, ignore)
                t = time.perf_counter()
                fast = backend.infer_frame_labels(image)
                frame_ms.append((time.perf_counter() - t) * 1000.0)
                frame_agree += int((fast["labels"] == ref).sum())
            # a second timing pass of the fast path alone, now that every buffer and graph is warm
            frame_ms = []
            for _, image, _ in data:
                t = time.perf_counter()
                backend.infer_frame_labels(image)
                frame_ms.append((time.perf_counter() - t) * 1000.0)
        miou = _miou(cm)
        row = {
            "backend": "tensorrt" + (" +graph" if args.cuda_graph else ""),
            "precision": precision,
            "agree": 100.0 * agree / total,
            "frame_agree": 100.0 * frame_agree / total,
            "miou": miou,
            "dmiou": miou - ort_miou,
            "infer": _percentiles(infer_ms[args.warmup:] or infer_ms),
            "frame": _percentiles(frame_ms),
            "build_s": build_s,
            "engine": str(backend.engine_path),
            "model": model.name,
        }
        target = TARGETS.get(precision, {})
        row["pass"] = (target.get("agree") is None or row["agree"] >= target["agree"]) and (
            abs(row["dmiou"]) <= target.get("dmiou", float("inf"))
        )
        rows.append(row)

    print(f"\nmodel {args.model.name}, {len(data)} CamVid val images, input {card.input.width}x{card.input.height}, "
          f"mIoU at label resolution (nearest upsampling), ONNX Runtime CPU as reference\n")
    head = f"{'backend':<18}{'prec':<6}{'agree%':>8}{'frame%':>8}{'mIoU':>7}{'ΔmIoU':>7}" \
           f"{'infer p50':>10}{'p90':>7}{'frame p50':>10}{'p90':>7}{'fps':>7}{'open s':>8}  target"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:<18}{r['precision']:<6}  FAILED: {r['error']}")
            continue
        fr, inf = r["frame"], r["infer"]
        timed = fr or inf
        print(
            f"{r['backend']:<18}{r['precision']:<6}{r['agree']:>8.2f}{_fmt(r['frame_agree'], '.2f'):>8}"
            f"{r['miou']:>7.2f}{r['dmiou']:>+7.2f}{_fmt(inf and inf['p50'], '.2f'):>10}"
            f"{_fmt(inf and inf['p90'], '.2f'):>7}{_fmt(fr and fr['p50'], '.2f'):>10}{_fmt(fr and fr['p90'], '.2f'):>7}"
            f"{_fmt(timed and timed['fps'], '.1f'):>7}{_fmt(r['build_s'], '.1f'):>8}"
            f"  {'ok' if r['pass'] else 'MISSED'}"
        )
    print("\nopen s = constructor time (an engine build on a cache miss, else load). "
          "fps from the frame path for TensorRT, from infer for ONNX Runtime.")
    for name, t in prep_times.items():
        print(f"preprocessing, {name}: p50 {t['p50']:.3f} ms, p90 {t['p90']:.3f} ms per frame")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "preprocessing_ms": prep_times}, indent=1) + "\n")
    if not ok:
        print(f"validate_tensorrt: the TensorRT rows were not run: {why}", file=sys.stderr)
        return 2
    return 0 if all(r["pass"] for r in rows) else 1


def _model_for(model: Path, precision: str) -> Path:
    """The model that carries ``precision`` beside ``model`` (``<stem>_fp16.onnx`` from
    ``tools/export_onnx.py --fp16``, ``<stem>_int8_trt.onnx`` from ``tools/quantize_onnx.py --tensorrt``):
    what a strongly typed build (the only kind on TensorRT 11) needs; ``model`` itself when absent
    (TensorRT 10 then uses its builder flags and, for INT8, calibrates)."""
    suffix = {"fp16": "_fp16", "int8": "_int8_trt"}.get(precision)
    sibling = model.with_name(f"{model.stem}{suffix}.onnx") if suffix else model
    return sibling if sibling.is_file() else model


def compare_on_cpu(args: argparse.Namespace, models: list[Path]) -> int:
    """The ``--cpu-models`` table: each model vs ``--model`` (FP32) with ONNX Runtime on the CPU."""
    import platform

    from perception.backends.onnxruntime import OnnxRuntimeBackend
    from perception.eval.datasets import open_dataset
    from perception.eval.metrics import confusion_matrix
    from perception.modelcard import load_card
    from perception.postprocess.labels import argmax_labels

    card = load_card(args.model)
    ignore = card.ignore_index if card.ignore_index is not None else 11
    data = list(open_dataset(args.camvid, layout="camvid", split="val", num_classes=card.num_classes,
                             ignore_index=ignore, limit=args.limit))
    rows, ref_labels = [], None
    for path in [args.model, *models]:
        labels_all, ms = [], []
        cm = np.zeros((card.num_classes, card.num_classes), np.int64)
        with OnnxRuntimeBackend(model_path=path, card=load_card(path), providers="cpu", threads=args.threads) as b:
            sem = b.card.output("semantic_logits").name
            for _, image, gt in data:
                t = time.perf_counter()
                logits = b.infer_frame(image)[sem][0]
                ms.append((time.perf_counter() - t) * 1000.0)
                labels = argmax_labels(logits)
                labels_all.append(labels)
                cm += confusion_matrix(_upsampled(labels, gt), gt, card.num_classes, ignore)
        ref_labels = ref_labels or labels_all
        same = sum(int((a == r).sum()) for a, r in zip(labels_all, ref_labels))
        total = sum(r.size for r in ref_labels)
        rows.append({"model": path.name, "agree": 100.0 * same / total, "miou": _miou(cm),
                     "ms": _percentiles(ms[args.warmup:] or ms)})
    print(f"\n{len(data)} CamVid val images, input {card.input.width}x{card.input.height}, ONNX Runtime CPU "
          f"({platform.processor() or platform.machine()}), labels at the output grid vs {args.model.name}; "
          "mIoU at label resolution (nearest upsampling)\n")
    print(f"{'model':<42}{'agree%':>8}{'mIoU':>7}{'ΔmIoU':>7}{'p50 ms':>8}")
    for r in rows:
        print(f"{r['model']:<42}{r['agree']:>8.2f}{r['miou']:>7.2f}{r['miou'] - rows[0]['miou']:>+7.2f}"
              f"{r['ms']['p50']:>8.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu_rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
