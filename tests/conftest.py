"""Shared fixtures. Tests use real processes, real sockets on 127.0.0.1 and real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sources.drives.bags import test_frames

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CAMVID = SHARED_DATA / "camvid"
DASHCAM = SHARED_DATA / "video" / "solidWhiteRight.mp4"


@pytest.fixture(scope="session")
def camvid_dir() -> Path:
    if not (CAMVID / "val").is_dir():
        pytest.skip("../shared/data/camvid is absent")
    return CAMVID


@pytest.fixture(scope="session")
def dashcam_video() -> Path:
    if not DASHCAM.is_file():
        pytest.skip("../shared/data/video/solidWhiteRight.mp4 is absent")
    return DASHCAM

@pytest.fixture(scope="session")
def images():
    """Eight distinct 96x72 BGR frames: CamVid val images when ../shared is present, generated otherwise."""
    return test_frames(8, CAMVID if (CAMVID / "val").is_dir() else None, size=(96, 72))


@pytest.fixture(scope="session")
def small_images():
    """Eight distinct 64x48 frames (a second camera of another size)."""
    return test_frames(8, CAMVID if (CAMVID / "val").is_dir() else None, size=(64, 48))
