"""``perception build-engine``: build a self-describing TensorRT engine from an ONNX model, offline.

The engine lands in the engine cache (``--cache-dir``, default ``$PERCEPTION_ENGINE_CACHE`` or
``~/.cache/perception/engines``) under the key the runtime looks for, so a later ``perception run`` with the same
model, precision and size finds it; or at ``--out``. Heavy imports (tensorrt, torch, cv2) happen in
the handler only, so ``--help`` works on any machine.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from perception.cli.args import non_negative_int, positive_int, size_arg
from perception.errors import ConfigError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from perception.backends.engine_build import DEFAULT_CALIB_IMAGES, DEFAULT_WORKSPACE_MB, PRECISIONS

    p = subparsers.add_parser(
        "build-engine",
        help="build a TensorRT engine (FP32/FP16/INT8) from an ONNX model",
        description=(
            "Build a self-describing TensorRT engine from MODEL.onnx (with its MODEL.card.json beside it) "
            "and store it in the engine cache, where `perception run --backend tensorrt` finds it. Needs an "
            "NVIDIA GPU, TensorRT 10 or 11 and a CUDA build of PyTorch. TensorRT 11 takes the precision from "
            "the model (an FP16 export for fp16, a Q/DQ model for int8); see docs/tensorrt.md."
        ),
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help="the ONNX model (its card must sit beside it)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16",
                   help="fp16 (default): ~2x FP32 speed on tensor cores, near-identical labels; int8: faster "
                        "again. The model's own precision when it carries one (FP16 export, Q/DQ model; always "
                        "so on TensorRT 11); an FP32 model at int8 needs --calib-dir or --calib-cache (10.x)")
    cal = p.add_argument_group("INT8 calibration")
    cal.add_argument("--calib-dir", type=Path, metavar="DIR",
                     help="folder of representative images (searched recursively), preprocessed like the runtime")
    cal.add_argument("--calib-images", type=positive_int, default=DEFAULT_CALIB_IMAGES, metavar="N",
                     help="images to calibrate on, evenly spaced over the sorted folder (default "
                          f"{DEFAULT_CALIB_IMAGES})")
    cal.add_argument("--calib-cache", type=Path, metavar="FILE",
                     help="calibration cache: read if it exists (skips calibration), written after calibrating")
    shapes = p.add_argument_group("shapes (optimisation profile)")
    shapes.add_argument("--batch", type=positive_int, metavar="N", help="fixed batch size (default 1)")
    shapes.add_argument("--min-batch", type=positive_int, metavar="N")
    shapes.add_argument("--opt-batch", type=positive_int, metavar="N")
    shapes.add_argument("--max-batch", type=positive_int, metavar="N")
    shapes.add_argument("--input-size", type=size_arg, metavar="WxH",
                        help="fixed input size (default: the model card's); dynamic models only for other sizes")
    shapes.add_argument("--min-size", type=size_arg, metavar="WxH")
    shapes.add_argument("--opt-size", type=size_arg, metavar="WxH")
    shapes.add_argument("--max-size", type=size_arg, metavar="WxH")
    b = p.add_argument_group("builder")
    b.add_argument("--workspace-mb", type=positive_int, default=DEFAULT_WORKSPACE_MB, metavar="N",
                   help=f"tactic scratch memory limit in MiB (default {DEFAULT_WORKSPACE_MB}; 512-1024 on 8 GB "
                        "Jetsons)")
    b.add_argument("--dla", type=non_negative_int, metavar="N", help="build for DLA core N (Jetson), FP16/INT8 only")
    b.add_argument("--gpu-fallback", action=argparse.BooleanOptionalAction, default=True,
                   help="with --dla: run layers the DLA cannot on the GPU (default) instead of failing")
    b.add_argument("--timing-cache", type=Path, metavar="FILE",
                   help="TensorRT timing cache: loaded if present, saved after the build (faster rebuilds)")
    b.add_argument("--device", type=non_negative_int, default=0, metavar="N", help="CUDA device index (default 0)")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, metavar="ENGINE", help="write the engine file here instead of the cache")
    out.add_argument("--cache-dir", type=Path, metavar="DIR",
                     help="engine cache folder (default $PERCEPTION_ENGINE_CACHE or ~/.cache/perception/engines)")
    out.add_argument("--force", action="store_true", help="rebuild even if a matching engine exists")
    p.set_defaults(func=main)


def options_from_args(args: argparse.Namespace):
    """Map parsed arguments to :class:`~perception.backends.engine_build.BuildOptions`. Pure.

    Raises :class:`ConfigError` naming the flag for contradictory combinations.
    """
    from perception.backends.engine_build import BuildOptions

    ranged_batch = [args.min_batch, args.opt_batch, args.max_batch]
    if args.batch is not None and any(v is not None for v in ranged_batch):
        raise ConfigError("--batch fixes the batch size; do not combine it with --min-batch/--opt-batch/--max-batch")
    if args.batch is not None:
        batch = (args.batch, args.batch, args.batch)
    else:
        lo = args.min_batch or 1
        opt = args.opt_batch or lo
        hi = args.max_batch or max(opt, lo)
        batch = (lo, opt, hi)
    ranged_size = [args.min_size, args.opt_size, args.max_size]
    if args.input_size is not None and any(v is not None for v in ranged_size):
        raise ConfigError("--input-size fixes the input size; do not combine it with --min-size/--opt-size/--max-size")
    opt_size = args.input_size or args.opt_size
    if args.precision != "int8" and (args.calib_dir is not None or args.calib_cache is not None):
        raise ConfigError(f"--calib-dir/--calib-cache only apply to --precision int8 (asked {args.precision})")
    has_cache = args.calib_cache is not None and args.calib_cache.is_file()
    if args.precision == "int8" and args.calib_dir is None and not has_cache and not _quantized(args.model):
        raise ConfigError(
            "--precision int8 needs --calib-dir DIR (representative images) or an existing --calib-cache FILE"
        )
    if args.dla is None and not args.gpu_fallback:
        raise ConfigError("--no-gpu-fallback only applies with --dla N")
    return BuildOptions(
        precision=args.precision,
        batch=batch,
        min_size=args.min_size,
        opt_size=opt_size,
        max_size=args.max_size,
        workspace_mb=args.workspace_mb,
        dla_core=args.dla,
        gpu_fallback=args.gpu_fallback,
        calib_dir=args.calib_dir,
        calib_images=args.calib_images,
        calib_cache=args.calib_cache,
        timing_cache=args.timing_cache,
    )


def _quantized(model: Path) -> bool:
    """Whether ``model`` is a Q/DQ model (which carries its own INT8 scales); False if unreadable."""
    from perception.backends.engine_build import model_is_quantized
    from perception.errors import EngineError

    try:
        return Path(model).is_file() and model_is_quantized(model)
    except EngineError:
        return False


def main(args: argparse.Namespace) -> int:
    from perception.backends.engine_build import build_engine, gpu_identity, import_tensorrt, make_request
    from perception.backends.engine_cache import EngineCache, load_checked, write_engine_file
    from perception.errors import EngineError
    from perception.modelcard import load_card

    options = options_from_args(args)
    model = Path(args.model)
    if not model.is_file():
        raise ConfigError(f"model file not found: {model}")
    card = load_card(model)
    trt = import_tensorrt()  # the clear "TensorRT is not installed ..." error on CPU machines
    gpu = gpu_identity(args.device)
    request = make_request(model_path=model, card=card, options=options, tensorrt_version=trt.__version__, gpu=gpu)
    cache = EngineCache(directory=args.cache_dir)
    target = Path(args.out) if args.out else cache.path_for(request)
    if target.is_file() and not args.force:
        try:
            load_checked(target, request)
        except EngineError as exc:
            log.info("existing %s will be replaced: %s", target, exc)
        else:
            print(f"up to date: {target} (key {request.key()}); --force rebuilds it")
            return 0
    if not args.out:
        for line in cache.explain_miss(request):
            log.info("other cached engine: %s", line)
    t0 = time.monotonic()
    built = build_engine(model_path=model, card=card, options=options, device=args.device)
    seconds = time.monotonic() - t0
    metadata = write_engine_file(target, request, built.blob, extra={"built_by": "perception build-engine",
                                                                    "build_seconds": round(seconds, 1),
                                                                    **built.metadata()})
    shapes = ", ".join(p.describe() for p in request.profiles)
    print(
        f"built {target}\n  {options.precision} {shapes} on {gpu.name} (sm {gpu.compute_capability}), "
        f"TensorRT {trt.__version__}, {built.metadata()['network']} network\n"
        f"  {metadata.engine_size / 1e6:.1f} MB in {seconds:.1f} s, key {request.key()}"
    )
    return 0
