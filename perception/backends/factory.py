"""The one place that picks a backend: ``onnxruntime``, ``tensorrt`` or ``auto``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from perception.backends.base import Backend
from perception.errors import BackendError
from perception.modelcard import load_card

log = logging.getLogger(__name__)

BackendKind = Literal["auto", "onnxruntime", "tensorrt"]
BACKEND_KINDS: tuple[str, ...] = ("auto", "onnxruntime", "tensorrt")


def select_backend_kind(kind: str) -> tuple[str, str]:
    """Resolve ``auto``: TensorRT when a GPU and tensorrt are usable, else ONNX Runtime.

    Returns ``(kind, reason)``; the reason is logged so the choice is never silent.
    """
    if kind not in BACKEND_KINDS:
        raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}")
    if kind != "auto":
        return kind, "asked for"
    try:
        from perception.backends.tensorrt import available
    except ImportError:
        return "onnxruntime", "TensorRT support is not part of this installation"
    ok, why = available()
    if ok:
        return "tensorrt", why
    return "onnxruntime", f"TensorRT not usable: {why}"


def open_backend(
    model_path: str | Path,
    *,
    kind: str = "onnxruntime",
    threads: int | None = None,
    input_size: tuple[int, int] | None = None,
    providers: str = "auto",
    precision: str = "fp16",
    engine_cache_dir: str | Path | None = None,
) -> Backend:
    """Open ``model_path`` (an ``.onnx`` with its ``.card.json``) on the chosen runtime."""
    path = Path(model_path)
    if not path.is_file():
        raise BackendError(f"model file not found: {path} (check the 'model' setting or --model)")
    card = load_card(path)
    chosen, why = select_backend_kind(kind)
    log.info("backend: %s (%s)", chosen, why)
    if chosen == "tensorrt":
        from perception.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(
            model_path=path,
            card=card,
            engine_cache_dir=engine_cache_dir,
            precision=precision,
            input_size=input_size,
        )
    from perception.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model_path=path, card=card, threads=threads, providers=providers, input_size=input_size)
