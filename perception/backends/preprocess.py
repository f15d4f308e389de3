"""Frame → network input: resize, colour order, normalisation, HWC → CHW. One reused buffer."""

from __future__ import annotations

import cv2
import numpy as np

from perception.backends.base import resolve_input_size
from perception.modelcard import ModelCard


class Preprocessor:
    """Turns a BGR ``uint8[H, W, 3]`` frame into the model's ``float32[1, 3, h, w]`` input.

    ``x = (pixel / 255 - mean) / std`` per channel, in the card's colour order. Resizing uses
    ``cv2.INTER_AREA`` when shrinking by more than 1.5× (anti-aliased, as a camera's downscaler would)
    and ``cv2.INTER_LINEAR`` otherwise. The returned array is an internal buffer that the next call
    overwrites: copy it if you keep it.
    """

    def __init__(self, *, card: ModelCard, input_size: tuple[int, int] | None = None) -> None:
        self.card = card
        self.width, self.height = resolve_input_size(card, input_size)
        inp = card.input
        std = np.asarray(inp.std, dtype=np.float32)
        mean = np.asarray(inp.mean, dtype=np.float32)
        # channel c of the output takes source channel _order[c] of the BGR frame
        self._order = (2, 1, 0) if inp.color_order == "RGB" else (0, 1, 2)
        self._scale = (1.0 / (255.0 * std)).reshape(3, 1, 1)
        self._offset = (-mean / std).reshape(3, 1, 1)
        self._out = np.empty((1, 3, self.height, self.width), dtype=np.float32)
        self._resized = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self._batches: dict[int, np.ndarray] = {}

    @property
    def input_size(self) -> tuple[int, int]:
        return self.width, self.height

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray:
        self.fill(frame_bgr, self._out[0])
        return self._out

    def batch(self, frames) -> np.ndarray:
        """Several frames → ``float32[n, 3, h, w]``, each row as :meth:`__call__` makes it (a buffer per
        batch size, reused)."""
        n = len(frames)
        buf = self._batches.get(n)
        if buf is None:
            buf = self._batches[n] = np.empty((n, 3, self.height, self.width), dtype=np.float32)
        for row, frame in zip(buf, frames):
            self.fill(frame, row)
        return buf

    def fill(self, frame_bgr: np.ndarray, out: np.ndarray) -> None:
        """Write one frame's network input into ``out`` (``float32[3, h, w]``, e.g. a row of a batch)."""
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8[H, W, 3] frame, got {frame_bgr.dtype}{list(frame_bgr.shape)}")
        fh, fw = frame_bgr.shape[:2]
        if (fw, fh) == (self.width, self.height):
            resized = frame_bgr
        else:
            shrink = max(fw / self.width, fh / self.height)
            interp = cv2.INTER_AREA if shrink > 1.5 else cv2.INTER_LINEAR
            resized = cv2.resize(frame_bgr, (self.width, self.height), dst=self._resized, interpolation=interp)
        chw = resized.transpose(2, 0, 1)[list(self._order)]  # small uint8 gather, [3, h, w]
        np.multiply(chw, self._scale, out=out, casting="unsafe")
        out += self._offset
