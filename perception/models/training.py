"""Losses, evaluation and checkpoints for training the panoptic network (torch; tools/train.py drives them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from perception.eval.metrics import iou_from_confusion
from perception.models.data import IGNORE_INDEX, Split, normalize

CAMVID_TRAIN_PIXEL_SHARE = (0.158, 0.241, 0.010, 0.293, 0.067, 0.112, 0.011, 0.014, 0.046, 0.006, 0.005)
"""Per-class pixel share of CamVid train (from the data set README), classes 0..10."""


def class_weights(shares: tuple[float, ...] = CAMVID_TRAIN_PIXEL_SHARE, *, c: float = 1.10) -> torch.Tensor:
    """ENet-style weights ``1 / ln(c + p)``, normalised to mean 1.

    ``c`` sets how hard rare classes are boosted: ENet's 1.02 gives poles ~10x the weight of road
    (better class recall, worse precision/IoU on the big classes); 1.10 gives ~3x, a milder trade.
    """
    w = torch.tensor([1.0 / math.log(c + p) for p in shares], dtype=torch.float32)
    return w / w.mean()


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    ohem_keep: float = 0.3
    """Fraction of the hardest labelled pixels the semantic loss averages over (Panoptic-DeepLab uses 0.2).
    Lower focuses on hard pixels (thin classes, boundaries); 1.0 is plain weighted cross-entropy."""
    class_weight_c: float = 1.10
    center_weight: float = 100.0
    """Weight of the centre-heatmap MSE (mean over pixels; values are tiny, hence the large factor).
    Panoptic-DeepLab uses 200; halved so semantics lead on a short CPU schedule."""
    offset_weight: float = 0.02
    """Weight of the offset L1 (output pixels, mean over thing pixels). Panoptic-DeepLab's 0.01 is in
    input pixels; offsets here are 4x smaller, so 0.02 is half its relative strength."""


def panoptic_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batch: dict[str, torch.Tensor],
    *,
    cfg: LossConfig,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts. ``outputs`` = (logits [N,C,h,w], heatmap [N,1,h,w], offsets [N,2,h,w])."""
    sem, heat, off = outputs
    labels = batch["labels"]
    logits = F.interpolate(sem, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    pix = F.cross_entropy(logits, labels, weight=weights.to(logits.device), ignore_index=IGNORE_INDEX, reduction="none")
    pix = pix[labels != IGNORE_INDEX]
    if pix.numel() == 0:
        sem_loss = logits.sum() * 0.0
    elif cfg.ohem_keep < 1.0:
        k = max(int(pix.numel() * cfg.ohem_keep), 1)
        sem_loss = torch.topk(pix, k, sorted=False).values.mean()
    else:
        sem_loss = pix.mean()
    valid = batch["valid"]
    center_loss = (((heat - batch["heatmap"]) ** 2) * valid).sum() / valid.sum().clamp(min=1.0)
    mask = batch["offset_mask"]
    offset_loss = ((off - batch["offsets"]).abs() * mask).sum() / mask.sum().clamp(min=1.0)
    total = sem_loss + cfg.center_weight * center_loss + cfg.offset_weight * offset_loss
    return total, {
        "sem": float(sem_loss.detach()),
        "center": float(center_loss.detach()),
        "offset": float(offset_loss.detach()),
    }


def confusion(pred: np.ndarray, labels: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int64[C, C] confusion matrix (rows = truth, columns = prediction) over non-ignored pixels."""
    keep = labels != ignore_index
    idx = labels[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores_from_confusion(conf: np.ndarray) -> dict:
    """mIoU (over the classes present), per-class IoU and pixel accuracy of a confusion matrix."""
    iou = iou_from_confusion(conf)
    return {
        "miou": float(np.nanmean(iou)),
        "per_class_iou": [float(v) for v in iou],
        "pixel_accuracy": float(np.diag(conf).sum() / max(conf.sum(), 1)),
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    split: Split,
    *,
    input_size: tuple[int, int],
    num_classes: int = 11,
    device: str = "cpu",
    batch_size: int = 4,
) -> dict:
    """mIoU at the labels' resolution: resize to ``input_size`` (w, h), infer, upsample logits, argmax.

    Also returns the confusion matrix (rows: label, columns: prediction), so folds can be pooled."""
    model.eval()
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    w, h = input_size
    for i in range(0, len(split.images), batch_size):
        imgs = split.images[i : i + batch_size]
        labs = split.labels[i : i + batch_size]
        x = np.stack([normalize(cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)) for im in imgs])
        sem = model(torch.from_numpy(x).to(device))[0]
        H, W = labs[0].shape
        sem = F.interpolate(sem, size=(H, W), mode="bilinear", align_corners=False)
        pred = sem.argmax(1).to(torch.uint8).cpu().numpy()
        for p, lab in zip(pred, labs):
            conf += confusion(p, lab, num_classes)
    return scores_from_confusion(conf) | {"confusion": conf.tolist()}


def save_checkpoint(path: Path, **state) -> None:
    """Write atomically (tmp + rename) so a kill mid-write never leaves a broken checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def teacher(model: torch.nn.Module, *, input_size: tuple[int, int], device: str = "cpu"):
    """A Penn-Fudan teacher (:data:`perception.models.pennfudan.Teacher`) from ``model`` as it is now:
    BGR image -> (argmax classes uint8, softmax confidence float32) at the image's size, the image
    resized to ``input_size`` (w, h) as deployment does."""
    w, h = input_size

    @torch.no_grad()
    def label(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        was_training = model.training
        model.eval()
        x = torch.from_numpy(normalize(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))[None]).to(device)
        sem = F.interpolate(model(x)[0], size=image.shape[:2], mode="bilinear", align_corners=False)
        conf, cls = torch.softmax(sem, dim=1).max(dim=1)
        model.train(was_training)
        return cls[0].to(torch.uint8).cpu().numpy(), conf[0].float().cpu().numpy()

    return label
