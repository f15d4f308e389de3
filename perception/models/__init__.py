"""perception.models: the default panoptic network, its training pieces, ONNX export and model card.

Training and export only; the runtime never imports this package's torch modules.

* ``network``  - EfficientNet-Lite0 + FPN decoder + semantic / centre / offset heads (torch)
* ``targets``  - instance targets from semantic labels via connected components (numpy)
* ``data``     - CamVid split loading, augmentation, batching (numpy + OpenCV)
* ``training`` - losses, val mIoU, checkpoints (torch)
* ``export``   - ONNX export, model card, ONNX-vs-PyTorch agreement, ONNX val mIoU (torch + onnx)

Entry points: ``tools/train.py``, ``tools/export_onnx.py``, ``tools/bench_backend.py``.
"""
