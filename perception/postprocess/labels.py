"""Class scores to label maps, and where label maps change class.

Pure functions: they never modify their inputs. Arrays are row-major ``(y, x)``; score tensors are
``float32[C, h, w]`` (class axis first, as the network emits them).
"""

from __future__ import annotations

import numpy as np

MAX_CLASSES = 255
"""A ``uint8`` label map holds class ids 0..254; 255 is left free as a 'no label' marker."""


def check_logits(logits: np.ndarray, *, name: str = "logits") -> np.ndarray:
    """Validate a ``float32[C, h, w]`` score tensor and return it (unchanged, no copy).

    Raises:
        ValueError: wrong rank, non-float dtype, no classes, more than :data:`MAX_CLASSES` classes,
            or an empty grid.
    """
    if not isinstance(logits, np.ndarray):
        raise ValueError(f"{name} must be a numpy array float32[C, h, w], got {type(logits).__name__}")
    if logits.ndim != 3:
        raise ValueError(f"{name} must be float32[C, h, w] (3 axes), got shape {logits.shape}")
    if logits.dtype.kind != "f":
        raise ValueError(f"{name} must hold floats (float32 scores), got dtype {logits.dtype}")
    c, h, w = logits.shape
    if not 1 <= c <= MAX_CLASSES:
        raise ValueError(f"{name} must have 1..{MAX_CLASSES} classes on axis 0, got {c}")
    if h < 1 or w < 1:
        raise ValueError(f"{name} has an empty grid: shape {logits.shape}")
    return logits


def argmax_labels(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel class of highest score.

    Args:
        logits: ``float32[C, h, w]`` class scores (any monotone score: logits or probabilities).
        out: optional ``uint8[h, w]`` C-contiguous array to write into (returned).

    Returns:
        ``uint8[h, w]`` class ids; ties go to the lowest class id (as :func:`numpy.argmax`).

    Raises:
        ValueError: bad ``logits`` (see :func:`check_logits`) or an ``out`` of the wrong shape/dtype.
    """
    check_logits(logits)
    _, h, w = logits.shape
    if out is None:
        out = np.empty((h, w), np.uint8)
    elif out.shape != (h, w) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8[{h}, {w}], got {out.dtype}{list(out.shape)}")
    return _argmax_into(logits, out)


def _argmax_into(logits: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.argmax(logits, axis=0)`` into ``out``, one class plane at a time.

    ``np.argmax`` over the class axis of a ``[C, h, w]`` array walks it with a stride of ``h * w``
    (about 5x slower on the network's grid); here each class plane is compared whole with the running
    maximum. A later class wins only when strictly greater, so ties go to the lower id as with
    ``np.argmax``. A NaN score (``np.argmax`` takes the first NaN) falls back to ``np.argmax``.
    """
    best = logits[0].copy()
    out.fill(0)
    gt = np.empty(best.shape, bool)
    for c in range(1, logits.shape[0]):
        np.greater(logits[c], best, out=gt)
        out[gt] = c
        np.maximum(best, logits[c], out=best)
    if np.isnan(best).any():  # np.maximum carries a NaN through: only then
        np.copyto(out, np.argmax(logits, axis=0), casting="unsafe")
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities ``float32[C, h, w]`` from scores ``float32[C, h, w]`` (new array)."""
    check_logits(logits)
    e = logits.astype(np.float32, copy=True)
    e -= e.max(axis=0, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=0, keepdims=True)
    return e
