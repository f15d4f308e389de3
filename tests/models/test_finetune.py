"""Fine-tuning from a shipped model: the ONNX export rebuilt as a trainable network, Penn-Fudan labelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from perception.errors import BackendError  # noqa: E402
from perception.models.data import IGNORE_INDEX  # noqa: E402
from perception.models.export import export_onnx  # noqa: E402
from perception.models.network import NetworkConfig, conv_bn_pairs  # noqa: E402
from perception.models.pennfudan import hold_out, label_image, person_instances  # noqa: E402
from perception.models.warmstart import freeze_batchnorm, network_from_onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "engines" / "camvid_lite0_panoptic.onnx"


def _ort(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})


def test_bundled_model_rebuilt_gives_its_outputs() -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 128)).astype(np.float32)
    model = network_from_onnx(BUNDLED)
    with torch.no_grad():
        ours = [t.numpy() for t in model(torch.from_numpy(x))]
    for a, b in zip(_ort(BUNDLED, x), ours):
        np.testing.assert_allclose(b, a, atol=2e-4 * max(1.0, float(np.abs(a).max())))
    assert (ours[0].argmax(1) == _ort(BUNDLED, x)[0].argmax(1)).mean() > 0.999


def test_export_then_rebuild_is_the_same_function(random_net, tmp_path: Path) -> None:
    """Real BatchNorm statistics survive fold (export) and unfold (rebuild)."""
    import copy

    net = copy.deepcopy(random_net)
    gen = torch.Generator().manual_seed(1)
    for _, bn_name in conv_bn_pairs(net):
        bn = dict(net.named_modules())[bn_name]
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
        bn.weight.data.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
    path = export_onnx(net.eval(), tmp_path / "m.onnx", example_size=(64, 64))
    rebuilt = network_from_onnx(path)
    x = torch.randn(1, 3, 64, 96, generator=gen)
    with torch.no_grad():
        for a, b in zip(net(x), rebuilt(x)):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_rebuild_refuses_another_network(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"lat4\.0\.weight has shape \[64, 24, 1, 1\], the network expects \[32"):
        network_from_onnx(BUNDLED, config=NetworkConfig(head_channels=32))
    proto = onnx.load(str(BUNDLED))
    keep = [t for t in proto.graph.initializer if t.name != "center.weight"]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    onnx.save(proto, str(tmp_path / "cut.onnx"))
    with pytest.raises(BackendError, match=r"no initializer 'center\.weight'"):
        network_from_onnx(tmp_path / "cut.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(BackendError, match="cannot read ONNX model"):
        network_from_onnx(tmp_path / "junk.onnx")


def test_frozen_batchnorm_keeps_statistics_while_training() -> None:
    model = network_from_onnx(BUNDLED)
    model.train()
    freeze_batchnorm(model)
    bn = model.lat4[1]
    before = bn.running_var.clone()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(bn.running_var, before)
    assert model.training and not bn.training and bn.weight.requires_grad


def test_pennfudan_labels_persons_and_trusts_the_teacher_only_where_sure() -> None:
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[5:35, 5:15] = 1
    mask[5:35, 30:40] = 3  # ids need not be consecutive
    classes = np.full((40, 60), 3, dtype=np.uint8)  # road
    classes[:, 45:] = 8  # the teacher sees a car (or part of an unmasked person) on the right
    classes[:, 20:25] = 1  # building
    conf = np.full((40, 60), 0.95, dtype=np.float32)
    conf[:, 20:22] = 0.5  # unsure there

    def teacher(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert image.shape == (40, 60, 3)
        return classes, conf

    labels, inst, cls = label_image(np.zeros((40, 60, 3), np.uint8), mask, teacher, min_confidence=0.8)
    assert cls == (9, 9)
    assert (labels[mask > 0] == 9).all()
    assert (labels[:, 45:] == IGNORE_INDEX).all()  # things outside the masks: ignored
    assert (labels[:, 20:22] == IGNORE_INDEX).all() and (labels[:, 22:25] == 1).all()
    assert (labels[0, :5] == 3).all()
    np.testing.assert_array_equal(np.unique(inst), [0, 1, 2])
    assert (inst[mask == 3] == 2).all()
    no_teacher, _, _ = label_image(np.zeros((40, 60, 3), np.uint8), mask, None, min_confidence=0.8)
    assert set(np.unique(no_teacher)) == {9, IGNORE_INDEX}


def test_pennfudan_holdout_every_nth() -> None:
    stems = [f"s{i}" for i in range(1, 11)]
    train, held = hold_out(stems, every=4)
    assert held == ["s4", "s8"] and len(train) == 8 and not set(train) & set(held)
    assert hold_out(stems, every=0) == (stems, [])
    assert person_instances(np.array([[0, 5], [2, 5]], np.uint8))[1] == 2
