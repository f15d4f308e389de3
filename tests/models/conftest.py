"""Fixtures for the model tests: torch is optional (tests skip without it); networks are built once."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on the shared CPU (see tools/train.py)
torch = pytest.importorskip("torch")


@pytest.fixture(scope="session")
def pretrained_net():
    """The default network with the ImageNet encoder (weights loaded once per session), eval mode."""
    from perception.models.network import build_network

    torch.manual_seed(0)
    return build_network(pretrained=True).eval()


@pytest.fixture(scope="session")
def random_net():
    """The default network with a random (seeded) encoder: no weight file needed."""
    from perception.models.network import build_network

    torch.manual_seed(0)
    return build_network(pretrained=False).eval()
