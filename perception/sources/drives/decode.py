"""Turn one recorded image message into a BGR frame.

Pure functions over a neutral :class:`ImageMessage` (the readers convert ROS ``sensor_msgs`` and
Foxglove messages into it), so the pixel conversions are tested once for every container format.
An image that cannot be converted raises :class:`~perception.errors.DataError` naming the encoding
and the cause; the drive source counts it against its topic and goes on with the next message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from perception.errors import DataError

RAW_ENCODINGS: tuple[str, ...] = (
    "bgr8", "rgb8", "bgra8", "rgba8", "mono8", "8UC1", "8UC3", "8UC4", "mono16", "16UC1",
    "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
    "yuv422", "uyvy", "yuv422_yuy2", "yuyv",
)
"""Raw encodings :func:`decode_image` converts (ROS ``sensor_msgs/image_encodings`` and Foxglove names)."""

_CHANNELS_8BIT = {"bgr8": 3, "rgb8": 3, "bgra8": 4, "rgba8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3, "8UC4": 4}
_TO_BGR = {"rgb8": cv2.COLOR_RGB2BGR, "bgra8": cv2.COLOR_BGRA2BGR, "rgba8": cv2.COLOR_RGBA2BGR,
           "mono8": cv2.COLOR_GRAY2BGR, "8UC1": cv2.COLOR_GRAY2BGR, "8UC4": cv2.COLOR_BGRA2BGR}
# OpenCV names Bayer patterns by the second row's first two pixels; this is cv_bridge's mapping.
_BAYER = {"bayer_rggb8": cv2.COLOR_BayerBG2BGR, "bayer_bggr8": cv2.COLOR_BayerRG2BGR,
          "bayer_gbrg8": cv2.COLOR_BayerGR2BGR, "bayer_grbg8": cv2.COLOR_BayerGB2BGR}
# ROS "yuv422" is UYVY byte order; "yuv422_yuy2" (and Foxglove "yuyv") is YUYV.
_YUV422 = {"yuv422": cv2.COLOR_YUV2BGR_UYVY, "uyvy": cv2.COLOR_YUV2BGR_UYVY,
           "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUY2, "yuyv": cv2.COLOR_YUV2BGR_YUY2}

MONO16_SHIFT = 8
"""16-bit grey images are shown as their top 8 bits (``value >> 8``): a fixed mapping keeps
brightness stable from frame to frame (per-frame min/max stretching flickers). Trade-off: sensors that
use only the low bits (12-bit data, depth in millimetres) come out dark."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageMessage:
    """One recorded image, independent of the container and message schema.

    ``kind == "raw"``: ``data`` holds ``height`` rows of ``step`` bytes in ``encoding``.
    ``kind == "compressed"``: ``data`` is an encoded file (JPEG, PNG) and ``encoding`` its format
    string (``"jpeg"``, ``"png"``, ``"rgb8; jpeg compressed bgr8"``); width/height/step are 0.
    """

    kind: Literal["raw", "compressed"]
    encoding: str
    data: bytes | bytearray | memoryview | np.ndarray
    stamp_ns: int
    """Header stamp (capture time written by the driver), ns since the epoch; 0 when the message has none."""
    width: int = 0
    height: int = 0
    step: int = 0
    is_bigendian: bool = False


def _rows(msg: ImageMessage, bytes_per_pixel: int) -> np.ndarray:
    """The message's pixel bytes as ``uint8[height, width * bytes_per_pixel]`` (row padding removed)."""
    if msg.width <= 0 or msg.height <= 0:
        raise DataError(f"{msg.encoding} image has a bad size {msg.width}x{msg.height}")
    row_bytes = msg.width * bytes_per_pixel
    step = msg.step or row_bytes
    if step < row_bytes:
        raise DataError(f"{msg.encoding} image row step {step} is shorter than a {msg.width}-pixel row ({row_bytes} B)")
    if isinstance(msg.data, np.ndarray):
        flat = msg.data.reshape(-1).view(np.uint8)
    else:
        flat = np.frombuffer(msg.data, np.uint8)
    needed = step * (msg.height - 1) + row_bytes
    if flat.size < needed:
        raise DataError(
            f"{msg.encoding} image {msg.width}x{msg.height} needs {needed} bytes but the message holds {flat.size} "
            f"(truncated message?)"
        )
    if step * msg.height <= flat.size:
        return flat[: step * msg.height].reshape(msg.height, step)[:, :row_bytes]
    return np.lib.stride_tricks.as_strided(flat, (msg.height, row_bytes), (step, 1))


def _dst(out: np.ndarray | None, height: int, width: int) -> np.ndarray | None:
    """``out`` when it is a ``uint8[height, width, 3]`` buffer, else None (OpenCV allocates)."""
    if out is not None and out.shape == (height, width, 3) and out.dtype == np.uint8:
        return out
    return None


def decode_image(msg: ImageMessage, *, out: np.ndarray | None = None) -> np.ndarray:
    """Convert a recorded image to ``uint8[H, W, 3]`` BGR.

    Args:
        msg: the image; ``msg.data`` is never modified.
        out: optional ``uint8[height, width, 3]`` buffer that colour conversions write into (no
            allocation); ignored when its shape does not fit, and by compressed images (OpenCV's
            decoder always allocates).

    Returns:
        ``uint8[height, width, 3]`` BGR (H, W from the message or the decoded file): ``out`` when a
        conversion wrote into it, a read-only view of ``msg.data`` for unpadded ``bgr8``, else a new array.

    Raises:
        DataError: unknown encoding, wrong size, truncated data, or an undecodable compressed file.
    """
    if msg.kind == "compressed":
        fmt = msg.encoding.lower()
        if "compresseddepth" in fmt.replace(" ", ""):
            raise DataError(f"compressed depth images ({msg.encoding!r}) are not camera frames; not supported")
        buf = np.frombuffer(msg.data, np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data.reshape(-1)
        if buf.size == 0:
            raise DataError(f"empty {msg.encoding or 'compressed'} image")
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"cannot decode a {len(buf)}-byte {msg.encoding or 'compressed'!r} image (corrupt or "
                            "unknown format)")
        return image

    enc = msg.encoding
    if enc in _CHANNELS_8BIT:
        channels = _CHANNELS_8BIT[enc]
        rows = _rows(msg, channels)
        pixels = rows.reshape(msg.height, msg.width, channels) if channels > 1 else rows
        if enc in ("bgr8", "8UC3"):
            if pixels.flags.c_contiguous:
                return pixels
            dst = _dst(out, msg.height, msg.width)
            if dst is None:
                return np.ascontiguousarray(pixels)
            np.copyto(dst, pixels)
            return dst
        return cv2.cvtColor(np.ascontiguousarray(pixels), _TO_BGR[enc], dst=_dst(out, msg.height, msg.width))
    if enc in ("mono16", "16UC1"):
        rows = _rows(msg, 2)
        grey16 = np.ascontiguousarray(rows).view(">u2" if msg.is_bigendian else "<u2")
        grey8 = (grey16 >> MONO16_SHIFT).astype(np.uint8)
        return cv2.cvtColor(grey8, cv2.COLOR_GRAY2BGR, dst=_dst(out, msg.height, msg.width))
    if enc in _BAYER:
        return cv2.cvtColor(np.ascontiguousarray(_rows(msg, 1)), _BAYER[enc], dst=_dst(out, msg.height, msg.width))
    if enc in _YUV422:
        if msg.width % 2:
            raise DataError(f"{enc} image width must be even, got {msg.width}")
        packed = np.ascontiguousarray(_rows(msg, 2)).reshape(msg.height, msg.width, 2)
        return cv2.cvtColor(packed, _YUV422[enc], dst=_dst(out, msg.height, msg.width))
    raise DataError(f"unsupported image encoding {enc!r}; supported: {', '.join(RAW_ENCODINGS)}, or jpeg/png")
