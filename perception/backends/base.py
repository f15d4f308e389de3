"""The backend protocol: one runtime per module, all behind this interface.

A backend runs one model. It declares its tensors (``inputs`` / ``outputs`` as :class:`TensorSpec`,
read from the runtime itself and checked against the model card) and never reinterprets metadata.
Lifetimes are explicit: ``close()`` or a ``with`` block.

A backend also owns its preprocessing: :meth:`Backend.infer_frame` takes the camera's BGR frame and
turns it into the network input on the backend's own device (ONNX Runtime: the CPU
:class:`~perception.backends.preprocess.Preprocessor`; TensorRT: the GPU twin of it), so that the
pipeline never has to know where the model runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from perception.errors import BackendError
from perception.modelcard import ModelCard
from perception.types import TensorSpec


@runtime_checkable
class Backend(Protocol):
    name: str
    card: ModelCard
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    input_size: tuple[int, int]
    """``(width, height)`` of the network input that :meth:`infer_frame` resizes frames to."""

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model. ``feeds`` maps input names to arrays of the declared dtype and shape.

        Returns arrays keyed by output name. They may be views of buffers the backend reuses on the
        next call: copy what you keep.
        """
        ...

    def infer_frame(self, frame_bgr: np.ndarray) -> dict[str, np.ndarray]:
        """Preprocess one ``uint8[H, W, 3]`` BGR frame (any size) on the backend's device and run the
        model: resize to :attr:`input_size`, the card's colour order and normalisation, HWC→CHW.

        Returns what :meth:`infer` returns for that input (batch 1, keyed by output name), possibly
        views of reused buffers. Raises :class:`BackendError` for anything but a BGR uint8 frame.
        """
        ...

    def infer_frames(self, frames: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`infer_frame` for several frames in one backend call: outputs with batch ``len(frames)``,
        row ``i`` for ``frames[i]``. A single frame gives exactly what :meth:`infer_frame` gives."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...


def check_feeds(feeds: Mapping[str, np.ndarray], inputs: Mapping[str, TensorSpec], *, model: str) -> None:
    """Raise :class:`BackendError` unless ``feeds`` has exactly the declared inputs with fitting shapes."""
    missing = set(inputs) - set(feeds)
    extra = set(feeds) - set(inputs)
    if missing or extra:
        raise BackendError(
            f"{model}: feeds must be exactly {sorted(inputs)}; missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    for name, spec in inputs.items():
        arr = feeds[name]
        if arr.dtype != np.dtype(spec.dtype):
            raise BackendError(f"{model}: input {name!r} must be {spec.dtype}, got {arr.dtype}")
        if arr.ndim != len(spec.shape) or any(
            d is not None and d != a for d, a in zip(spec.shape, arr.shape)
        ):
            raise BackendError(f"{model}: input {name!r} must have shape {spec.shape}, got {arr.shape}")


def check_frame(frame_bgr: object) -> None:
    """Raise :class:`BackendError` unless ``frame_bgr`` is a ``uint8[H, W, 3]`` numpy array."""
    if isinstance(frame_bgr, np.ndarray) and frame_bgr.ndim == 3 and frame_bgr.shape[2] == 3 \
            and frame_bgr.dtype == np.uint8:
        return
    got = f"{frame_bgr.dtype}{list(frame_bgr.shape)}" if isinstance(frame_bgr, np.ndarray) else type(frame_bgr).__name__
    raise BackendError(f"a frame must be a BGR uint8[H, W, 3] array, got {got}")


def resolve_input_size(card: ModelCard, input_size: tuple[int, int] | None) -> tuple[int, int]:
    """Validate a requested ``(width, height)`` against the card; ``None`` means the card's default."""
    if input_size is None:
        return card.input_size
    w, h = (int(v) for v in input_size)
    if (w, h) == card.input_size:
        return w, h
    if not card.input.dynamic_size:
        raise BackendError(
            f"model {card.name!r} has a fixed input size {card.input.width}x{card.input.height}; "
            f"{w}x{h} was asked for (re-export the model with dynamic sizes to change it)"
        )
    m = card.input.size_multiple
    if w <= 0 or h <= 0 or w % m or h % m:
        raise BackendError(
            f"input size {w}x{h} is not accepted by model {card.name!r}: both sides must be positive "
            f"multiples of {m} (e.g. {max(m, round(w / m) * m)}x{max(m, round(h / m) * m)})"
        )
    return w, h
