"""Penn-Fudan for training: real per-person masks, with the rest of each image labelled by a teacher.

Penn-Fudan (``PNGImages/<stem>.png``, ``PedMasks/<stem>_mask.png``: 0 background, 1..k one id per
person) labels people only. For the semantic head every person pixel becomes ``Pedestrian``; the
other pixels take the class a teacher model (the network being fine-tuned, before training) gives
them where it is confident, and are ignored where it is not, or where it sees a thing (Penn-Fudan
leaves small and badly occluded people unmasked, and the teacher takes parts of them for cars or
cyclists: checked by eye on FudanPed00006). The instances are the masked persons. Pure numpy +
OpenCV; the teacher is any callable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from perception.errors import DataError
from perception.models.data import IGNORE_INDEX, Split

PEDESTRIAN = 9
"""The CamVid class Penn-Fudan's persons become."""
THINGS = (8, 9, 10)
"""CamVid's thing classes (Car, Pedestrian, Bicyclist): ignored where the teacher sees them outside the masks."""

Teacher = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""BGR uint8[H, W, 3] -> (class ids uint8[H, W], confidence float32[H, W] in 0..1)."""


def read_stems(path: str | Path) -> list[str]:
    """Stems listed one per line (blank lines skipped)."""
    return [s.strip() for s in Path(path).read_text().split() if s.strip()]


def split_stems(stems: list[str], *, holdout_every: int) -> tuple[list[str], list[str]]:
    """``(train, held out)``: every ``holdout_every``-th stem (the 4th, 8th, ... for 4) is held out;
    0 holds out nothing."""
    if holdout_every <= 0:
        return list(stems), []
    held = [s for i, s in enumerate(stems, 1) if i % holdout_every == 0]
    return [s for i, s in enumerate(stems, 1) if i % holdout_every], held


def person_instances(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Penn-Fudan's mask (ids may skip numbers) as uint16 ids 1..k, and k."""
    ids = np.unique(mask)
    ids = ids[ids > 0]
    lut = np.zeros(int(mask.max()) + 1, dtype=np.uint16)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.uint16)
    return lut[mask], int(ids.size)


def label_image(image: np.ndarray, mask: np.ndarray, teacher: Teacher | None, *, min_confidence: float
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """``(labels uint8[H, W], instances uint16[H, W], instance classes)`` of one image (see the module doc)."""
    persons, k = person_instances(mask)
    is_person = persons > 0
    if teacher is None:
        labels = np.full(mask.shape, IGNORE_INDEX, dtype=np.uint8)
    else:
        labels, conf = teacher(image)
        labels = np.where(conf >= min_confidence, labels, IGNORE_INDEX).astype(np.uint8)
        labels[np.isin(labels, THINGS)] = IGNORE_INDEX
    labels[is_person] = PEDESTRIAN
    return labels, persons, (PEDESTRIAN,) * k


def load_pennfudan(root: str | Path, stems: Iterable[str], *, teacher: Teacher | None,
                   min_confidence: float = 0.8) -> Split:
    """Decode and label the listed images of a Penn-Fudan folder into memory.

    Raises DataError naming the file when an image or mask is missing, unreadable or of another size.
    """
    root = Path(root)
    names, images, labels, instances, classes = [], [], [], [], []
    for stem in stems:
        img_path, mask_path = root / "PNGImages" / f"{stem}.png", root / "PedMasks" / f"{stem}_mask.png"
        image = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"cannot read Penn-Fudan image {img_path}")
        mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2 or mask.shape != image.shape[:2]:
            raise DataError(f"Penn-Fudan mask {mask_path} is missing, unreadable or not the image's size")
        lab, inst, cls = label_image(image, mask, teacher, min_confidence=min_confidence)
        names.append(stem)
        images.append(image)
        labels.append(lab)
        instances.append(inst)
        classes.append(cls)
    if not names:
        raise DataError(f"{root}: no Penn-Fudan image listed")
    return Split(names=tuple(names), images=tuple(images), labels=tuple(labels), instances=tuple(instances),
                 instance_classes=tuple(classes))
