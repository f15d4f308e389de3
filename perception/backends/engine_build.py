"""ONNX → TensorRT 10/11 engine: build options, shape profiles, INT8 calibration, the build itself.

Building is apart from running (:mod:`perception.backends.tensorrt`): ``perception build-engine``
calls :func:`build_engine` offline, and the runtime calls it only on a cache miss. Everything that
decides *what* is built — :class:`BuildOptions`, :func:`shape_profiles`, :func:`make_request` (the
cache key), :func:`calibration_images` — is pure Python and runs without a GPU. Only
:func:`build_engine` needs TensorRT, PyTorch with CUDA (device buffers for calibration; see the
module docstring of :mod:`perception.backends.tensorrt` for why PyTorch) and a GPU.

One build path for TensorRT 10 (JetPack 6: 10.3) and 11 (``pip install tensorrt`` on desktops): the
installed version is detected once (:func:`tensorrt_api`) and recorded in the engine's metadata.
**The precision is carried by the model**: an FP16 ONNX export (``tools/export_onnx.py --fp16``) or
a Q/DQ INT8 model (``tools/quantize_onnx.py --tensorrt``) is built as a *strongly typed* network,
which both versions support (11 knows no other kind). Only an FP32 model asked for at FP16 or INT8
takes the old weakly typed route — the ``FP16``/``INT8`` builder flags and the entropy calibrator —
and only on 10.x, since 11 removed them (:func:`plan_typing` says which route, or why neither).
"""

from __future__ import annotations

import hashlib
import json
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

SUPPORTED_TENSORRT_MAJORS: tuple[int, ...] = (10, 11)

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
    """Import ``tensorrt`` (10.x or 11.x) or raise :class:`EngineError` saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(f"{TENSORRT_MISSING} ({exc})") from exc
    except OSError as exc:  # the wheel is there but libnvinfer / the CUDA runtime is not loadable
        raise EngineError(
            f"TensorRT is installed but cannot load its libraries ({exc}); install the NVIDIA driver and the "
            "CUDA runtime it was built for"
        ) from exc
    tensorrt_api(trt)  # refuses versions other than 10.x and 11.x
    return trt


@dataclass(frozen=True, slots=True)
class TensorRTApi:
    """What the installed TensorRT can do, detected once from the module (:func:`tensorrt_api`)."""

    version: str
    major: int
    strongly_typed: bool
    """Networks can be created strongly typed (10.x: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``;
    11.x: always, the flag is ignored or gone)."""
    precision_flags: bool
    """The weakly typed precision flags (``BuilderFlag.FP16``/``INT8``) and the INT8 calibrator
    exist: 10.x only."""
    strong_flag: int = 0
    """``create_network`` flags for a strongly typed network (0 where the flag is gone)."""


_API_CACHE: dict[int, TensorRTApi] = {}


def tensorrt_api(trt) -> TensorRTApi:
    """Detect (once per module object) the TensorRT version and which build features it has.

    Raises :class:`EngineError` for a major version other than 10 or 11.
    """
    found = _API_CACHE.get(id(trt))
    if found is not None:
        return found
    version = str(getattr(trt, "__version__", "0"))
    head = version.split(".")[0]
    major = int(head) if head.isdigit() else 0
    if major not in SUPPORTED_TENSORRT_MAJORS:
        raise EngineError(
            f"TensorRT {version} is installed but this package supports TensorRT 10.x and 11.x: "
            "pip install 'tensorrt>=10,<12' (desktop) or JetPack 6's python3-libnvinfer (Jetson)"
        )
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    strong = getattr(creation, "STRONGLY_TYPED", None)
    api = TensorRTApi(
        version=version,
        major=major,
        strongly_typed=strong is not None or major >= 11,
        precision_flags=hasattr(trt.BuilderFlag, "FP16") and hasattr(trt, "IInt8EntropyCalibrator2"),
        strong_flag=(1 << int(strong)) if strong is not None else 0,
    )
    _API_CACHE[id(trt)] = api
    return api


def plan_typing(api: TensorRTApi, *, requested: str, model: str, model_name: str = "the model") -> str:
    """``"strong"`` or ``"weak"``: how to build a ``model``-precision network for ``requested``. Pure.

    The model's own precision is built strongly typed wherever TensorRT can. An FP32 model asked for
    at FP16/INT8 needs the weakly typed flags (and, for INT8, the calibrator): 10.x only. Anything
    else raises :class:`EngineError` naming the model to use instead.
    """
    if requested == model:
        return "strong" if api.strongly_typed else "weak"
    if model == "fp32" and api.precision_flags:
        return "weak"
    if model != "fp32":
        raise EngineError(
            f"{model_name} carries {model} precision (its ONNX graph fixes every type) but {requested} was "
            f"asked for: ask for --precision {model}, or build from the FP32 model"
        )
    fix = ("an FP16 export: tools/export_onnx.py --fp16 (engines/<model>_fp16.onnx)" if requested == "fp16" else
           "a Q/DQ INT8 model: tools/quantize_onnx.py --tensorrt (engines/<model>_int8_trt.onnx)")
    raise EngineError(
        f"TensorRT {api.version} builds strongly typed networks only, taking the precision from the model, and "
        f"{model_name} is FP32; for {requested} build from {fix}, or ask for fp32"
    )


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


def model_is_quantized(model_path: str | Path, *, chunk_bytes: int = 1 << 20) -> bool:
    """Whether the ONNX file holds Q/DQ nodes (explicit INT8: it needs no calibration data).

    Scans the file for the operator name ``QuantizeLinear`` (a substring of ``DequantizeLinear``
    too): ONNX stores operator types as plain strings, so this needs neither ``onnx`` nor a parse.
    A node merely *named* so would fool it; the build then checks the parsed network anyway
    (:func:`network_precision`).
    """
    needle = b"QuantizeLinear"
    tail = b""
    try:
        with open(model_path, "rb") as fh:
            for chunk in iter(lambda: fh.read(chunk_bytes), b""):
                if needle in tail + chunk:
                    return True
                tail = chunk[-len(needle):]
    except OSError as exc:
        raise EngineError(f"cannot read {model_path}: {exc}") from exc
    return False


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


def build_options_key(
    options: BuildOptions, *, require_calibration: bool = True, quantized: bool = False
) -> dict[str, Any]:
    """The build options that change the engine (the ``build_options`` field of the key). Pure.

    Left out on purpose: the timing-cache and calibration-cache *paths* (they speed a build up but
    do not change what it computes) and the sizes/batch/precision (separate key fields). A Q/DQ
    model (``quantized``) carries its own scales, so calibration data plays no part in its key.
    """
    return {
        "workspace_mb": options.workspace_mb,
        "dla_core": options.dla_core,
        "gpu_fallback": options.gpu_fallback if options.dla_core is not None else None,
        "calibration": None if quantized else calibration_fingerprint(options, required=require_calibration),
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
    calibration fingerprint is ``None``): good for finding an engine, not for building one. A Q/DQ
    model (:func:`model_is_quantized`) never needs calibration data.
    """
    quantized = options.precision == "int8" and model_is_quantized(model_path)
    return EngineRequest(
        card=plain_json(card.model_dump(mode="json")),
        onnx_sha256=onnx_sha256 or file_sha256(model_path),
        tensorrt_version=tensorrt_version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=options.precision,
        profiles=shape_profiles(card, options),
        build_options=build_options_key(options, require_calibration=require_calibration, quantized=quantized),
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


def calibration_stamp(*, onnx_sha256: str, shape: tuple[int, ...], images: dict[str, Any] | None) -> dict[str, Any]:
    """What an INT8 calibration cache was made from: the model's sha256, the calibration input shape
    and (when known) the images' fingerprint. Kept beside the cache (``<cache>.json``) so a cache
    is never reused for a retrained model of the same name and size. Pure."""
    return {"onnx_sha256": onnx_sha256, "input": [int(d) for d in shape], "images": images}


def _stamp_path(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name + ".json")


def read_calibration_cache(cache_path: Path, stamp: dict[str, Any]) -> bytes | None:
    """The calibration cache's bytes if its stamp says it was made for ``stamp``'s model and shape
    (and images, when ``stamp`` names them); ``None``, logged with the reason, otherwise."""
    if not cache_path.is_file():
        return None
    try:
        found = json.loads(_stamp_path(cache_path).read_text())
    except (OSError, ValueError) as exc:
        log.warning("calibration: not using %s: it has no readable stamp %s (%s)", cache_path,
                    _stamp_path(cache_path).name, exc)
        return None
    fields = ("onnx_sha256", "input") + (("images",) if stamp.get("images") is not None else ())
    differs = [f for f in fields if not isinstance(found, dict) or found.get(f) != stamp.get(f)]
    if differs:
        log.warning("calibration: not using %s: made for another %s", cache_path, " and ".join(differs))
        return None
    try:
        return cache_path.read_bytes()
    except OSError as exc:
        log.warning("calibration: cannot read %s (%s)", cache_path, exc)
        return None


def write_calibration_cache(cache_path: Path, data: bytes, stamp: dict[str, Any]) -> None:
    """Write the calibration cache and its stamp (each through a temporary file and a rename)."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    for path, payload in ((cache_path, bytes(data)), (_stamp_path(cache_path), json.dumps(stamp).encode())):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(payload)
        tmp.replace(path)


def _make_calibrator(trt, torch, *, card: ModelCard, profile: ShapeProfile, images: list[Path],
                     cache_path: Path | None, stamp: dict[str, Any], device: int):
    """An ``IInt8EntropyCalibrator2`` (TensorRT 10.x only) feeding ``images`` preprocessed exactly like
    the runtime does (:class:`~perception.backends.preprocess.Preprocessor` with the model card),
    batch = the profile's ``opt`` batch. A calibration cache is read only when its stamp matches
    ``stamp`` (:func:`read_calibration_cache`). Errors while reading images are kept in ``.error``
    (exceptions cannot cross TensorRT's C++ callback) and raised after the build."""
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
            data = None if cache_path is None else read_calibration_cache(cache_path, stamp)
            if data is not None:
                log.info("calibration: using cache %s", cache_path)
            return data

        def write_calibration_cache(self, cache) -> None:
            if cache_path is None:
                return
            try:
                write_calibration_cache(cache_path, bytes(cache), stamp)
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


# --- checked TensorRT calls (the bindings raise instead of returning None) ---------------------------


def create_builder(trt, logger):
    """``trt.Builder(logger)``; the binding raises ``TypeError`` (its factory returned null: no usable
    GPU, or a driver/CUDA mismatch) instead of returning None: that becomes :class:`EngineError`."""
    try:
        return trt.Builder(logger)
    except TypeError as exc:
        raise EngineError(f"cannot create a TensorRT builder ({exc}): {logger.take_errors()}") from exc


def create_runtime(trt, logger):
    """``trt.Runtime(logger)``, its ``TypeError`` on failure turned into :class:`EngineError`."""
    try:
        return trt.Runtime(logger)
    except TypeError as exc:
        raise EngineError(f"cannot create a TensorRT runtime ({exc}): {logger.take_errors()}") from exc


def set_profile_shape(opt_profile, shape: ShapeProfile, logger) -> None:
    """``IOptimizationProfile.set_shape``, which raises ``RuntimeError`` (or ``TypeError`` /
    ``ValueError`` for malformed dimensions) rather than returning a failure: :class:`EngineError`."""
    try:
        opt_profile.set_shape(shape.name, shape.min, shape.opt, shape.max)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise EngineError(f"TensorRT refused the shapes {shape.describe()} ({exc}): {logger.take_errors()}") from exc


def network_precision(trt, network) -> str:
    """``"int8"`` (Q/DQ layers), ``"fp16"`` (a layer computes in half) or ``"fp32"``: the precision a
    parsed network carries, which a strongly typed build keeps."""
    quant = {getattr(trt.LayerType, name, None) for name in ("QUANTIZE", "DEQUANTIZE")} - {None}
    half = False
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in quant:
            return "int8"
        half = half or any(layer.get_output(j).dtype == trt.DataType.HALF for j in range(layer.num_outputs))
    return "fp16" if half else "fp32"


@dataclass(frozen=True, slots=True)
class BuiltEngine:
    """A serialized engine (the raw bytes, without our header) and how it was built."""

    blob: bytes
    api: TensorRTApi
    typing: str
    """``"strong"`` (the model's own precision) or ``"weak"`` (10.x builder flags / calibrator)."""
    model_precision: str

    def metadata(self) -> dict[str, Any]:
        """For the engine file's ``extra``: the TensorRT version and the network's typing."""
        return {"tensorrt_version": self.api.version, "tensorrt_major": self.api.major,
                "network": "strongly typed" if self.typing == "strong" else "weakly typed (builder precision flags)",
                "model_precision": self.model_precision}


def _parse(trt, builder, model_path: Path, logger, *, flags: int):
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model_path)):
        errors = [_format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(
            f"TensorRT {trt.__version__}'s ONNX parser rejected {model_path}:\n  - "
            + "\n  - ".join(errors or [logger.take_errors()])
        )
    return network, parser  # the parser owns the weights: keep it alive with the network


def build_engine(
    *,
    model_path: str | Path,
    card: ModelCard,
    options: BuildOptions,
    device: int = 0,
) -> BuiltEngine:
    """Build a TensorRT engine for ``model_path`` on CUDA device ``device``.

    Needs TensorRT 10 or 11, PyTorch with CUDA (device selection, calibration buffers) and a GPU;
    raises :class:`EngineError` with the cause otherwise, or when parsing, configuring or building
    fails (quoting TensorRT's own errors). See :func:`build_serialized`.
    """
    trt = import_tensorrt()
    torch = import_torch_cuda()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise EngineError(f"ONNX model not found: {model_path}")

    def calibrator(**kw):
        return _make_calibrator(trt, torch, card=card, device=device, **kw)

    with torch.cuda.device(device):
        return build_serialized(trt, model_path=model_path, card=card, options=options, make_calibrator=calibrator)


def build_serialized(trt, *, model_path: Path, card: ModelCard, options: BuildOptions,
                     make_calibrator=None) -> BuiltEngine:
    """The build itself, on the current CUDA device, with the ``tensorrt`` module given.

    Parses the model as a strongly typed network where TensorRT has them, reads the precision it
    carries (:func:`network_precision`) and builds it so; only an FP32 model asked for at FP16/INT8
    on TensorRT 10 is parsed again weakly typed, with the builder flags and (INT8)
    ``make_calibrator(profile=, images=, cache_path=, stamp=)`` (:func:`plan_typing`).
    """
    api = tensorrt_api(trt)
    profile = shape_profiles(card, options)[0]
    logger = trt_logger(trt)
    logger.take_errors()
    t0 = time.monotonic()
    builder = create_builder(trt, logger)
    network, parser = _parse(trt, builder, model_path, logger, flags=api.strong_flag)
    model_precision = network_precision(trt, network)
    typing = plan_typing(api, requested=options.precision, model=model_precision, model_name=model_path.name)
    if typing == "weak" and api.strong_flag:
        network, parser = _parse(trt, builder, model_path, logger, flags=0)
    _check_network_input(network, card, profile)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mb) << 20)
    dynamic = any(d == -1 for d in network.get_input(0).shape)
    if dynamic:
        opt_profile = builder.create_optimization_profile()
        set_profile_shape(opt_profile, profile, logger)
        if config.add_optimization_profile(opt_profile) < 0:
            raise EngineError(f"TensorRT refused the optimisation profile {profile.describe()}: {logger.take_errors()}")
    calibrator = None
    if typing == "weak":
        calibrator = _weak_precision(trt, builder, config, options=options, profile=profile, dynamic=dynamic,
                                     logger=logger, make_calibrator=make_calibrator, model_path=model_path)
    if options.dla_core is not None:
        _configure_dla(trt, builder, config, options)
    timing_cache = _load_timing_cache(config, options.timing_cache, logger)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    log.info("building %s engine for %s (%s, %s network) with TensorRT %s; this takes from seconds to many minutes",
             options.precision, model_path.name, profile.describe(), typing + "ly typed", api.version)
    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None and calibrator.error is not None:
        raise EngineError(f"INT8 calibration failed: {calibrator.error}") from calibrator.error
    if serialized is None:
        raise EngineError(f"TensorRT could not build an engine from {model_path}: {logger.take_errors()}")
    if timing_cache is not None:
        _save_timing_cache(config, options.timing_cache)
    blob = bytes(serialized)
    del parser
    log.info("built %s engine (%.1f MB) in %.1f s", options.precision, len(blob) / 1e6, time.monotonic() - t0)
    return BuiltEngine(blob=blob, api=api, typing=typing, model_precision=model_precision)


def _weak_precision(trt, builder, config, *, options: BuildOptions, profile: ShapeProfile, dynamic: bool, logger,
                    make_calibrator, model_path: Path):
    """TensorRT 10.x, FP32 model: the FP16 flag (INT8 too: layers without INT8 kernels run in FP16)
    and, for INT8, the flag and an entropy calibrator; returns the calibrator or ``None``."""
    config.set_flag(trt.BuilderFlag.FP16)
    if options.precision != "int8":
        return None
    config.set_flag(trt.BuilderFlag.INT8)
    if make_calibrator is None:
        raise EngineError("INT8 calibration needs PyTorch with CUDA for its buffers (build_engine provides it)")
    images = calibration_images(options.calib_dir, options.calib_images) if options.calib_dir else []
    calib_profile = ShapeProfile(name=profile.name, min=profile.opt, opt=profile.opt, max=profile.opt)
    stamp = calibration_stamp(onnx_sha256=file_sha256(model_path), shape=profile.opt,
                              images=calibration_fingerprint(options) if options.calib_dir else None)
    cache_path = Path(options.calib_cache) if options.calib_cache else None
    if not images and (cache_path is None or read_calibration_cache(cache_path, stamp) is None):
        raise EngineError(
            f"INT8 calibration cache {cache_path} was not made for {model_path.name} at {list(profile.opt)} "
            "(its stamp file is missing or names another model): calibrate again with --calib-dir DIR"
        )
    calibrator = make_calibrator(profile=calib_profile, images=images, cache_path=cache_path, stamp=stamp)
    config.int8_calibrator = calibrator
    if dynamic:
        cal = builder.create_optimization_profile()
        set_profile_shape(cal, calib_profile, logger)
        if not config.set_calibration_profile(cal):
            raise EngineError(f"TensorRT refused the calibration profile: {logger.take_errors()}")
    log.info("INT8 calibration over %d images from %s", len(images), options.calib_dir or options.calib_cache)
    return calibrator


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


def _load_timing_cache(config, path: Path | None, logger):
    """Load (or start) the timing cache at ``path`` into ``config``; ``None`` without a path.

    ``create_timing_cache`` may return None (NVIDIA's own helpers check it) and ``set_timing_cache``
    refuses a cache from another GPU/TensorRT: either way a fresh, empty cache is tried next, and
    :class:`EngineError` raised if TensorRT cannot even make that one.
    """
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
    if cache is not None and config.set_timing_cache(cache, False):
        log.info("timing cache %s (%d bytes)", path, len(blob))
        return cache
    log.warning("timing cache %s does not fit this GPU/TensorRT; starting a fresh one (it will be overwritten)", path)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise EngineError(f"TensorRT could not create an empty timing cache: {logger.take_errors()}")
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
    "SUPPORTED_TENSORRT_MAJORS",
    "TENSORRT_MISSING",
    "BuildOptions",
    "BuiltEngine",
    "GpuIdentity",
    "TensorRTApi",
    "build_engine",
    "build_options_key",
    "build_serialized",
    "calibration_fingerprint",
    "calibration_images",
    "calibration_stamp",
    "create_builder",
    "create_runtime",
    "gpu_identity",
    "has_calibration_data",
    "import_tensorrt",
    "import_torch_cuda",
    "make_request",
    "model_is_quantized",
    "network_precision",
    "options_for_runtime",
    "plan_typing",
    "read_calibration_cache",
    "set_profile_shape",
    "shape_profiles",
    "tensorrt_api",
    "trt_logger",
    "write_calibration_cache",
]
