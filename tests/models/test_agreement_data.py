"""ONNX Runtime vs PyTorch label agreement on real CamVid val images (needs ../shared/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from perception.models.data import load_split  # noqa: E402
from perception.models.export import export_onnx, label_agreement, load_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "checkpoints" / "camvid_lite0" / "best.pt"


@pytest.mark.data
@pytest.mark.slow
def test_onnx_matches_pytorch_on_val(camvid_dir: Path, pretrained_net, tmp_path: Path) -> None:
    """Uses the trained checkpoint when this checkout has one, else the ImageNet-initialised network."""
    model = load_checkpoint(CHECKPOINT)[0] if CHECKPOINT.is_file() else pretrained_net
    onnx_path = export_onnx(model, tmp_path / "m.onnx", example_size=(480, 352))
    val = load_split(camvid_dir, "val")
    r = label_agreement(model, onnx_path, val.images[::20], input_size=(480, 352))
    assert r["pixels"] == 6 * 360 * 480
    assert r["agreement"] >= 0.999, r
