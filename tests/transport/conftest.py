"""Fixtures for the transport tests."""

from __future__ import annotations

import pytest

from perception.types import ClassInfo
from tests.transport.helpers import CLASSES


@pytest.fixture()
def classes() -> tuple[ClassInfo, ...]:
    return CLASSES


@pytest.fixture()
def tcp_address() -> str:
    """Bind address with port 0: the publisher picks a free port (see ``Publisher.endpoint``)."""
    return "tcp://127.0.0.1:0"
