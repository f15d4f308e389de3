"""Pixel conversions of recorded images (pure functions)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.errors import DataError
from perception.sources.drives.decode import ImageMessage, decode_image


def _image(h: int = 6, w: int = 8) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_padded_rows_are_cropped_and_input_untouched():
    img = _image()
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    padded = np.zeros((6, 8 * 3 + 8), np.uint8)
    padded[:, : 8 * 3] = rgb.reshape(6, -1)
    data = padded.tobytes()
    msg = ImageMessage(kind="raw", encoding="rgb8", data=data, stamp_ns=1, width=8, height=6, step=32)
    out = np.empty_like(img)
    got = decode_image(msg, out=out)
    assert got is out
    assert np.array_equal(got, img)
    assert data == padded.tobytes()


def test_last_row_may_omit_its_padding():
    img = _image()
    padded = np.zeros((6, 30), np.uint8)
    padded[:, :24] = img.reshape(6, -1)
    data = padded.tobytes()[:-6]
    msg = ImageMessage(kind="raw", encoding="bgr8", data=data, stamp_ns=1, width=8, height=6, step=30)
    assert np.array_equal(decode_image(msg), img)


def test_mono16_big_endian_uses_the_top_byte():
    grey = np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000
    msg = ImageMessage(kind="raw", encoding="mono16", data=grey.astype(">u2").tobytes(), stamp_ns=1,
                       width=8, height=6, step=16, is_bigendian=True)
    got = decode_image(msg)
    assert np.array_equal(got[..., 1], (grey >> 8).astype(np.uint8))


@pytest.mark.parametrize("msg,match", [
    (ImageMessage(kind="raw", encoding="rgb8", data=bytes(10), stamp_ns=0, width=8, height=6, step=24), "truncated"),
    (ImageMessage(kind="raw", encoding="rgb8", data=bytes(144), stamp_ns=0, width=8, height=6, step=10), "shorter"),
    (ImageMessage(kind="raw", encoding="yuv422", data=bytes(60), stamp_ns=0, width=5, height=6, step=10), "even"),
    (ImageMessage(kind="raw", encoding="32FC1", data=bytes(192), stamp_ns=0, width=8, height=6, step=32),
     "unsupported"),
    (ImageMessage(kind="raw", encoding="rgb8", data=b"", stamp_ns=0, width=0, height=0), "bad size"),
    (ImageMessage(kind="compressed", encoding="jpeg", data=b"not a jpeg", stamp_ns=0), "cannot decode"),
    (ImageMessage(kind="compressed", encoding="16UC1; compressedDepth png", data=b"x", stamp_ns=0), "depth"),
    (ImageMessage(kind="compressed", encoding="png", data=b"", stamp_ns=0), "empty"),
])
def test_bad_images_are_data_errors(msg, match):
    with pytest.raises(DataError, match=match):
        decode_image(msg)
