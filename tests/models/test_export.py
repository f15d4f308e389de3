"""ONNX export: names, dynamic N/H/W, BN folded, ONNX Runtime matches PyTorch; the model card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from perception.modelcard import load_card, save_card  # noqa: E402
from perception.models.export import (  # noqa: E402
    CAMVID_TRAINING_PROVENANCE,
    OUTPUT_NAMES,
    build_card,
    export_onnx,
    label_agreement,
    onnx_session,
)


@pytest.fixture(scope="module")
def exported(random_net, tmp_path_factory) -> Path:
    return export_onnx(random_net, tmp_path_factory.mktemp("onnx") / "tiny.onnx", example_size=(96, 64))


def test_graph_has_named_dynamic_io_and_no_batchnorm(exported: Path) -> None:
    proto = onnx.load(str(exported))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]  # N, 3, H, W
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"]


@pytest.mark.parametrize("n,h,w", [(1, 64, 96), (2, 96, 128)])
def test_onnxruntime_matches_pytorch_at_other_sizes(random_net, exported: Path, n: int, h: int, w: int) -> None:
    x = np.random.default_rng(1).standard_normal((n, 3, h, w)).astype(np.float32)
    got = onnx_session(exported).run(None, {"image": x})
    with torch.no_grad():
        ref = [t.numpy() for t in random_net(torch.from_numpy(x))]
    for g, r, c in zip(got, ref, (11, 1, 2)):
        assert g.shape == (n, c, h // 4, w // 4)
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-3)


def test_export_rejects_sizes_not_multiple_of_32(random_net, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        export_onnx(random_net, tmp_path / "x.onnx", example_size=(100, 64))


def test_card_round_trips_and_describes_the_outputs(tmp_path: Path) -> None:
    card = build_card(input_size=(480, 352), training=dict(CAMVID_TRAINING_PROVENANCE),
                      metrics={"camvid_val_miou": 0.5})
    path = save_card(card, tmp_path / "m.onnx")
    assert path.name == "m.card.json"
    back = load_card(tmp_path / "m.onnx")
    assert back == card
    assert back.input_size == (480, 352) and back.input.dynamic_size and back.input.dynamic_batch
    assert back.input.color_order == "RGB" and back.ignore_index == 11
    assert back.thing_ids() == (8, 9, 10)
    assert back.output("center_offsets").order == "yx"
    assert {o.stride for o in back.outputs} == {4}
    assert "CC BY-NC 4.0" in back.training["terms"]


def test_label_agreement_on_synthetic_images(random_net, exported: Path) -> None:
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (72, 100, 3), dtype=np.uint8) for _ in range(2)]
    r = label_agreement(random_net, exported, imgs, input_size=(96, 64))
    assert r["pixels"] == 2 * 72 * 100
    assert r["agreement"] >= 0.999


def test_fp16_copy_keeps_float32_io_and_agrees(exported: Path, tmp_path: Path) -> None:
    from perception.models.export import convert_to_fp16, onnx_precision

    fp16 = convert_to_fp16(exported, tmp_path / "tiny_fp16.onnx")
    assert onnx_precision(fp16) == "fp16" and onnx_precision(exported) == "fp32"
    assert fp16.stat().st_size < 0.6 * exported.stat().st_size
    proto = onnx.load(str(fp16))
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [onnx.TensorProto.FLOAT]
    assert {o.type.tensor_type.elem_type for o in proto.graph.output} == {onnx.TensorProto.FLOAT}
    x = np.random.default_rng(4).standard_normal((1, 3, 64, 96)).astype(np.float32)
    ref = onnx_session(exported).run(None, {"image": x})
    got = onnx_session(fp16).run(None, {"image": x})
    for g, r in zip(got, ref):
        assert g.dtype == np.float32 and g.shape == r.shape
    assert (got[0].argmax(1) == ref[0].argmax(1)).mean() >= 0.99
