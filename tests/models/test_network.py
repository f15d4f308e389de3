"""Network output shapes and strides, BatchNorm folding, and "SAME" padding at non-224 sizes."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from perception.models.network import OUTPUT_STRIDE, fold_batchnorm  # noqa: E402


@pytest.mark.parametrize("h,w", [(64, 96), (96, 64), (128, 160)])
def test_outputs_at_quarter_resolution(random_net, h: int, w: int) -> None:
    with torch.no_grad():
        sem, heat, off = random_net(torch.randn(2, 3, h, w))
    assert sem.shape == (2, 11, h // OUTPUT_STRIDE, w // OUTPUT_STRIDE)
    assert heat.shape == (2, 1, h // 4, w // 4)
    assert off.shape == (2, 2, h // 4, w // 4)
    assert sem.dtype == torch.float32


def test_encoder_taps_have_expected_strides_and_channels(pretrained_net) -> None:
    with torch.no_grad():
        feats = pretrained_net.encoder(torch.randn(1, 3, 96, 128))
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 24, 32), (40, 12, 16), (112, 6, 8), (320, 3, 4)]


def test_native_padding_matches_wheel_same_padding() -> None:
    """Our encoder (native symmetric padding) equals the wheel's own blocks (static TF "SAME" padding)."""
    from efficientnet_lite_pytorch import EfficientNet

    from perception.models.network import Lite0Encoder

    torch.manual_seed(0)
    wheel = EfficientNet.from_name("efficientnet-lite0").eval()
    ours = Lite0Encoder(pretrained=False, drop_connect_rate=0.0, wheel=wheel).eval()
    assert sum(type(m) is torch.nn.Conv2d for m in ours.modules()) > 30  # most convs now native
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        y = wheel._swish(wheel._bn0(wheel._conv_stem(x)))
        taps = []
        for i, block in enumerate(wheel._blocks[:16]):
            y = block(y)
            if i in (2, 4, 10, 15):
                taps.append(y)
        for a, b in zip(ours(x), taps):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_preserves_outputs_and_leaves_no_bn(pretrained_net) -> None:
    folded = fold_batchnorm(copy.deepcopy(pretrained_net))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(pretrained_net(x), folded(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
