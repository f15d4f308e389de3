"""Training and ONNX export of the re-identification network (:mod:`perception.tracking.reid`).

Data: generated sequences (:mod:`perception.sim`) with the detector simulator's perturbed masks, so
the network learns from the same kind of partial, jittered views the tracker gets; every detection
of a ground-truth object on every ``step``-th frame gives a crop labelled with the object's identity
(``seed * 1000 + object id``; false positives are left out). Loss: softmax cross-entropy over the
identities on cosine similarities with an additive margin (CosFace, Wang et al. 2018), so that the
embeddings themselves, not a classifier, separate identities. No horizontal flips: generated objects
never turn round, and which way one faces is part of what tells it apart.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from perception.tracking.reid import INPUT_NAME, crop_instances

__all__ = ["ReIdNet", "ReIdTrainConfig", "export_reid_onnx", "generate_crops", "train_reid"]

OUTPUT_NAME = "embedding"


class ReIdNet(nn.Module):
    """Five 3x3 conv-BN-ReLU blocks (stride 8 in all), mean and max pooling, a linear layer, ReLU, L2 norm."""

    def __init__(self, *, dim: int = 64, width: int = 32) -> None:
        super().__init__()

        def block(i: int, o: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

        w = width
        self.features = nn.Sequential(
            block(4, w, 1), block(w, w, 2), block(w, 2 * w, 1), block(2 * w, 2 * w, 2), block(2 * w, 4 * w, 2)
        )
        self.head = nn.Linear(8 * w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)
        return F.normalize(F.relu(self.head(pooled)), dim=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReIdTrainConfig:
    seeds: tuple[int, ...] = tuple(range(1000, 1060))
    """Generated sequences to learn from (the evaluation's seeds are 0-319: keep clear of them)."""
    frames: int = 300
    step: int = 2
    """Every ``step``-th frame gives crops (neighbouring frames look almost alike)."""
    size: int = 32
    dim: int = 64
    epochs: int = 8
    batch: int = 256
    lr: float = 3e-3
    margin: float = 0.2
    scale: float = 16.0
    threads: int = 2
    seed: int = 0


def _sequence_crops(seed: int, frames: int, step: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    from perception.sim import SceneConfig, SceneSequence
    from perception.sim.detector import DetectorSimulator

    scene = SceneSequence(config=SceneConfig(num_frames=frames, seed=seed))
    detector = DetectorSimulator(seed=seed)
    crops, labels = [], []
    buf = np.zeros((64, size, size, 4), np.uint8)
    for i in range(len(scene)):
        frame = scene.frame(i)
        det = detector(frame)  # every frame: the detector's random stream stays the evaluation's
        if i % step:
            continue
        keep = [k for k, g in enumerate(det.gt_ids) if g]
        if not keep:
            continue
        if len(keep) > buf.shape[0]:
            buf = np.zeros((len(keep), size, size, 4), np.uint8)
        inst = [det.instances[k] for k in keep]
        crops.append(crop_instances(frame.image, det.instance_map, inst, size=size, out=buf).copy())
        labels += [seed * 1000 + det.gt_ids[k] for k in keep]
    if not crops:
        return np.zeros((0, size, size, 4), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(crops), np.asarray(labels, np.int64)


def generate_crops(
    config: ReIdTrainConfig, *, jobs: int = 1, progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Crops ``uint8[N, S, S, 4]`` and identity labels ``int64[N]`` of ``config.seeds``.

    ``jobs`` > 1 renders that many sequences at once in worker processes (each sequence is
    independent); the result is the same, in seed order.
    """
    work = [(seed, config.frames, config.step, config.size) for seed in config.seeds]
    parallel = jobs > 1 and len(work) > 1
    pool = multiprocessing.get_context("spawn").Pool(min(jobs, len(work))) if parallel else None
    xs, ys = [], []
    with pool or contextlib.nullcontext():
        for x, y in pool.imap(_sequence_crops_of, work) if pool else map(_sequence_crops_of, work):
            xs.append(x)
            ys.append(y)
            if progress is not None:
                progress(1)
    return np.concatenate(xs), np.concatenate(ys)


def _sequence_crops_of(args: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    return _sequence_crops(*args)


def train_reid(
    crops: np.ndarray,
    labels: np.ndarray,
    config: ReIdTrainConfig,
    *,
    progress: Callable[[int, float], None] | None = None,
) -> ReIdNet:
    """Train a :class:`ReIdNet` on ``crops`` (``uint8[N, S, S, 4]``) labelled by identity.

    ``progress(steps_done, loss)`` is called after every step.
    """
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    _, y = np.unique(labels, return_inverse=True)
    n_ids = int(y.max()) + 1
    x_all = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
    y_all = torch.from_numpy(y.astype(np.int64))
    net = ReIdNet(dim=config.dim)
    centres = nn.Parameter(torch.randn(n_ids, config.dim) * 0.01)
    opt = torch.optim.AdamW([*net.parameters(), centres], config.lr, weight_decay=1e-4)
    if len(y) < 2:
        raise ValueError(f"train_reid: need at least 2 crops, got {len(y)}")
    batch = min(config.batch, len(y))
    per_epoch = len(y) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * per_epoch)
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(y))
        for i in range(per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            xb = x_all[idx].float().div_(255.0)
            # brightness jitter of the colour channels: light changes, identities do not
            xb[:, :3] *= (1.0 + 0.1 * torch.randn(len(idx), 1, 1, 1)).clamp(0.7, 1.3)
            cos = net(xb) @ F.normalize(centres, dim=1).T
            logits = config.scale * (cos - config.margin * F.one_hot(y_all[idx], n_ids))
            loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if progress is not None:
                progress(1, float(loss.detach()))
    return net.eval()


def export_reid_onnx(net: ReIdNet, path: Path, *, size: int, opset: int = 17) -> Path:
    """Export with a dynamic batch axis (input ``crops`` [N, 4, size, size], output [N, D])."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import onnx

    dummy = torch.zeros(2, 4, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        with torch.no_grad():
            torch.onnx.export(
                net.eval(),
                (dummy,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "n"}, OUTPUT_NAME: {0: "n"}},
                opset_version=opset,
                dynamo=False,
            )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def embedding_agreement(net: ReIdNet, onnx_path: Path, crops: np.ndarray) -> float:
    """Largest absolute difference between the PyTorch and ONNX Runtime embeddings of ``crops``."""
    import onnxruntime as ort

    x = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), np.float32) / 255.0
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {INPUT_NAME: x})[0]
    return float(np.abs(ref - got).max())


def seeds_arg(text: str) -> Sequence[int]:
    """``"1000-1059"`` or ``"1000,1003"`` -> seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += range(int(lo), int(hi or lo) + 1)
    return tuple(seeds)
