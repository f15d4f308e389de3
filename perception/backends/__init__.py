"""Inference backends behind one protocol; :func:`open_backend` is the one format switch."""

from perception.backends.base import Backend
from perception.backends.factory import BACKEND_KINDS, open_backend, select_backend_kind
from perception.backends.preprocess import Preprocessor

__all__ = ["BACKEND_KINDS", "Backend", "Preprocessor", "open_backend", "select_backend_kind"]
