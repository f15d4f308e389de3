"""ONNX → TensorRT 10 engine: build options, shape profiles, INT8 calibration, the build itself.

Building is apart from running (:mod:`perception.backends.tensorrt`): ``perception build-engine``
calls :func:`build_engine` offline, and the runtime calls it only on a cache miss. Everything that
decides *what* is built — :class:`BuildOptions`, :func:`shape_profiles`, :func:`make_request` (the
cache key), :func:`calibration_images` — is pure Python and runs without a GPU. Only
:func:`build_engine` needs TensorRT, PyTorch with CUDA (device buffers for calibration; see the
module docstring of :mod:`perception.backends.tensorrt` for why PyTorch) and a GPU.

Written against the TensorRT 10 Python API (``tensorrt`` 10.x). TensorRT 11 removed the weakly typed
builder flags (``BuilderFlag.FP16``/``INT8``) and implicit INT8 calibration this module uses, so
:func:`import_tensorrt` refuses any other major version with a message saying so.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from perception.backends.base import resolve_input_size
from perception.backends.engine_cache import (
    EngineRequest,
    ShapeProfile,
    file_sha256,
    plain_json,
)
from perception.errors import ConfigError, EngineError, ModelCardError
from perception.modelcard import ModelCard

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")

SUPPORTED_TENSORRT_MAJOR = 10

TENSORRT_MISSING = (
    "TensorRT is not installed: pip install tensorrt (desktop) or use JetPack's python3-libnvinfer (Jetson)"
)

DEFAULT_WORKSPACE_MB = 2048
"""Scratch memory TensorRT may use for a layer's tactic. More lets it try faster tactics that need
big temporary buffers; less keeps the build within a Jetson's shared memory. 2 GiB suits desktop
GPUs and Orin; use 512-1024 on 8 GB Jetsons."""

DEFAULT_CALIB_IMAGES = 200
"""Images fed to INT8 calibration. More gives steadier activation ranges but a slower build (each
image is one forward pass in FP32 with histogram collection); a few hundred frames of the target
scenes is the usual amount. They are taken evenly spaced from the sorted folder, so a folder of
consecutive video frames still spans the whole drive."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildOptions:
    """How to build one engine. Sizes are ``(width, height)``; batches are counts.

    ``opt_size`` ``None`` means the model card's input size (or the runtime's ``input_size``);
    ``min_size``/``max_size`` ``None`` mean equal to ``opt_size`` (a fixed-size engine, the fastest).
    ``batch`` is ``(min, opt, max)``. ``gpu_fallback`` only matters with ``dla_core``: layers the
    DLA cannot run go to the GPU instead of failing the build.
    """

    precision: Precision = "fp16"
    batch: tuple[int, int, int] = (1, 1, 1)
    min_size: tuple[int, int] | None = None
    opt_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    dla_core: int | None = None
    gpu_fallback: bool = True
    calib_dir: Path | None = None
    calib_images: int = DEFAULT_CALIB_IMAGES
    calib_cache: Path | None = None
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if len(self.batch) != 3 or not (0 < self.batch[0] <= self.batch[1] <= self.batch[2]):
            raise ConfigError(f"batch (min, opt, max) needs 0 < min <= opt <= max, got {self.batch}")
        if self.workspace_mb <= 0:
            raise ConfigError(f"workspace_mb must be positive, got {self.workspace_mb}")
        if self.dla_core is not None and self.dla_core < 0:
            raise ConfigError(f"dla_core must be >= 0, got {self.dla_core}")
        if self.calib_images <= 0:
            raise ConfigError(f"calib_images must be positive, got {self.calib_images}")
        for name in ("min_size", "opt_size", "max_size"):
            size = getattr(self, name)
            if size is not None and (len(size) != 2 or size[0] <= 0 or size[1] <= 0):
                raise ConfigError(f"{name} must be a positive (width, height), got {size}")


@dataclass(frozen=True, slots=True)
class GpuIdentity:
    """Which GPU an engine is built for; engines do not move between compute capabilities."""

    name: str
    compute_capability: str
    """``"major.minor"``, e.g. ``"9.0"`` for H100, ``"8.7"`` for Jetson Orin."""


# --- imports of the GPU stack (lazy: runtime code never imports torch/tensorrt without a GPU) -----


def import_tensorrt():
    """Import ``tensorrt`` (10.x) or raise :class:`EngineError` saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(f"{TENSORRT_MISSING} ({exc})") from exc
    except OSError as exc:  # the wheel is there but libnvinfer / the CUDA runtime is not loadable
        raise EngineError(
            f"TensorRT is installed but cannot load its libraries ({exc}); install the NVIDIA driver and the "
            "CUDA runtime it was built for"
        ) from exc
    version = str(getattr(trt, "__version__", "0"))
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) != SUPPORTED_TENSORRT_MAJOR:
        raise EngineError(
            f"TensorRT {version} is installed but this package is written for TensorRT "
            f"{SUPPORTED_TENSORRT_MAJOR}.x (TensorRT 11 removed the FP16/INT8 builder flags it uses): "
            f"pip install 'tensorrt>={SUPPORTED_TENSORRT_MAJOR},<{SUPPORTED_TENSORRT_MAJOR + 1}'"
        )
    return trt


def import_torch_cuda():
    """Import PyTorch and check it sees a CUDA GPU, or raise :class:`EngineError` with the fix."""
    try:
        import torch
    except ImportError as exc:
        raise EngineError(
            "the TensorRT backend keeps its GPU buffers in PyTorch CUDA tensors, and PyTorch is not installed: "
            "pip install torch (a CUDA build) on a desktop, NVIDIA's JetPack wheel on a Jetson"
        ) from exc
    if not torch.cuda.is_available():
        raise EngineError(
            f"PyTorch {torch.__version__} sees no CUDA GPU (a CPU-only build, no NVIDIA driver, or "
            "CUDA_VISIBLE_DEVICES hides the GPU); the TensorRT backend needs a CUDA build of PyTorch and a GPU"
        )
    return torch


def gpu_identity(device: int = 0) -> GpuIdentity:
    """Name and compute capability of CUDA device ``device``."""
    torch = import_torch_cuda()
    count = torch.cuda.device_count()
    if not 0 <= device < count:
        raise EngineError(f"CUDA device {device} does not exist; this machine has {count} (0..{count - 1})")
    props = torch.cuda.get_device_properties(device)
    return GpuIdentity(name=str(props.name), compute_capability=f"{props.major}.{props.minor}")


# --- pure planning ------------------------------------------------------------------------------


def shape_profiles(card: ModelCard, options: BuildOptions) -> tuple[ShapeProfile, ...]:
    """The optimisation profile of the model's one image input, ``NCHW``. Pure.

    Raises :class:`EngineError` (via ``BackendError`` checks) when the card's model cannot take the
    asked batch or sizes: a batch range on a fixed-batch model, a size on a fixed-size model, or a
    size that is not a multiple of the card's ``size_multiple``.
    """
    bmin, bopt, bmax = options.batch
    if not card.input.dynamic_batch and options.batch != (1, 1, 1):
        raise EngineError(
            f"model {card.name!r} has a fixed batch of 1 (its card says dynamic_batch: false); "
            f"cannot build for batch {options.batch} (re-export it with a dynamic batch axis)"
        )
    opt = resolve_input_size(card, options.opt_size)
    lo = resolve_input_size(card, options.min_size) if options.min_size is not None else opt
    hi = resolve_input_size(card, options.max_size) if options.max_size is not None else opt
    if not (lo[0] <= opt[0] <= hi[0] and lo[1] <= opt[1] <= hi[1]):
        raise EngineError(
            f"sizes must satisfy min <= opt <= max in both width and height, got "
            f"min {lo[0]}x{lo[1]}, opt {opt[0]}x{opt[1]}, max {hi[0]}x{hi[1]}"
        )
    return (
        ShapeProfile(
            name=card.input.name,
            min=(bmin, 3, lo[1], lo[0]),
            opt=(bopt, 3, opt[1], opt[0]),
            max=(bmax, 3, hi[1], hi[0]),
        ),
    )


def calibration_images(calib_dir: str | Path, count: int) -> list[Path]:
    """``count`` image files from ``calib_dir`` (recursively), evenly spaced over the sorted list. Pure.

    Raises :class:`EngineError` when the folder is missing or holds no images.
    """
    root = Path(calib_dir)
    if not root.is_dir():
        raise EngineError(f"calibration folder {root} does not exist (--calib-dir)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EngineError(f"calibration folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) <= count:
        return files
    picks = np.unique(np.linspace(0, len(files) - 1, count).round().astype(int))
    return [files[i] for i in picks]


def has_calibration_data(options: BuildOptions) -> bool:
    """Whether ``options`` name a calibration folder or an existing calibration cache file."""
    return options.calib_dir is not None or (options.calib_cache is not None and Path(options.calib_cache).is_file())


def calibration_fingerprint(options: BuildOptions, *, required: bool = True) -> dict[str, Any] | None:
    """What identifies the INT8 calibration data, for the cache key; ``None`` unless precision is int8.

    With a calibration folder: the sorted names and sizes of the images it picks (so the same folder
    gives the same key on any machine; a calibration cache file is then just a shortcut for those
    images). With only a calibration cache: the cache file's sha256. Without either: an
    :class:`EngineError` when ``required``, else ``None`` (the runtime then looks for an INT8
    engine built offline, see :meth:`EngineCache.find_matching`).
    """
    if options.precision != "int8":
        return None
    if options.calib_dir is not None:
        root = Path(options.calib_dir)
        images = calibration_images(root, options.calib_images)
        listing = "\n".join(f"{p.relative_to(root).as_posix()}:{p.stat().st_size}" for p in images)
        return {"images": len(images), "images_sha256": hashlib.sha256(listing.encode()).hexdigest()}
    if options.calib_cache is not None and Path(options.calib_cache).is_file():
        return {"cache_sha256": file_sha256(options.calib_cache)}
    if not required:
        return None
    raise EngineError(
        "INT8 needs calibration data: give a folder of representative images (--calib-dir DIR) or an "
        "existing calibration cache (--calib-cache FILE)"
    )


def build_options_key(options: BuildOptions, *, require_calibration: bool = True) -> dict[str, Any]:
    """The build options that change the engine (the ``build_options`` field of the key). Pure.

    Left out on purpose: the timing-cache and calibration-cache *paths* (they speed a build up but
    do not change what it computes) and the sizes/batch/precision (separate key fields).
    """
    return {
        "workspace_mb": options.workspace_mb,
        "dla_core": options.dla_core,
        "gpu_fallback": options.gpu_fallback if options.dla_core is not None else None,
        "calibration": calibration_fingerprint(options, required=require_calibration),
    }


def make_request(
    *,
    model_path: str | Path,
    card: ModelCard,
    options: BuildOptions,
    tensorrt_version: str,
    gpu: GpuIdentity,
    onnx_sha256: str | None = None,
    require_calibration: bool = True,
) -> EngineRequest:
    """The cache request for building ``model_path`` with ``options`` on ``gpu``. Pure (hashes the file).

    ``require_calibration=False`` lets an INT8 request without calibration data through (its
    calibration fingerprint is ``None``): good for finding an engine, not for building one.
    """
    return EngineRequest(
        card=plain_json(card.model_dump(mode="json")),
        onnx_sha256=onnx_sha256 or file_sha256(model_path),
        tensorrt_version=tensorrt_version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=options.precision,
        profiles=shape_profiles(card, options),
        build_options=build_options_key(options, require_calibration=require_calibration),
        onnx_path=str(model_path),
    )


def options_for_runtime(
    card: ModelCard, options: BuildOptions | None, *, precision: str, input_size: tuple[int, int] | None
) -> BuildOptions:
    """Build options for the runtime: ``precision`` and ``input_size`` override ``options``. Pure.

    Without explicit sizes in ``options`` the engine is fixed at ``input_size`` (the card's size when
    ``None``), which is what a camera pipeline runs at and the fastest engine TensorRT can make.
    """
    base = options or BuildOptions()
    size = resolve_input_size(card, input_size)
    if base.min_size is None and base.max_size is None:
        return replace(base, precision=precision, opt_size=size)
    merged = replace(base, precision=precision, opt_size=size if input_size is not None else base.opt_size)
    shape_profiles(card, merged)  # validates that input_size lies inside the asked range
    return merged


# --- TensorRT plumbing (GPU only) ------------------------------------------------------------------

_LOGGER = None
_LOGGER_LOCK = threading.Lock()


def trt_logger(trt):
    """The process-wide TensorRT logger: routes TensorRT's messages to :mod:`logging` and keeps
    the recent errors so exceptions can quote them (TensorRT keeps one logger per process)."""
    global _LOGGER  # noqa: PLW0603 (one logger per process, made on first use)
    with _LOGGER_LOCK:
        if _LOGGER is None:

            class _Logger(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)
                    self.errors: list[str] = []
                    self._levels = {
                        trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR,
                        trt.ILogger.Severity.ERROR: logging.ERROR,
                        trt.ILogger.Severity.WARNING: logging.WARNING,
                        trt.ILogger.Severity.INFO: logging.DEBUG,
                        trt.ILogger.Severity.VERBOSE: logging.DEBUG - 5,
                    }

                def log(self, severity, msg) -> None:
                    level = self._levels.get(severity, logging.INFO)
                    if level >= logging.ERROR:
                        self.errors.append(str(msg))
                        del self.errors[:-20]
                    log.log(level, "TensorRT: %s", msg)

                def take_errors(self) -> str:
                    text = "; ".join(self.errors) or "(TensorRT logged no error)"
                    self.errors.clear()
                    return text

            _LOGGER = _Logger()
        return _LOGGER


def _progress_monitor(trt):
    """An ``IProgressMonitor`` that logs build phases, or ``None`` when TensorRT lacks the interface."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._steps: dict[str, int] = {}
            self._parents: dict[str, str | None] = {}
            self._lock = threading.Lock()

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            with self._lock:
                self._steps[phase_name] = int(num_steps)
                self._parents[phase_name] = parent_phase
            log.log(logging.INFO if parent_phase is None else logging.DEBUG,
                    "build: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name, step) -> bool:
            with self._lock:
                total = self._steps.get(phase_name, 0)
                top = self._parents.get(phase_name) is None
            if top and total:
                log.info("build: %s %d/%d", phase_name, step + 1, total)
            return True  # never cancel

        def phase_finish(self, phase_name) -> None:
            log.debug("build: %s done", phase_name)

    return _Progress()


def _make_calibrator(trt, torch, *, card: ModelCard, profile: ShapeProfile, images: list[Path],
                     cache_path: Path | None, device: int):
    """An ``IInt8EntropyCalibrator2`` feeding ``images`` preprocessed exactly like the runtime does
    (:class:`~perception.backends.preprocess.Preprocessor` with the model card), batch = the
    profile's ``opt`` batch. Errors while reading images are kept in ``.error`` (exceptions cannot
    cross TensorRT's C++ callback) and raised after the build."""
    import cv2

    from perception.backends.preprocess import Preprocessor

    batch, _, height, width = profile.opt
    pre = Preprocessor(card=card, input_size=(width, height))

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.error: BaseException | None = None
            self.batches = 0
            self._next = 0
            self._host = torch.empty((batch, 3, height, width), dtype=torch.float32, pin_memory=True)
            self._device = torch.empty((batch, 3, height, width), dtype=torch.float32, device=f"cuda:{device}")

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names):
            if self.error is not None or self._next + batch > len(images):
                return None
            host = self._host.numpy()
            try:
                for i in range(batch):
                    path = images[self._next + i]
                    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
                    if frame is None:
                        raise EngineError(f"calibration image {path} cannot be read")
                    host[i] = pre(frame)[0]
                self._device.copy_(self._host)
                torch.cuda.synchronize(device)
            except (EngineError, OSError, RuntimeError, ValueError) as exc:
                self.error = exc
                return None
            self._next += batch
            self.batches += 1
            if self.batches % 20 == 0:
                log.info("calibration: %d/%d images", self._next, len(images))
            return [int(self._device.data_ptr())]

        def read_calibration_cache(self):
            if cache_path is not None and cache_path.is_file():
                log.info("calibration: using cache %s", cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            if cache_path is None:
                return
            try:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_bytes(bytes(cache))
                log.info("calibration: wrote cache %s", cache_path)
            except OSError as exc:
                self.error = exc

    return _Calibrator()


def _format_parser_error(err) -> str:
    try:
        where = f"node {err.node()} ({err.node_operator()} {err.node_name()!r})" if err.node() >= 0 else "model"
    except AttributeError:  # older parsers lack node_name/node_operator
        where = f"node {err.node()}"
    return f"{where}: {err.desc()} [{err.code()}]"


def build_engine(
    *,
    model_path: str | Path,
    card: ModelCard,
    options: BuildOptions,
    device: int = 0,
) -> bytes:
    """Build a serialized TensorRT engine for ``model_path`` (the raw bytes, without our header).

    Needs TensorRT 10, PyTorch with CUDA and a GPU; raises :class:`EngineError` with the cause
    otherwise, or when parsing, configuring or building fails (quoting TensorRT's own errors).
    """
    trt = import_tensorrt()
    torch = import_torch_cuda()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise EngineError(f"ONNX model not found: {model_path}")
    profile = shape_profiles(card, options)[0]
    logger = trt_logger(trt)
    logger.take_errors()
    t0 = time.monotonic()
    with torch.cuda.device(device):
        builder = trt.Builder(logger)
        if builder is None:
            raise EngineError(f"cannot create a TensorRT builder: {logger.take_errors()}")
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(model_path)):
            errors = [_format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineError(
                f"TensorRT {trt.__version__}'s ONNX parser rejected {model_path}:\n  - "
                + "\n  - ".join(errors or [logger.take_errors()])
            )
        _check_network_input(network, card, profile)

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mb) << 20)
        if options.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # int8 too: layers without INT8 kernels run in FP16
        calibrator = None
        dynamic = any(d == -1 for d in network.get_input(0).shape)
        if dynamic:
            opt_profile = builder.create_optimization_profile()
            opt_profile.set_shape(profile.name, profile.min, profile.opt, profile.max)
            if config.add_optimization_profile(opt_profile) < 0:
                raise EngineError(f"TensorRT refused the optimisation profile {profile.describe()}: "
                                  f"{logger.take_errors()}")
        if options.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            images = calibration_images(options.calib_dir, options.calib_images) if options.calib_dir else []
            calib_profile = ShapeProfile(name=profile.name, min=profile.opt, opt=profile.opt, max=profile.opt)
            calibrator = _make_calibrator(
                trt, torch, card=card, profile=calib_profile, images=images,
                cache_path=Path(options.calib_cache) if options.calib_cache else None, device=device,
            )
            config.int8_calibrator = calibrator
            if dynamic:
                cal = builder.create_optimization_profile()
                cal.set_shape(profile.name, calib_profile.min, calib_profile.opt, calib_profile.max)
                if not config.set_calibration_profile(cal):
                    raise EngineError(f"TensorRT refused the calibration profile: {logger.take_errors()}")
            log.info("INT8 calibration over %d images from %s", len(images), options.calib_dir or options.calib_cache)
        if options.dla_core is not None:
            _configure_dla(trt, builder, config, options)
        timing_cache = _load_timing_cache(config, options.timing_cache)
        monitor = _progress_monitor(trt)
        if monitor is not None:
            config.progress_monitor = monitor
        log.info(
            "building %s engine for %s (%s) with TensorRT %s; this takes from seconds to many minutes",
            options.precision, model_path.name, profile.describe(), trt.__version__,
        )
        serialized = builder.build_serialized_network(network, config)
        if calibrator is not None and calibrator.error is not None:
            raise EngineError(f"INT8 calibration failed: {calibrator.error}") from calibrator.error
        if serialized is None:
            raise EngineError(f"TensorRT could not build an engine from {model_path}: {logger.take_errors()}")
        if timing_cache is not None:
            _save_timing_cache(config, options.timing_cache)
        blob = bytes(serialized)
    log.info("built %s engine (%.1f MB) in %.1f s", options.precision, len(blob) / 1e6, time.monotonic() - t0)
    return blob


def _check_network_input(network, card: ModelCard, profile: ShapeProfile) -> None:
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if names != [card.input.name]:
        raise ModelCardError(f"the model's inputs are {names} but its card names one input {card.input.name!r}")
    shape = tuple(network.get_input(0).shape)
    if len(shape) != 4:
        raise ModelCardError(f"input {card.input.name!r} must be NCHW (4 axes), the model has {shape}")
    for axis, (dim, lo, hi) in enumerate(zip(shape, profile.min, profile.max)):
        if dim != -1 and not (lo == hi == dim):
            raise EngineError(
                f"the model's input {card.input.name!r} is fixed at {list(shape)} but "
                f"{profile.describe()} was asked for (axis {axis}); re-export with dynamic axes or ask for its size"
            )


def _configure_dla(trt, builder, config, options: BuildOptions) -> None:
    cores = int(builder.num_DLA_cores)
    if cores == 0:
        raise EngineError(
            f"--dla {options.dla_core}: this device has no DLA cores (DLA exists on Jetson AGX Orin, Orin NX and "
            "Xavier); leave --dla out to run on the GPU"
        )
    if options.dla_core >= cores:
        raise EngineError(f"--dla {options.dla_core}: this device has DLA cores 0..{cores - 1}")
    if options.precision == "fp32":
        raise EngineError("DLA runs FP16 or INT8 only; build with --precision fp16 or int8")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(options.dla_core)
    if options.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    log.info("DLA core %d, GPU fallback %s", options.dla_core, "on" if options.gpu_fallback else "off")


def _load_timing_cache(config, path: Path | None):
    if path is None:
        return None
    path = Path(path)
    blob = b""
    if path.is_file():
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise EngineError(f"cannot read timing cache {path}: {exc}") from exc
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, False):
        log.warning(
            "timing cache %s does not fit this GPU/TensorRT; starting a fresh one (it will be overwritten)", path
        )
        cache = config.create_timing_cache(b"")
        if not config.set_timing_cache(cache, False):
            raise EngineError("TensorRT refused an empty timing cache")
    else:
        log.info("timing cache %s (%d bytes)", path, len(blob))
    return cache


def _save_timing_cache(config, path: Path) -> None:
    data = config.get_timing_cache().serialize()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(bytes(data))
        tmp.replace(path)
    except OSError as exc:
        raise EngineError(f"cannot write timing cache {path}: {exc}") from exc
    log.info("saved timing cache %s", path)


__all__ = [
    "DEFAULT_CALIB_IMAGES",
    "DEFAULT_WORKSPACE_MB",
    "PRECISIONS",
    "TENSORRT_MISSING",
    "BuildOptions",
    "GpuIdentity",
    "build_engine",
    "build_options_key",
    "calibration_fingerprint",
    "calibration_images",
    "gpu_identity",
    "has_calibration_data",
    "import_tensorrt",
    "import_torch_cuda",
    "make_request",
    "options_for_runtime",
    "shape_profiles",
    "trt_logger",
]
