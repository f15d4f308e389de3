"""TensorRT backend: runs a cached, self-describing TensorRT 10/11 engine on a CUDA stream.

Lifecycle: the constructor finds the engine for (model, card, precision, shapes, TensorRT version,
GPU) in the :class:`~perception.backends.engine_cache.EngineCache` — building and storing it on a
miss — refuses any engine whose metadata differs, deserializes it, and allocates every device and
pinned host buffer once for the input shape. ``infer``/``infer_frame``/``infer_frame_labels`` then
only copy and launch; buffers are re-allocated only when the input shape changes, all or nothing
(:func:`bind_io_buffers`). Every launch — direct or a CUDA-graph replay — goes to the backend's own
stream, and a call returns after synchronising that stream only. ``close()`` (or ``with``) releases the
execution context, engine and buffers, in that order; nothing is freed in ``__del__``.

**Buffers live in PyTorch CUDA tensors, not cuda-python.** Reasons: (1) the GPU half of the fast
path — resize, normalise, HWC→CHW, argmax, CUDA-graph capture — is one line each in PyTorch, while
cuda-python would need hand-written NVRTC kernels for each; (2) PyTorch's caching allocator,
pinned host memory, streams and ``torch.cuda.CUDAGraph`` are mature and every CUDA error surfaces as
a Python exception (which this module translates to :class:`EngineError`), so "check every CUDA
return value" holds by construction; (3) PyTorch is already the training dependency and is on the
lent GPU machines and in JetPack. The cost is a large import, paid only when this backend is used:
this module imports neither torch nor tensorrt at import time, so CPU deployments never load them.

Every TensorRT call that reports failure (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``, ``deserialize_cuda_engine``, ``create_execution_context``) is checked and
turned into an :class:`EngineError` quoting TensorRT's logged errors.

Status: written against the TensorRT 10 and 11 Python API documentation; the CPU-testable parts are
tested (with a stand-in ``tensorrt`` module where TensorRT itself is needed), the engine parts have
not run on a GPU yet (see docs/tensorrt.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from perception.backends.base import check_feeds, check_frame, resolve_input_size
from perception.backends.engine_build import (
    BuildOptions,
    build_engine,
    create_runtime,
    gpu_identity,
    has_calibration_data,
    import_tensorrt,
    import_torch_cuda,
    make_request,
    model_is_quantized,
    options_for_runtime,
    trt_logger,
)
from perception.backends.engine_cache import ENVIRONMENT_FIELDS, EngineCache, EngineMetadata, load_checked
from perception.errors import BackendError, EngineError, ModelCardError
from perception.modelcard import ModelCard
from perception.types import TensorSpec

log = logging.getLogger(__name__)

AREA_SHRINK = 1.5
"""Shrink factor above which the GPU resize averages areas instead of interpolating bilinearly.
It must equal the rule in :class:`~perception.backends.preprocess.Preprocessor` (INTER_AREA vs
INTER_LINEAR) so that both paths filter alike: averaging avoids aliasing on big shrinks, bilinear
keeps edges sharper on small ones."""


def available() -> tuple[bool, str]:
    """Whether TensorRT (10.x or 11.x) and a CUDA GPU (through PyTorch) are usable here, and why (not).

    Never raises for a missing stack: ``(False, reason)`` then. Imports torch only once tensorrt
    imported, so a CPU-only machine loads neither.
    """
    try:
        trt = import_tensorrt()
        gpu = gpu_identity(0)
    except EngineError as exc:
        return False, str(exc)
    return True, f"TensorRT {trt.__version__} on {gpu.name} (compute capability {gpu.compute_capability})"


# --- pure checks (tested on the CPU) ----------------------------------------------------------------


def check_engine_tensors(
    card: ModelCard, inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec], *, where: str
) -> None:
    """Raise :class:`ModelCardError` unless the engine's tensors are the card's: one ``[N,3,H,W]``
    input named as in the card, and every card output present as ``[N, channels, h, w]``."""
    if list(inputs) != [card.input.name]:
        raise ModelCardError(f"{where}: the card's input is {card.input.name!r}, the engine has {list(inputs)}")
    spec = inputs[card.input.name]
    if len(spec.shape) != 4 or spec.shape[1] not in (None, 3):
        raise ModelCardError(f"{where}: input {spec.name!r} must be [N,3,H,W], the engine has {list(spec.shape)}")
    for o in card.outputs:
        if o.name not in outputs:
            raise ModelCardError(
                f"{where}: the card's output {o.name!r} ({o.kind}) is not in the engine; it has {list(outputs)}"
            )
        shape = outputs[o.name].shape
        if len(shape) != 4 or shape[1] not in (None, o.channels):
            raise ModelCardError(
                f"{where}: output {o.name!r} should be [N,{o.channels},h,w], the engine has {list(shape)}"
            )


def check_shape_in_profile(
    name: str,
    shape: tuple[int, ...],
    declared: tuple[int | None, ...],
    lo: tuple[int, ...] | None,
    hi: tuple[int, ...] | None,
) -> None:
    """Raise :class:`BackendError` unless ``shape`` fits the engine's declared shape (``None`` =
    dynamic) and, for dynamic axes, its optimisation profile range ``lo..hi`` (inclusive)."""
    if len(shape) != len(declared):
        raise BackendError(f"input {name!r} must have {len(declared)} axes {list(declared)}, got {list(shape)}")
    for axis, (got, want) in enumerate(zip(shape, declared)):
        if want is not None and got != want:
            raise BackendError(f"input {name!r} axis {axis} must be {want} (engine shape {list(declared)}), got "
                               f"{list(shape)}")
        if want is None and lo is not None and hi is not None and not lo[axis] <= got <= hi[axis]:
            raise BackendError(
                f"input {name!r} shape {list(shape)} is outside the engine's profile {list(lo)}..{list(hi)} "
                f"(axis {axis}); rebuild the engine with a wider --min-size/--max-size or --max-batch"
            )


IO_DTYPES: tuple[tuple[str, str], ...] = (
    ("FLOAT", "float32"), ("HALF", "float16"), ("INT8", "int8"), ("INT32", "int32"), ("INT64", "int64"),
    ("UINT8", "uint8"), ("BOOL", "bool"),
)
"""TensorRT ``DataType`` member → numpy dtype, for engine inputs and outputs. ``trt.nptype`` is not
used: it raises ``TypeError`` for BF16/FP8/INT4 (numpy has no such types)."""


def io_dtype(trt, dtype, *, name: str) -> str:
    """The numpy dtype name of an engine tensor of TensorRT ``dtype``; :class:`EngineError` for one
    with no numpy twin (BF16, FP8, INT4, ...), saying how to re-export the model."""
    for member, numpy_name in IO_DTYPES:
        if getattr(trt.DataType, member, None) == dtype:
            return numpy_name
    raise EngineError(
        f"engine tensor {name!r} is {getattr(dtype, 'name', dtype)}, which numpy (and so this backend's host "
        "buffers) cannot hold: keep the model's inputs and outputs float32 or float16 (tools/export_onnx.py "
        "--fp16 does) and its inner layers in any precision"
    )


def initial_input_shape(
    declared: Sequence[int | None],
    profile: tuple[Sequence[int], Sequence[int]] | None,
    input_size: tuple[int, int],
) -> tuple[int, ...]:
    """The ``[N, 3, H, W]`` shape to open an engine at. Pure.

    Axes the engine fixes keep the engine's value (an engine built for batch 4 or 640x480 runs as
    built, whatever the card says); dynamic axes take batch 1 (or the profile's minimum) and
    ``input_size`` (``(width, height)``).
    """
    want = (1, 3, input_size[1], input_size[0])
    shape = []
    for axis, (dim, default) in enumerate(zip(declared, want)):
        if dim is not None:
            shape.append(int(dim))
        elif axis == 0 and profile is not None:
            shape.append(max(default, int(profile[0][0])))
        else:
            shape.append(default)
    return tuple(shape)


@dataclass(slots=True)
class IOBuffers:
    """One input shape's buffers: device tensors the engine reads and writes, pinned host twins and
    numpy views of those (what ``infer`` returns)."""

    shape: tuple[int, ...]
    d_in: object
    h_in: object
    h_in_np: np.ndarray
    d_out: dict[str, object] = field(default_factory=dict)
    h_out: dict[str, object] = field(default_factory=dict)
    h_out_np: dict[str, np.ndarray] = field(default_factory=dict)


def bind_io_buffers(
    torch, context, *, input_name: str, shape: tuple[int, ...], dtypes: Mapping[str, str], device: str,
    previous: IOBuffers | None, errors: Callable[[], str],
) -> IOBuffers:
    """Set ``context``'s input shape, allocate device and host buffers for it and bind them, all or
    nothing: if anything fails, ``context`` is pointed back at ``previous`` (shape and addresses),
    which stays valid, and :class:`EngineError` is raised. ``dtypes`` maps every engine tensor (input
    first) to its numpy dtype; host buffers are pinned unless ``device`` is ``"cpu"``."""
    pin = device != "cpu"

    def alloc(shp, dtype):
        tdt = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
        return torch.empty(shp, dtype=tdt, device=device), torch.empty(shp, dtype=tdt, pin_memory=pin)

    try:
        if not context.set_input_shape(input_name, shape):
            raise EngineError(f"TensorRT refused input shape {list(shape)} for {input_name!r}: {errors()}")
        d_in, h_in = alloc(shape, dtypes[input_name])
        new = IOBuffers(shape=tuple(shape), d_in=d_in, h_in=h_in, h_in_np=h_in.numpy())
        _bind(context, input_name, d_in, errors)
        for out in (n for n in dtypes if n != input_name):
            oshape = tuple(int(d) for d in context.get_tensor_shape(out))
            if any(d < 0 for d in oshape):
                raise EngineError(f"TensorRT cannot resolve the shape of output {out!r} for input {list(shape)}")
            new.d_out[out], new.h_out[out] = alloc(oshape, dtypes[out])
            new.h_out_np[out] = new.h_out[out].numpy()
            _bind(context, out, new.d_out[out], errors)
    except (RuntimeError, EngineError) as exc:  # torch: CUDA out of memory / CUDA errors
        if previous is not None:
            context.set_input_shape(input_name, previous.shape)
            for name, tensor in ((input_name, previous.d_in), *previous.d_out.items()):
                context.set_tensor_address(name, int(tensor.data_ptr()))
        if isinstance(exc, EngineError):
            raise
        raise EngineError(f"cannot allocate GPU buffers for input {list(shape)}: {exc}") from exc
    return new


def _bind(context, name: str, tensor, errors: Callable[[], str]) -> None:
    if not context.set_tensor_address(name, int(tensor.data_ptr())):
        raise EngineError(f"TensorRT refused the buffer address of {name!r}: {errors()}")


def replay_on_stream(torch, graph, stream) -> None:
    """Replay a captured CUDA graph on ``stream`` and wait for that stream only.

    ``CUDAGraph.replay()`` launches on the *current* stream, so it must run inside
    ``torch.cuda.stream(stream)``: replayed on the default stream while ``stream`` is synchronised,
    the caller could read the results before the replay has written them.
    """
    with torch.cuda.stream(stream):
        graph.replay()
    stream.synchronize()


def normalisation(card: ModelCard) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """``(order, scale, offset)`` for :func:`frame_to_input`: the BGR source channel of each model
    channel, and ``float32[1, 3, 1, 1]`` factors with ``x = pixel * scale + offset``. Pure."""
    inp = card.input
    std = np.asarray(inp.std, dtype=np.float32).reshape(1, 3, 1, 1)
    mean = np.asarray(inp.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    order = (2, 1, 0) if inp.color_order == "RGB" else (0, 1, 2)
    return order, (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def resize_mode(frame_size: tuple[int, int], input_size: tuple[int, int]) -> str | None:
    """How a ``(width, height)`` frame is resized to the network input: ``None`` (same size),
    ``"area"`` (shrinking by more than :data:`AREA_SHRINK` on either axis) or ``"bilinear"`` — the
    rule of :class:`~perception.backends.preprocess.Preprocessor`. Pure."""
    (fw, fh), (w, h) = frame_size, input_size
    if (fw, fh) == (w, h):
        return None
    return "area" if max(fw / w, fh / h) > AREA_SHRINK else "bilinear"


def resize_matrix(src: int, dst: int, mode: str) -> np.ndarray | None:
    """``float32[dst, src]`` weights that resize one axis as OpenCV does; ``None`` if ``src == dst``.

    ``"area"`` (when shrinking): output pixel ``j`` averages the source interval
    ``[j*s, (j+1)*s)``, ``s = src/dst``, weighting partly covered pixels by their overlap
    (``cv2.INTER_AREA``). ``"bilinear"``, or ``"area"`` when enlarging: half-pixel-centred linear
    interpolation with edge clamping (``cv2.INTER_LINEAR``). Rows sum to 1. Pure.
    """
    if src == dst:
        return None
    m = np.zeros((dst, src), dtype=np.float64)
    scale = src / dst
    if mode == "area" and src > dst:
        edges = np.arange(dst + 1) * scale  # output pixel j covers [edges[j], edges[j+1])
        pixels = np.arange(src)
        lo = np.maximum(edges[:-1, None], pixels[None, :])
        hi = np.minimum(edges[1:, None], pixels[None, :] + 1)
        m = np.clip(hi - lo, 0.0, None) / scale
    else:
        x = (np.arange(dst) + 0.5) * scale - 0.5
        x0 = np.floor(x).astype(int)
        frac = x - x0
        frac[x0 < 0] = 0.0
        x0 = np.clip(x0, 0, src - 1)
        x1 = np.minimum(x0 + 1, src - 1)
        rows = np.arange(dst)
        np.add.at(m, (rows, x0), 1.0 - frac)
        np.add.at(m, (rows, x1), frac)
    return m.astype(np.float32)


def frame_to_input(frame, *, out, work, order, ry, rx, scale, offset) -> None:
    """GPU preprocessing, the device twin of :class:`~perception.backends.preprocess.Preprocessor`.

    Args:
        frame: ``uint8[H, W, 3]`` BGR torch tensor (on the GPU; any device works).
        out: ``float32|float16[1, 3, h, w]`` network input tensor, written in place.
        work: ``float32[3, H, W]`` scratch tensor (overwritten).
        order: source channel of ``frame`` for each output channel (``(2, 1, 0)`` for RGB models).
        ry, rx: ``float32[h, H]`` and ``float32[w, W]`` :func:`resize_matrix` weights (``None`` for
            an axis that keeps its size): the resize is two small matrix products, which
            reproduces OpenCV's INTER_AREA for any factor (``F.interpolate(mode="area")`` does so
            only for integer factors).
        scale, offset: ``float32[1, 3, 1, 1]``: ``x = pixel * scale + offset`` (=
            ``(pixel / 255 - mean) / std``).

    Normalising after the resize equals normalising before it (both are linear); the CPU path
    rounds the resized image to ``uint8`` first, so the two differ by up to half a grey level.
    Allocates only the resized intermediates (from PyTorch's caching allocator, or from the
    graph's pool under CUDA-graph capture). Does not modify ``frame``.
    """
    import torch

    for c, src in enumerate(order):  # BGR HWC uint8 -> model colour order, CHW float
        work[c].copy_(frame[:, :, src])
    x = work
    if ry is not None:
        x = torch.matmul(ry, x)  # [h, H] @ [3, H, W] -> [3, h, W]
    if rx is not None:
        x = torch.matmul(x, rx.T)  # [3, h, W] @ [W, w] -> [3, h, w]
    x = x.unsqueeze(0)
    x.mul_(scale).add_(offset)
    out.copy_(x)


class TorchPreprocessor:
    """:func:`frame_to_input` with its constants and scratch kept on one torch device: the device twin
    of :class:`~perception.backends.preprocess.Preprocessor` (``cuda:N`` in the backend; any device
    works, ``cpu`` in the tests).

    :meth:`prepare` allocates the scratch buffer and resize weights for a frame size (only when it
    changes), so that ``__call__`` allocates nothing of its own and can be captured in a CUDA graph
    once prepared.
    """

    def __init__(self, *, card: ModelCard, input_size: tuple[int, int] | None = None, device: str = "cuda:0") -> None:
        import torch

        self._torch = torch
        self.device = device
        self.width, self.height = resolve_input_size(card, input_size)
        self._order, scale, offset = normalisation(card)
        self._scale = torch.from_numpy(scale).to(device)
        self._offset = torch.from_numpy(offset).to(device)
        self._frame_hw: tuple[int, int] | None = None

    def prepare(self, frame_hw: tuple[int, int]) -> None:
        """Allocate the scratch buffer and resize weights for ``(height, width)`` frames."""
        if frame_hw == self._frame_hw:
            return
        torch = self._torch
        fh, fw = frame_hw
        mode = resize_mode((fw, fh), (self.width, self.height)) or "bilinear"
        ry, rx = resize_matrix(fh, self.height, mode), resize_matrix(fw, self.width, mode)
        self._ry, self._rx = (None if m is None else torch.from_numpy(m).to(self.device) for m in (ry, rx))
        self._work = torch.empty((3, fh, fw), dtype=torch.float32, device=self.device)
        self._frame_hw = frame_hw

    def __call__(self, frame, out) -> None:
        """Write the network input for ``frame`` (``uint8[H, W, 3]`` BGR tensor on this device) into
        ``out`` (``float32|float16[1, 3, h, w]``)."""
        self.prepare((int(frame.shape[0]), int(frame.shape[1])))
        frame_to_input(frame, out=out, work=self._work, order=self._order, ry=self._ry, rx=self._rx,
                       scale=self._scale, offset=self._offset)


def options_summary(request) -> str:
    """``"fp16, image[1, 3, 352, 480], TensorRT 10.8.0, NVIDIA H100"``: a request in one line."""
    shapes = ", ".join(p.describe() for p in request.profiles)
    return f"{request.precision}, {shapes}, TensorRT {request.tensorrt_version}, {request.gpu_name}"


# --- the backend -------------------------------------------------------------------------------------


class TensorRTBackend:
    """Runs one model as a TensorRT engine on one GPU.

    Args:
        model_path: the ``.onnx`` file (hashed to find its engine; built from on a cache miss).
        card: its model card (the engine's tensors are checked against it).
        engine_cache_dir: cache folder; ``None`` = ``$PERCEPTION_ENGINE_CACHE`` or ``~/.cache/perception/engines``.
        precision: ``fp32``, ``fp16`` (default: usually much faster than FP32 on tensor-core
            GPUs, with labels expected to agree with FP32 on >= 99.5 % of pixels) or ``int8``
            (faster again; a small accuracy cost). On TensorRT 11 it must be the model's own:
            an FP16 export for ``fp16``, a Q/DQ model for ``int8`` (see
            :func:`~perception.backends.engine_build.plan_typing`); on 10.x an FP32 model can also
            be built at ``fp16``, or at ``int8`` with calibration data in ``build_options``.
        input_size: ``(width, height)`` to run at (dynamic models); ``None`` = the card's size.
        build_options: further build settings (batch range, workspace, DLA, calibration); its
            ``precision`` and sizes are overridden by ``precision`` and ``input_size``.
        engine_path: use this engine file instead of the cache. It must still match the model,
            card, TensorRT version and GPU; its precision and shapes are taken as built (an engine
            with a fixed batch or size runs at that batch or size; ``input_size`` is then the engine's).
        device: CUDA device index.
        use_cuda_graph: capture each (input shape, path) once as a CUDA graph and replay it on the
            backend's stream: cuts the launch overhead of the many small kernels (noticeable on
            Jetson CPUs); costs a capture per new shape and fails loudly if the engine cannot be captured.
        build_missing: build on a cache miss (``True``) or raise :class:`EngineError` naming the
            ``perception build-engine`` command (``False``, for deployments that must not build).
    """

    name = "tensorrt"

    def __init__(
        self,
        *,
        model_path: str | Path,
        card: ModelCard,
        engine_cache_dir: str | Path | None = None,
        precision: str = "fp16",
        input_size: tuple[int, int] | None = None,
        build_options: BuildOptions | None = None,
        engine_path: str | Path | None = None,
        device: int = 0,
        use_cuda_graph: bool = False,
        build_missing: bool = True,
    ) -> None:
        self.card = card
        self.model_path = Path(model_path)
        self.input_size = resolve_input_size(card, input_size)
        self.use_cuda_graph = bool(use_cuda_graph)
        self._device = int(device)
        self._closed = True  # until fully constructed
        self._graphs: dict[tuple, object] = {}
        self._io: IOBuffers | None = None
        self._frame_shape: tuple[int, ...] | None = None
        if not self.model_path.is_file():
            raise BackendError(f"model file not found: {self.model_path}")

        trt = import_tensorrt()
        torch = import_torch_cuda()
        self._trt, self._torch = trt, torch
        gpu = gpu_identity(self._device)
        options = options_for_runtime(card, build_options, precision=precision, input_size=input_size)
        self.metadata, blob = self._find_engine(options, gpu, engine_cache_dir, engine_path, build_missing)

        logger = trt_logger(trt)
        logger.take_errors()
        self._runtime = self._engine = self._context = self._stream = self._prep = None
        try:
            self._open(blob, logger)
        except BaseException:
            self._release()  # nothing half-built outlives a failed constructor
            raise
        req = self.metadata.request
        w, h = self.input_size
        log.info("tensorrt %s: %s engine %s, %s, input %dx%d%s", trt.__version__, req.precision,
                 self.engine_path.name, gpu.name, w, h, ", CUDA graphs" if self.use_cuda_graph else "")

    def _open(self, blob: bytes, logger) -> None:
        trt, torch, card = self._trt, self._torch, self.card
        with torch.cuda.device(self._device):
            self._runtime = create_runtime(trt, logger)
            dla = self.metadata.request.build_options.get("dla_core")
            if dla is not None:
                self._runtime.DLA_core = int(dla)
            self._engine = self._runtime.deserialize_cuda_engine(blob)
            if self._engine is None:
                raise EngineError(f"TensorRT cannot deserialize {self.engine_path}: {logger.take_errors()}")
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise EngineError(f"cannot create an execution context for {self.engine_path} "
                                  f"(out of GPU memory?): {logger.take_errors()}")
            self._stream = torch.cuda.Stream(device=self._device)
        self._read_tensors()
        where = f"engine {self.engine_path.name} vs card {card.name!r}"
        check_engine_tensors(card, self.inputs, self.outputs, where=where)
        name = card.input.name
        shape = initial_input_shape(self.inputs[name].shape, self._profile.get(name), self.input_size)
        self.input_size = (shape[3], shape[2])  # an explicit engine's fixed size wins over the card's
        self._prep = TorchPreprocessor(card=card, input_size=self.input_size, device=f"cuda:{self._device}")
        self._closed = False
        self._ensure_shape(shape)

    # --- construction helpers ----------------------------------------------------------------------

    def _find_engine(self, options, gpu, cache_dir, engine_path, build_missing) -> tuple[EngineMetadata, bytes]:
        trt = self._trt
        if engine_path is not None:
            # An explicit file: only the environment fields are compared, so the precision/calibration
            # given here do not matter (fp32 avoids asking for calibration data to fingerprint).
            request = make_request(model_path=self.model_path, card=self.card,
                                   options=replace(options, precision="fp32"), tensorrt_version=trt.__version__,
                                   gpu=gpu)
            self.engine_path = Path(engine_path)
            return load_checked(self.engine_path, request, fields=ENVIRONMENT_FIELDS)
        request = make_request(model_path=self.model_path, card=self.card, options=options,
                               tensorrt_version=trt.__version__, gpu=gpu, require_calibration=False)
        cache = EngineCache(directory=cache_dir)
        if options.precision == "int8" and not has_calibration_data(options) \
                and not model_is_quantized(self.model_path):
            return self._find_calibrated(cache, request)
        path = cache.lookup(request)
        if path is None:
            if not build_missing:
                raise EngineError(
                    f"no cached {options.precision} engine for {self.model_path.name} in {cache.directory}; "
                    f"build it with: {request.rebuild_command()}"
                )
            for line in cache.explain_miss(request):
                log.info("engine cache: not reusing %s", line)
            log.info("engine cache: building %s (key %s)", cache.path_for(request).name, request.key())
            built = build_engine(model_path=self.model_path, card=self.card, options=options, device=self._device)
            path = cache.store(request, built.blob, extra={"built_by": "TensorRTBackend", **built.metadata()})
        self.engine_path = path
        return cache.load_checked(path, request)

    def _find_calibrated(self, cache: EngineCache, request) -> tuple[EngineMetadata, bytes]:
        """An FP32 model at INT8 without calibration data here: the newest INT8 engine built offline."""
        found = cache.find_matching(request, ignore_build_options=("calibration",))
        if not found:
            raise EngineError(
                f"no INT8 engine for {self.model_path.name} ({options_summary(request)}) in {cache.directory}, "
                f"and INT8 needs calibration data to build one: run {request.rebuild_command()}, or pass "
                "calib_dir/calib_cache in build_options (or build from a Q/DQ model: tools/quantize_onnx.py --tensorrt)"
            )
        path, metadata = found[0]
        calibration = metadata.request.build_options.get("calibration")
        request = replace(request, build_options={**request.build_options, "calibration": calibration})
        self.engine_path = path
        return cache.load_checked(path, request)

    def _read_tensors(self) -> None:
        trt, engine = self._trt, self._engine
        self.inputs: dict[str, TensorSpec] = {}
        self.outputs: dict[str, TensorSpec] = {}
        self._profile: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_location(name) != trt.TensorLocation.DEVICE:
                raise EngineError(f"engine tensor {name!r} lives on the host (a shape tensor); not supported")
            dtype = io_dtype(trt, engine.get_tensor_dtype(name), name=name)
            shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
            spec = TensorSpec(name=name, shape=shape, dtype=dtype)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs[name] = spec
                if None in shape:
                    lo, _opt, hi = engine.get_tensor_profile_shape(name, 0)
                    self._profile[name] = (tuple(int(d) for d in lo), tuple(int(d) for d in hi))
            else:
                self.outputs[name] = spec

    def _ensure_shape(self, shape: tuple[int, ...]) -> None:
        """Set the input shape and (re)allocate device + pinned host buffers, only when it changes;
        all or nothing (:func:`bind_io_buffers`)."""
        if self._io is not None and shape == self._io.shape:
            return
        name = self.card.input.name
        lo, hi = self._profile.get(name, (None, None))
        check_shape_in_profile(name, shape, self.inputs[name].shape, lo, hi)
        dtypes = {name: self.inputs[name].dtype, **{o: spec.dtype for o, spec in self.outputs.items()}}
        with self._torch.cuda.device(self._device):
            io = bind_io_buffers(self._torch, self._context, input_name=name, shape=shape, dtypes=dtypes,
                                 device=f"cuda:{self._device}", previous=self._io,
                                 errors=trt_logger(self._trt).take_errors)
        self._graphs.clear()  # captured graphs point at the buffers being replaced
        self._frame_shape = None
        self._io = io

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise EngineError(f"TensorRT execute_async_v3 failed on {self.engine_path.name}: "
                              f"{trt_logger(self._trt).take_errors()}")

    def _launch(self, key: tuple, body) -> None:
        """Run ``body`` (which enqueues work on the stream) directly or as a captured CUDA graph
        replayed on the same stream, then wait for that stream. CUDA errors become :class:`EngineError`."""
        torch = self._torch
        try:
            with torch.cuda.device(self._device):
                if not self.use_cuda_graph:
                    body()
                    self._stream.synchronize()
                    return
                graph = self._graphs.get(key)
                if graph is None:
                    graph = self._graphs[key] = self._capture(body)
                replay_on_stream(torch, graph, self._stream)
        except RuntimeError as exc:
            raise EngineError(f"CUDA error while running {self.engine_path.name}: {exc}") from exc

    def _capture(self, body):
        torch = self._torch
        body()  # warm-up: TensorRT applies deferred shape updates on its first enqueue
        self._stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self._stream):
                body()
        except (RuntimeError, EngineError) as exc:
            raise EngineError(
                f"CUDA-graph capture of {self.engine_path.name} failed ({exc}); run with use_cuda_graph=False"
            ) from exc
        return graph

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the TensorRT backend is closed")

    # --- Backend protocol ------------------------------------------------------------------------------

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine on host arrays; returns host arrays keyed by output name.

        The returned arrays are views of pinned buffers that the next call overwrites (as the
        :class:`~perception.backends.base.Backend` protocol allows): copy what you keep.
        """
        self._check_open()
        check_feeds(feeds, self.inputs, model=self.engine_path.name)
        x = feeds[self.card.input.name]
        self._ensure_shape(tuple(int(d) for d in x.shape))
        np.copyto(self._io.h_in_np, x)
        self._launch(("infer", self._io.shape), self._infer_body)
        return dict(self._io.h_out_np)

    def _infer_body(self) -> None:
        io = self._io
        with self._torch.cuda.stream(self._stream):
            io.d_in.copy_(io.h_in, non_blocking=True)
            self._execute()
            self._download(io)

    def _download(self, io: IOBuffers) -> None:
        for name, host in io.h_out.items():
            host.copy_(io.d_out[name], non_blocking=True)

    # --- the backend's own preprocessing, on the GPU ------------------------------------------------------

    def infer_frame(self, frame_bgr: np.ndarray) -> dict[str, np.ndarray]:
        """The pipeline's path: upload the ``uint8`` frame once; resize, normalise, reorder colours
        and HWC→CHW on the GPU (:class:`TorchPreprocessor`); run the engine; download every output.

        Args:
            frame_bgr: ``uint8[H, W, 3]`` BGR frame, any size (resized to ``input_size``).

        Returns:
            what :meth:`infer` returns for that input: host arrays keyed by output name (views of
            pinned buffers overwritten by the next call).
        """
        self._prepare_frame(frame_bgr)
        self._launch(("frame", frame_bgr.shape), self._frame_body)
        return dict(self._io.h_out_np)

    def infer_frames(self, frames) -> dict[str, np.ndarray]:
        """Several frames: one :meth:`infer_frame` each, outputs stacked on the batch axis (copies).

        Not a batched engine call yet: the GPU preprocessing fills one input at a time. A single frame is
        exactly :meth:`infer_frame` (views of the pinned buffers).
        """
        if len(frames) == 1:
            return self.infer_frame(frames[0])
        rows = [{k: v.copy() for k, v in self.infer_frame(f).items()} for f in frames]
        return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}

    def infer_frame_labels(self, frame_bgr: np.ndarray) -> dict[str, np.ndarray]:
        """Labels fast path: as :meth:`infer_frame`, with the argmax on the GPU too, so only small
        results come back instead of ``C`` float logit planes.

        Returns:
            ``labels``: ``uint8[h, w]`` class ids at the network's output resolution (``h, w`` =
            input size / stride); ``center_heatmap``: ``float32[h, w]`` and ``center_offsets``:
            ``float32[2, h, w]`` in ``(dy, dx)`` order (network-output pixels), when the card
            has those outputs. Views of pinned buffers overwritten by the next call.
        """
        self._prepare_frame(frame_bgr)
        self._launch(("labels", frame_bgr.shape), self._labels_body)
        return dict(self._frame_results)

    def _prepare_frame(self, frame_bgr: np.ndarray) -> None:
        self._check_open()
        check_frame(frame_bgr)
        w, h = self.input_size
        self._ensure_shape((self._io.shape[0], 3, h, w))
        self._ensure_frame_buffers(frame_bgr.shape)
        np.copyto(self._h_frame_np, frame_bgr)

    def _ensure_frame_buffers(self, frame_shape: tuple[int, ...]) -> None:
        if frame_shape == self._frame_shape:
            return
        torch = self._torch
        dev = f"cuda:{self._device}"
        fh, fw = frame_shape[:2]
        sem = self.card.output("semantic_logits")
        oh, ow = self._io.d_out[sem.name].shape[2:]
        try:
            with torch.cuda.device(self._device):
                self._graphs = {k: g for k, g in self._graphs.items() if k[0] == "infer"}
                self._h_frame = torch.empty((fh, fw, 3), dtype=torch.uint8, pin_memory=True)
                self._h_frame_np = self._h_frame.numpy()
                self._d_frame = torch.empty((fh, fw, 3), dtype=torch.uint8, device=dev)
                self._prep.prepare((fh, fw))
                self._d_labels = torch.empty((oh, ow), dtype=torch.uint8, device=dev)
                self._h_labels = torch.empty((oh, ow), dtype=torch.uint8, pin_memory=True)
                self._frame_results = {"labels": self._h_labels.numpy()}
                self._h_heat = self._h_off = None
                if self.card.has_output("center_heatmap"):
                    self._h_heat = torch.empty((oh, ow), dtype=torch.float32, pin_memory=True)
                    self._frame_results["center_heatmap"] = self._h_heat.numpy()
                if self.card.has_output("center_offsets"):
                    self._h_off = torch.empty((2, oh, ow), dtype=torch.float32, pin_memory=True)
                    self._frame_results["center_offsets"] = self._h_off.numpy()
        except RuntimeError as exc:
            raise EngineError(f"cannot allocate GPU buffers for {fw}x{fh} frames: {exc}") from exc
        self._frame_shape = frame_shape

    def _frame_body(self) -> None:
        io = self._io
        with self._torch.cuda.stream(self._stream):
            self._d_frame.copy_(self._h_frame, non_blocking=True)
            self._prep(self._d_frame, io.d_in)
            self._execute()
            self._download(io)

    def _labels_body(self) -> None:
        torch, card, io = self._torch, self.card, self._io
        with torch.cuda.stream(self._stream):
            self._d_frame.copy_(self._h_frame, non_blocking=True)
            self._prep(self._d_frame, io.d_in)
            self._execute()
            logits = io.d_out[card.output("semantic_logits").name]
            self._d_labels.copy_(torch.argmax(logits[0], dim=0))  # first maximum on ties, as numpy
            self._h_labels.copy_(self._d_labels, non_blocking=True)
            if self._h_heat is not None:
                self._h_heat.copy_(io.d_out[card.output("center_heatmap").name][0, 0], non_blocking=True)
            if self._h_off is not None:
                off = card.output("center_offsets")
                d_off = io.d_out[off.name][0]
                if off.order == "xy":  # normalise to (dy, dx)
                    self._h_off[0].copy_(d_off[1], non_blocking=True)
                    self._h_off[1].copy_(d_off[0], non_blocking=True)
                else:
                    self._h_off.copy_(d_off, non_blocking=True)

    # --- lifetime -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for outstanding work, then release graphs, context, engine, runtime and buffers."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        self._closed = True
        if self._stream is not None:
            try:
                self._stream.synchronize()
            except RuntimeError as exc:  # a sticky CUDA error: still drop every reference below
                log.warning("tensorrt: stream sync on close failed: %s", exc)
        self._graphs.clear()
        self._context = None
        self._engine = None
        self._runtime = None
        self._io = None
        self._h_frame = self._h_frame_np = self._d_frame = self._prep = None
        self._d_labels = self._h_labels = self._h_heat = self._h_off = None
        self._frame_results = {}
        self._frame_shape = None

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "AREA_SHRINK",
    "IO_DTYPES",
    "IOBuffers",
    "TensorRTBackend",
    "TorchPreprocessor",
    "available",
    "bind_io_buffers",
    "check_engine_tensors",
    "check_shape_in_profile",
    "frame_to_input",
    "initial_input_shape",
    "io_dtype",
    "normalisation",
    "replay_on_stream",
    "resize_matrix",
    "resize_mode",
]
