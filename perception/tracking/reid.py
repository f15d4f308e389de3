"""Learned re-identification embeddings of instances, run by ONNX Runtime on the CPU.

A colour histogram (:mod:`perception.tracking.appearance`) ignores where each colour lies and shares
the colours every object of a class has (car glass, tyres, skin). A small convolutional network that
sees each instance's crop and mask learns which of them tell objects apart. Its embeddings are
non-negative and of unit length, so the dot product of two lies in ``[0, 1]`` like the
Bhattacharyya coefficient of two colour embeddings, and a track's running embedding is blended the
same way (:func:`perception.tracking.appearance.blend_embeddings` keeps such vectors of unit length).

Model contract (checked when the model is opened): one input ``crops`` float32 ``[N, 4, S, S]``
(``N`` dynamic): the BGR crop of each instance's box, resized to ``S x S``, and its mask, all scaled to
``[0, 1]``; one output float32 ``[N, D]``. The bundled model ``engines/sim_reid.onnx`` is trained by
``tools/train_reid.py`` on generated sequences (:mod:`perception.sim`) whose seeds the evaluation
never uses; it knows the generated scenes' objects, not real ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from perception.errors import BackendError, DataError
from perception.paths import DATA_ROOT
from perception.types import Instance

__all__ = ["DEFAULT_REID_MODEL", "INPUT_NAME", "ReIdEmbedder", "crop_instances"]

INPUT_NAME = "crops"
DEFAULT_REID_MODEL = DATA_ROOT / "engines" / "sim_reid.onnx"


def crop_instances(
    image: np.ndarray, instance_map: np.ndarray, instances: Sequence[Instance], *, size: int, out: np.ndarray
) -> np.ndarray:
    """Write each instance's box crop (BGR) and mask, resized to ``size x size``, into ``out``.

    Args:
        image: ``uint8[H, W, 3]`` the frame.
        instance_map: ``uint16[H, W]`` instance ids (``Instance.index``).
        instances: the instances to crop, in this order.
        size: side of the square crops.
        out: ``uint8[>=M, size, size, 4]`` buffer (reused across frames by the caller); rows of
            instances whose box has no pixel in the frame are zero.

    Returns:
        ``out[:M]``.
    """
    h, w = instance_map.shape
    res = out[: len(instances)]
    for k, inst in enumerate(instances):  # one resize per instance: a few dozen per frame at most
        x0, y0, x1, y1 = inst.box
        x0, y0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        x1, y1 = min(int(np.ceil(x1)), w), min(int(np.ceil(y1)), h)
        if x1 <= x0 or y1 <= y0:
            res[k] = 0
            continue
        mask = (instance_map[y0:y1, x0:x1] == inst.index).view(np.uint8) * np.uint8(255)
        res[k, :, :, :3] = cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)
        res[k, :, :, 3] = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    return res


class ReIdEmbedder:
    """Embeds a frame's instances with a re-id network (ONNX Runtime, CPU).

    Args:
        model: path of the ONNX model (see the module docstring for its contract).
        threads: intra-op threads of the ONNX Runtime session.
        max_instances: crops buffer size; frames with more instances grow it once.

    Raises:
        BackendError: the model is missing, is not ONNX, or does not follow the contract.
    """

    def __init__(self, *, model: Path | str = DEFAULT_REID_MODEL, threads: int = 1, max_instances: int = 64) -> None:
        import onnxruntime as ort

        self.model = Path(model)
        if not self.model.is_file():
            raise BackendError(f"re-id model {self.model} does not exist (train one with tools/train_reid.py)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(self.model), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"re-id model {self.model} could not be loaded: {exc}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        if (
            shape is None
            or inputs[0].name != INPUT_NAME
            or len(shape) != 4
            or shape[1] != 4
            or not isinstance(shape[2], int)
            or shape[2] != shape[3]
            or len(outputs) != 1
            or len(outputs[0].shape) != 2
            or not isinstance(outputs[0].shape[1], int)
        ):
            raise BackendError(
                f"re-id model {self.model}: expected one input {INPUT_NAME!r} float32[N, 4, S, S] and one output "
                f"float32[N, D], got inputs {[(i.name, i.shape) for i in inputs]}, outputs "
                f"{[(o.name, o.shape) for o in outputs]}"
            )
        self.size = int(shape[2])
        self.dim = int(outputs[0].shape[1])
        self._output = outputs[0].name
        self._crops = np.zeros((max_instances, self.size, self.size, 4), np.uint8)
        self._input = np.zeros((max_instances, 4, self.size, self.size), np.float32)

    def __call__(self, image: np.ndarray, instance_map: np.ndarray, instances: Sequence[Instance]) -> np.ndarray:
        """Embeddings ``float32[M, D]`` (non-negative, unit length) of ``instances`` in this frame."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"ReIdEmbedder: image must be uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
        if instance_map.shape != image.shape[:2]:
            raise DataError(f"ReIdEmbedder: instance map {instance_map.shape} and image {image.shape[:2]} differ")
        m = len(instances)
        if m == 0:
            return np.zeros((0, self.dim), np.float32)
        if m > self._crops.shape[0]:
            self._crops = np.zeros((m, self.size, self.size, 4), np.uint8)
            self._input = np.zeros((m, 4, self.size, self.size), np.float32)
        crops = crop_instances(image, instance_map, instances, size=self.size, out=self._crops)
        x = self._input[:m]
        np.multiply(crops.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=x)
        emb = self._session.run([self._output], {INPUT_NAME: x})[0]
        # the model ends in ReLU + L2 normalisation; enforce it for any model that follows the contract
        np.maximum(emb, 0.0, out=emb)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb.astype(np.float32, copy=False)
