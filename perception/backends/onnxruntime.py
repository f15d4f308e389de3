"""ONNX Runtime backend: the CPU default (and the CUDA execution provider when it is present).

The session's real tensors are read from ONNX Runtime and checked against the model card; a model
whose tensors do not match its card is refused with :class:`ModelCardError`. Outputs are bound to
buffers allocated once per input shape (IOBinding), so the hot path allocates nothing large.
Frames are preprocessed on the CPU by :class:`~perception.backends.preprocess.Preprocessor` into
one reused input buffer (:meth:`OnnxRuntimeBackend.infer_frame`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from perception.backends.base import check_feeds, check_frame, resolve_input_size
from perception.backends.preprocess import Preprocessor
from perception.errors import BackendError, ModelCardError
from perception.modelcard import ModelCard
from perception.types import TensorSpec

log = logging.getLogger(__name__)

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
               "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _dims(shape: list) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


class OnnxRuntimeBackend:
    """Runs an ONNX model with ONNX Runtime.

    Args:
        model_path: the ``.onnx`` file.
        card: its model card (checked against the model's tensors).
        threads: intra-op threads; ``None`` lets ONNX Runtime use every core. On a machine shared
            with capture and post-processing processes, fewer threads than cores leaves them room.
        providers: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when ONNX Runtime has it, else CPU).
        input_size: ``(width, height)`` to run at, for models exported with dynamic sizes.
        allow_spinning: let idle intra-op threads busy-wait for work. Lowers latency a little on
            cores nobody else needs; on a small CPU shared with the capture and post-processing
            processes it burns the cycles they need, so it is off by default.
    """

    name = "onnxruntime"

    def __init__(
        self,
        *,
        model_path: str | Path,
        card: ModelCard,
        threads: int | None = None,
        providers: str = "auto",
        input_size: tuple[int, int] | None = None,
        allow_spinning: bool = False,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise BackendError("onnxruntime is not installed: pip install onnxruntime") from exc
        self.card = card
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"model file not found: {self.model_path}")
        self.input_size = resolve_input_size(card, input_size)

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        available = ort.get_available_providers()
        if providers not in ("auto", "cpu", "cuda"):
            raise BackendError(f"providers must be auto, cpu or cuda, got {providers!r}")
        chosen = ["CPUExecutionProvider"]
        if providers in ("auto", "cuda") and "CUDAExecutionProvider" in available:
            chosen.insert(0, "CUDAExecutionProvider")
        elif providers == "cuda":
            raise BackendError(f"ONNX Runtime has no CUDA provider here (available: {available})")
        try:
            self._session = ort.InferenceSession(str(self.model_path), sess_options=opts, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise BackendError(f"cannot load ONNX model {self.model_path}: {exc}") from exc
        self.providers = tuple(self._session.get_providers())
        log.info("onnxruntime %s on %s, input %dx%d", ort.__version__, self.providers, *self.input_size)

        self.inputs = self._specs(self._session.get_inputs())
        self.outputs = self._specs(self._session.get_outputs())
        self._check_against_card()
        self._binding = self._session.io_binding()
        self._out_buffers: dict[str, np.ndarray] = {}
        self._bound_for: tuple[int, ...] | None = None
        self._preprocess = Preprocessor(card=card, input_size=self.input_size)

    @staticmethod
    def _specs(args: list) -> dict[str, TensorSpec]:
        out = {}
        for a in args:
            dtype = _ORT_DTYPES.get(a.type)
            if dtype is None:
                raise BackendError(f"tensor {a.name!r} has unsupported type {a.type}")
            out[a.name] = TensorSpec(name=a.name, shape=_dims(a.shape), dtype=dtype)
        return out

    def _check_against_card(self) -> None:
        card, where = self.card, f"model {self.model_path.name} vs its card {card_name(self.card)}"
        inp = card.input
        if list(self.inputs) != [inp.name]:
            raise ModelCardError(f"{where}: the card's input is {inp.name!r}, the model has {list(self.inputs)}")
        spec = self.inputs[inp.name]
        if len(spec.shape) != 4 or spec.shape[1] not in (None, 3):
            raise ModelCardError(f"{where}: input {inp.name!r} must be [N,3,H,W], the model has {spec.shape}")
        if spec.dtype != inp.dtype:
            raise ModelCardError(f"{where}: input dtype {spec.dtype} but the card says {inp.dtype}")
        fixed_hw = spec.shape[2:]
        if all(d is not None for d in fixed_hw) and tuple(fixed_hw) != (inp.height, inp.width):
            raise ModelCardError(
                f"{where}: the model's input is {fixed_hw[1]}x{fixed_hw[0]} but the card says {inp.width}x{inp.height}"
            )
        if inp.dynamic_size and not all(d is None for d in fixed_hw):
            raise ModelCardError(f"{where}: the card says dynamic_size but the model's input is fixed {spec.shape}")
        for o in card.outputs:
            if o.name not in self.outputs:
                raise ModelCardError(
                    f"{where}: the card's output {o.name!r} ({o.kind}) is not in the model; it has {list(self.outputs)}"
                )
            shape = self.outputs[o.name].shape
            if len(shape) != 4 or shape[1] not in (None, o.channels):
                raise ModelCardError(
                    f"{where}: output {o.name!r} should be [N,{o.channels},H/{o.stride},W/{o.stride}], the model has "
                    f"{shape}"
                )
            if all(d is not None for d in fixed_hw) and all(d is not None for d in shape[2:]):
                want = (fixed_hw[0] // o.stride, fixed_hw[1] // o.stride)
                if tuple(shape[2:]) != want:
                    raise ModelCardError(
                        f"{where}: output {o.name!r} is {shape[2:]} but stride {o.stride} of the input gives {want}"
                    )
        self._check_symbolic_strides(where)
        self._check_output_grid(where)

    def _check_symbolic_strides(self, where: str) -> None:
        """Dims the model names: an output dim named like an input dim is at stride 1 along that axis."""
        raw_in = self._session.get_inputs()[0].shape
        raw_out = {a.name: a.shape for a in self._session.get_outputs()}
        for o in self.card.outputs:
            for axis, label in ((2, "height"), (3, "width")):
                dim = raw_out[o.name][axis] if len(raw_out[o.name]) == 4 else None
                if isinstance(dim, str) and len(raw_in) == 4 and dim == raw_in[axis] and o.stride != 1:
                    raise ModelCardError(
                        f"{where}: output {o.name!r} has the input's {label} ({dim!r}), so stride 1, but the card "
                        f"says stride {o.stride}"
                    )

    def _check_output_grid(self, where: str) -> None:
        """Outputs whose size the model does not declare: one dry inference at the run's input size.

        Without it a card with the wrong stride would pass here and fail at the first frame (the
        output buffers are sized from the card). Costs one inference on zeros at start-up, only for
        models exported with dynamic sizes.
        """
        unknown = [o for o in self.card.outputs if any(d is None for d in self.outputs[o.name].shape[2:])]
        if not unknown:
            return
        name = self.card.input.name
        w, h = self.input_size
        x = np.zeros((1, 3, h, w), dtype=np.dtype(self.inputs[name].dtype))
        try:
            got = self._session.run([o.name for o in unknown], {name: x})
        except Exception as exc:  # onnxruntime raises its own types
            raise ModelCardError(f"{where}: a dry run at the input size {w}x{h} failed: {exc}") from exc
        for o, arr in zip(unknown, got):
            want = (1, o.channels, h // o.stride, w // o.stride)
            if tuple(arr.shape) != want:
                hint = (f" (the model's stride is {h // arr.shape[2]})"
                        if arr.ndim == 4 and arr.shape[2] and h % arr.shape[2] == 0 else "")
                raise ModelCardError(
                    f"{where}: at input {w}x{h} output {o.name!r} is {list(arr.shape)} but the card (channels "
                    f"{o.channels}, stride {o.stride}) gives {list(want)}{hint}; fix the card"
                )

    def _bind_outputs(self, in_shape: tuple[int, ...]) -> None:
        n, _, h, w = in_shape
        self._out_buffers = {}
        self._binding.clear_binding_outputs()
        for o in self.card.outputs:
            buf = np.empty((n, o.channels, h // o.stride, w // o.stride), dtype=np.dtype(self.outputs[o.name].dtype))
            self._binding.bind_output(o.name, "cpu", 0, buf.dtype, buf.shape, buf.ctypes.data)
            self._out_buffers[o.name] = buf
        self._bound_for = in_shape

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(feeds, self.inputs, model=self.model_path.name)
        name = self.card.input.name
        x = np.ascontiguousarray(feeds[name])
        if x.shape != self._bound_for:
            self._bind_outputs(x.shape)
        self._binding.bind_cpu_input(name, x)
        try:
            self._session.run_with_iobinding(self._binding)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed on {self.model_path.name} with input {x.shape}: {exc}") from exc
        return dict(self._out_buffers)

    def infer_frame(self, frame_bgr: np.ndarray) -> dict[str, np.ndarray]:
        """Preprocess ``frame_bgr`` (BGR ``uint8[H, W, 3]``) on the CPU into the reused input buffer
        and run the model: exactly ``infer({input: Preprocessor(frame)})``. See
        :meth:`~perception.backends.base.Backend.infer_frame`."""
        check_frame(frame_bgr)
        return self.infer({self.card.input.name: self._preprocess(frame_bgr)})

    def infer_frames(self, frames) -> dict[str, np.ndarray]:
        """Several frames in one call (batch ``n = len(frames)``): each preprocessed as by
        :meth:`infer_frame`; one frame is exactly :meth:`infer_frame`. See
        :meth:`~perception.backends.base.Backend.infer_frames`."""
        for f in frames:
            check_frame(f)
        if len(frames) == 1:
            return self.infer({self.card.input.name: self._preprocess(frames[0])})
        return self.infer({self.card.input.name: self._preprocess.batch(frames)})

    def close(self) -> None:
        self._binding = None
        self._session = None

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def card_name(card: ModelCard) -> str:
    return repr(card.name)
