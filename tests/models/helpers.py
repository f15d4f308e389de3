"""Small data sets in the real on-disk layouts, for the training-tool tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def fake_camvid(root: Path, n: int = 4, sequences: dict[str, str] | None = None) -> Path:
    """``n`` images per split, named f<i>.png, or <sequence>_<i>.png with ``sequences`` {split: sequence}."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        lines = []
        for i in range(n):
            name = f"{sequences[split]}_{i:04d}" if sequences else f"f{i}"
            img = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
            lab = np.full((72, 96), 3, dtype=np.uint8)
            lab[:20] = 0
            lab[40:60, 10:30] = 8
            lab[40:60, 50:70] = 8
            lab[0, 0] = 11
            cv2.imwrite(str(root / split / f"{name}.png"), img)
            cv2.imwrite(str(root / f"{split}annot" / f"{name}.png"), lab)
            lines.append(f"{split}/{name}.png {split}annot/{name}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root
