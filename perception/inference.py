"""A model run on one frame: the backend preprocesses and runs it → outputs in a fixed, documented layout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perception.backends.base import Backend
from perception.errors import BackendError


@dataclass(frozen=True, slots=True)
class ModelOutputs:
    """Network outputs for one frame (batch index 0), views of the backend's buffers.

    Copy what you keep past the next call of the same :class:`Segmenter`.
    """

    semantic_logits: np.ndarray
    """float32[C, h, w] class scores at the output grid (stride ``stride`` of the network input)."""
    center_heatmap: np.ndarray | None
    """float32[h, w] instance-centre score, nominally in [0, 1] (sigmoid applied when the card says the
    model outputs logits)."""
    center_offsets: np.ndarray | None
    """float32[2, h, w] vector (dy, dx) from each pixel to its instance centre, in output-grid pixels."""
    stride: int
    input_size: tuple[int, int]
    """(width, height) of the network input."""


class Segmenter:
    """Inference for one model, frame in, :class:`ModelOutputs` out.

    Preprocessing is the backend's job (:meth:`~perception.backends.base.Backend.infer_frame`): on
    the CPU for ONNX Runtime, on the GPU for TensorRT. ``input_size`` is only a check: it must be the
    backend's (open the backend with ``input_size`` to run at another size).
    """

    def __init__(self, *, backend: Backend, input_size: tuple[int, int] | None = None) -> None:
        self.backend = backend
        self.card = backend.card
        size = tuple(int(v) for v in backend.input_size)
        if input_size is not None and tuple(int(v) for v in input_size) != size:
            raise BackendError(
                f"the {backend.name} backend runs at {size[0]}x{size[1]} but {input_size[0]}x{input_size[1]} "
                "was asked for: open the backend with that input_size"
            )
        self._input_size: tuple[int, int] = size  # type: ignore[assignment]
        sem = self.card.output("semantic_logits")
        self._sem, self.stride = sem.name, sem.stride
        self._hm = self.card.output("center_heatmap") if self.card.has_output("center_heatmap") else None
        self._off = self.card.output("center_offsets") if self.card.has_output("center_offsets") else None
        self._hm_buf: np.ndarray | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        return self._input_size

    def __call__(self, frame_bgr: np.ndarray) -> ModelOutputs:
        return self._outputs(self.backend.infer_frame(frame_bgr), 0)

    def batch(self, frames: Sequence[np.ndarray]) -> list[ModelOutputs]:
        """Several frames (of any sizes) through one backend call; ``outputs[i]`` for ``frames[i]``.

        One frame gives exactly what :meth:`__call__` gives. The outputs are views of the backend's
        buffers, valid until the next call.
        """
        out = self.backend.infer_frames(frames)
        return [self._outputs(out, i) for i in range(len(frames))]

    def _outputs(self, out: dict[str, np.ndarray], i: int) -> ModelOutputs:
        heat = offsets = None
        if self._hm is not None:
            heat = out[self._hm.name][i, 0]
            if self._hm.activation == "sigmoid":
                heat = 1.0 / (1.0 + np.exp(-heat)) if i else self._sigmoid(heat)
        if self._off is not None:
            offsets = out[self._off.name][i]
            if self._off.order == "xy":
                offsets = offsets[::-1]
            if self._off.units == "input_px":
                offsets = offsets / float(self._off.stride)
        return ModelOutputs(
            semantic_logits=out[self._sem][i],
            center_heatmap=heat,
            center_offsets=offsets,
            stride=self.stride,
            input_size=self._input_size,
        )

    def _sigmoid(self, heat: np.ndarray) -> np.ndarray:
        """The sigmoid of the first frame's heatmap into a reused buffer."""
        if self._hm_buf is None or self._hm_buf.shape != heat.shape:
            self._hm_buf = np.empty_like(heat)
        np.negative(heat, out=self._hm_buf)
        np.exp(self._hm_buf, out=self._hm_buf)
        self._hm_buf += 1.0
        np.reciprocal(self._hm_buf, out=self._hm_buf)
        return self._hm_buf
