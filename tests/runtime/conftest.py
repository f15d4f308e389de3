"""Models the runtime tests share: tiny real ONNX models, made once per session."""

from __future__ import annotations

import pytest

from tests.tinymodel import make_tiny_model


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """A tiny panoptic model (64x48 input, dynamic sizes)."""
    return make_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def heavy_model(tmp_path_factory):
    """Real but deliberately slow (~50 ms a frame at 320x240): slower than the sources that feed it."""
    return make_tiny_model(tmp_path_factory.mktemp("heavy"), heavy_layers=4, input_size=(320, 240))
