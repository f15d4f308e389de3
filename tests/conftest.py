"""Shared fixtures. Tests use real processes, real sockets on 127.0.0.1 and real files."""

from __future__ import annotations

from pathlib import Path

import pytest

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
