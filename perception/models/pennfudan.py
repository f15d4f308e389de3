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

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np

from perception.errors import DataError
from perception.eval.instances import InstancePair, read_pair
from perception.models.data import IGNORE_INDEX, Split
from perception.models.targets import CAMVID_THING_IDS

PEDESTRIAN = 9
"""The CamVid class Penn-Fudan's persons become."""
T = TypeVar("T")

Teacher = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""BGR uint8[H, W, 3] -> (class ids uint8[H, W], confidence float32[H, W] in 0..1)."""


def hold_out(items: Sequence[T], *, every: int) -> tuple[list[T], list[T]]:
    """``(kept, held out)``: every ``every``-th item (the 4th, 8th, ... for 4) is held out; 0 holds out nothing."""
    if every <= 0:
        return list(items), []
    return [x for i, x in enumerate(items, 1) if i % every], [x for i, x in enumerate(items, 1) if i % every == 0]


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
        labels[np.isin(labels, CAMVID_THING_IDS)] = IGNORE_INDEX  # things outside the masks
    labels[is_person] = PEDESTRIAN
    return labels, persons, (PEDESTRIAN,) * k


def load_pennfudan(pairs: Iterable[InstancePair], *, teacher: Teacher | None, min_confidence: float = 0.8) -> Split:
    """Decode and label Penn-Fudan image/mask pairs (:func:`perception.eval.instances.pennfudan_pairs`)
    into memory. Raises DataError naming the file when an image or mask is unreadable or of another size."""
    names, images, labels, instances, classes = [], [], [], [], []
    for pair in pairs:
        image, mask = read_pair(pair)
        lab, inst, cls = label_image(image, mask, teacher, min_confidence=min_confidence)
        names.append(pair.name)
        images.append(image)
        labels.append(lab)
        instances.append(inst)
        classes.append(cls)
    if not names:
        raise DataError("no Penn-Fudan image to train on")
    return Split(names=tuple(names), images=tuple(images), labels=tuple(labels), instances=tuple(instances),
                 instance_classes=tuple(classes))
