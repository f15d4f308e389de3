from __future__ import annotations

import pytest

from tests.conftest import CAMVID
from tests.sources.drives.bags import test_frames


@pytest.fixture(scope="session")
def images():
    """Eight distinct 96x72 BGR frames: CamVid val images when ../shared is present, generated otherwise."""
    return test_frames(8, CAMVID if (CAMVID / "val").is_dir() else None, size=(96, 72))


@pytest.fixture(scope="session")
def small_images():
    """Eight distinct 64x48 frames (a second camera of another size)."""
    return test_frames(8, CAMVID if (CAMVID / "val").is_dir() else None, size=(64, 48))
