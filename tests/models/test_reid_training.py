"""Re-id training: crops from generated sequences, a short real training run, ONNX export that the
embedder opens and that agrees with PyTorch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perception.models.reid import (
    ReIdTrainConfig,
    embedding_agreement,
    export_reid_onnx,
    generate_crops,
    seeds_arg,
    train_reid,
)
from perception.tracking.reid import ReIdEmbedder

REPO = Path(__file__).resolve().parents[2]


def test_crops_are_labelled_by_sequence_and_object():
    cfg = ReIdTrainConfig(seeds=(1000, 1001), frames=20, step=5)
    crops, labels = generate_crops(cfg)
    assert crops.dtype == np.uint8 and crops.shape[1:] == (32, 32, 4) and len(crops) == len(labels) > 10
    assert {int(v) // 1000 for v in labels} == {1000, 1001}  # seed * 1000 + object id
    assert (crops[..., 3].reshape(len(crops), -1).max(1) == 255).all()  # every crop holds its mask
    done = []
    crops2, labels2 = generate_crops(cfg, jobs=2, progress=done.append)  # worker processes: same crops, same order
    assert np.array_equal(crops2, crops) and np.array_equal(labels2, labels) and done == [1, 1]


def test_training_lowers_the_loss_and_the_export_agrees_with_pytorch(tmp_path):
    cfg = ReIdTrainConfig(seeds=(1002,), frames=30, step=3, epochs=3, batch=32, dim=16)
    crops, labels = generate_crops(cfg)
    losses = []
    net = train_reid(crops, labels, cfg, progress=lambda n, loss: losses.append(loss))
    k = max(1, len(losses) // 4)
    assert np.mean(losses[-k:]) < np.mean(losses[:k])
    path = export_reid_onnx(net, tmp_path / "reid.onnx", size=cfg.size)
    assert embedding_agreement(net, path, crops[:16]) < 1e-4
    emb = ReIdEmbedder(model=path)
    assert (emb.size, emb.dim) == (32, 16)


def test_seed_ranges_and_the_tool_refuses_evaluation_seeds():
    assert seeds_arg("1000-1002,1005") == (1000, 1001, 1002, 1005)
    r = subprocess.run([sys.executable, str(REPO / "tools" / "train_reid.py"), "--seeds", "10-20"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "evaluation" in r.stderr
    with pytest.raises(ValueError, match="at least 2 crops"):
        train_reid(np.zeros((1, 32, 32, 4), np.uint8), np.zeros(1, np.int64), ReIdTrainConfig())
