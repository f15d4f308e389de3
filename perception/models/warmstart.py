"""Rebuild a trainable network from a shipped ONNX model (its BatchNorm folded away), to fine-tune it.

The bundled models ship as ONNX only: every BatchNorm was folded into the convolution before it
(:func:`~perception.models.network.fold_batchnorm`), and the initializers keep the PyTorch parameter
names. :func:`network_from_onnx` builds the unfolded network and sets each conv/BatchNorm pair so
that ``bn(conv(x))`` equals the folded conv exactly: the conv gets the folded weight, the BatchNorm
mean 0, variance ``1 - eps`` (so it divides by 1), scale 1 and the folded bias as its shift. The
network in eval mode then gives the ONNX model's outputs (to float rounding), and fine-tuning can
start from it. Its BatchNorm statistics carry no information about the data any more: train it with
every BatchNorm in eval mode (:func:`freeze_batchnorm`), learning only the affine parameters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from perception.errors import BackendError
from perception.models.network import NetworkConfig, PanopticLite0, build_network, conv_bn_pairs


def onnx_initializers(path: str | Path) -> dict[str, np.ndarray]:
    """The named initializers of an ONNX file, as arrays. Raises BackendError if it cannot be read."""
    import onnx
    from onnx import numpy_helper

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise BackendError(f"cannot read ONNX model {path}: {exc}") from exc
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def network_from_onnx(path: str | Path, *, config: NetworkConfig | None = None) -> PanopticLite0:
    """The network of ``path`` (an export of :class:`PanopticLite0` with ``config``), unfolded, in eval mode.

    Raises:
        BackendError: the file lacks a parameter the network needs or has one of another shape (a model
            of another architecture or width).
    """
    weights = onnx_initializers(path)
    model = build_network(pretrained=False, config=config or NetworkConfig())
    modules = dict(model.named_modules())
    pairs = conv_bn_pairs(model)
    folded_bn = set()
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = modules[conv_name], modules[bn_name]
            _copy(conv.weight, weights, f"{conv_name}.weight", path)
            bias = torch.from_numpy(_array(weights, f"{conv_name}.bias", (bn.num_features,), path))
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            folded_bn.update((f"{bn_name}.weight", f"{bn_name}.bias", f"{bn_name}.running_mean",
                              f"{bn_name}.running_var", f"{bn_name}.num_batches_tracked"))
        paired_convs = {c for c, _ in pairs}
        for name, param in model.named_parameters():
            owner = name.rsplit(".", 1)[0]
            if name in folded_bn or owner in paired_convs:
                continue
            _copy(param, weights, name, path)
    return model.eval()


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Put every BatchNorm of ``model`` in eval mode (statistics fixed; scale and shift still learn)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    return model


def _array(weights: dict[str, np.ndarray], name: str, shape: tuple[int, ...], path: str | Path) -> np.ndarray:
    arr = weights.get(name)
    if arr is None:
        raise BackendError(f"{path}: no initializer {name!r}: not an export of this network")
    if tuple(arr.shape) != tuple(shape):
        raise BackendError(f"{path}: {name} has shape {list(arr.shape)}, the network expects {list(shape)}")
    return np.array(arr, dtype=np.float32, copy=True)


def _copy(dst: torch.Tensor, weights: dict[str, np.ndarray], name: str, path: str | Path) -> None:
    dst.copy_(torch.from_numpy(_array(weights, name, tuple(dst.shape), path)))
