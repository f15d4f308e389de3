"""Small labelled data sets written to disk for the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_pair(images: Path, labels: Path, stem: str, *, size=(64, 48), seed=0, num_classes=11,
               ignore: int | None = 11, label_size=None) -> tuple[Path, Path]:
    """Write ``images/<stem>.png`` (random BGR) and ``labels/<stem>.png`` (random ids)."""
    rng = np.random.default_rng(seed)
    w, h = size
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    lw, lh = label_size or size
    top = num_classes + (1 if ignore is not None else 0)
    lab = rng.integers(0, top, (lh, lw), dtype=np.uint8)
    if ignore is not None:
        lab[lab == num_classes] = ignore
    ip, lp = images / f"{stem}.png", labels / f"{stem}.png"
    cv2.imwrite(str(ip), img)
    cv2.imwrite(str(lp), lab)
    return ip, lp


def write_camvid(root: Path, *, split="val", n=3, size=(64, 48)) -> Path:
    """``root/<split>/`` + ``root/<split>annot/`` with ``n`` pairs; returns ``root``."""
    for i in range(n):
        write_pair(root / split, root / f"{split}annot", f"img{i:03d}", size=size, seed=i)
    return root
