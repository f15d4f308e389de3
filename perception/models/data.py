"""CamVid for training: preloaded split, augmentation and batching (numpy + OpenCV; no torch).

The data set is small (367 + 101 images of 480x360), so a split is decoded once and kept in memory
(about 0.2 GB for train) and the CPU is spent on the network, not on PNG decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from perception.errors import DataError
from perception.models.targets import (
    CAMVID_THING_IDS,
    DEFAULT_MIN_AREA,
    DEFAULT_SIGMA_INPUT_PX,
    instance_targets,
    targets_from_instances,
)

IGNORE_INDEX = 11
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, slots=True, kw_only=True)
class Split:
    names: tuple[str, ...]
    images: tuple[np.ndarray, ...]
    """BGR uint8[H, W, 3] each."""
    labels: tuple[np.ndarray, ...]
    """uint8[H, W] class ids each (11 = Unlabelled)."""
    instances: tuple[np.ndarray, ...] | None = None
    """uint16[H, W] each (0 = none, 1..K one id per object) where the data set has per-object masks;
    None: instances are the connected components of the thing classes (CamVid)."""
    instance_classes: tuple[tuple[int, ...], ...] | None = None
    """Class id of each object of ``instances`` (K per image)."""

    def subset(self, count: int) -> Split:
        """The first ``count`` images (smoke tests)."""
        return self.take(range(min(count, len(self.names))))

    def take(self, indices) -> Split:
        """The images at ``indices``, in that order."""
        idx = list(indices)
        pick = lambda seq: None if seq is None else tuple(seq[i] for i in idx)  # noqa: E731
        return Split(names=pick(self.names), images=pick(self.images), labels=pick(self.labels),
                     instances=pick(self.instances), instance_classes=pick(self.instance_classes))

    def sequences(self) -> tuple[str, ...]:
        """The recording each image comes from, in order (CamVid: ``0016E5`` of ``0016E5_07959.png``)."""
        return tuple(sequence_of(name) for name in self.names)

    def split_sequence(self, sequence: str) -> tuple[Split, Split]:
        """(the images of every other sequence, the images of ``sequence``); DataError if it has none."""
        seqs = self.sequences()
        if sequence not in seqs:
            raise DataError(f"no image of sequence {sequence!r}; the sequences are {sorted(set(seqs))}")
        rest = [i for i, s in enumerate(seqs) if s != sequence]
        return self.take(rest), self.take(i for i, s in enumerate(seqs) if s == sequence)


def sequence_of(name: str) -> str:
    """CamVid names images ``<sequence>_<frame>.png``: the part before the first underscore."""
    return Path(name).stem.split("_", 1)[0]


def concat(splits: list[Split]) -> Split:
    """One split holding the images of ``splits`` in order (all with, or all without, instance masks)."""
    if not splits:
        raise DataError("no split to join")
    if len({s.instances is None for s in splits}) > 1:
        raise DataError("cannot join splits with per-object masks and splits without")
    join = lambda f: None if getattr(splits[0], f) is None else tuple(x for s in splits for x in getattr(s, f))  # noqa: E731
    return Split(names=join("names"), images=join("images"), labels=join("labels"),
                 instances=join("instances"), instance_classes=join("instance_classes"))


def load_split(root: str | Path, split: str) -> Split:
    """Decode ``root/<split>.txt`` (lines ``<split>/x.png <split>annot/x.png``) into memory.

    Raises DataError naming the file when an image or label is missing, unreadable or mismatched.
    """
    root = Path(root)
    listing = root / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"CamVid split list not found: {listing} (expected the SegNet CamVid layout)")
    names, images, labels = [], [], []
    for line in listing.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{listing}: line {line!r} should be '<image> <label>'")
        # SegNet's lists use absolute paths (/SegNet/CamVid/train/x.png): keep '<dir>/<file>' only.
        img_path, lab_path = (root.joinpath(*Path(p).parts[-2:]) for p in parts)
        img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"cannot read image {img_path} listed in {listing}")
        lab = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED)
        if lab is None:
            raise DataError(f"cannot read label {lab_path} listed in {listing}")
        if lab.ndim != 2 or lab.shape != img.shape[:2]:
            raise DataError(f"label {lab_path} has shape {lab.shape}, image {img_path} has {img.shape[:2]}")
        if int(lab.max()) > IGNORE_INDEX:
            raise DataError(f"label {lab_path} has class id {int(lab.max())} > {IGNORE_INDEX}")
        names.append(img_path.name)
        images.append(img)
        labels.append(lab.astype(np.uint8))
    if not names:
        raise DataError(f"{listing} lists no images")
    return Split(names=tuple(names), images=tuple(images), labels=tuple(labels))


def normalize(image_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8[H, W, 3] -> float32[3, H, W], RGB, ImageNet mean/std on 0..1 pixels (new array)."""
    rgb = image_bgr[:, :, ::-1].astype(np.float32) * (1.0 / 255.0)
    rgb -= np.asarray(IMAGENET_MEAN, dtype=np.float32)
    rgb /= np.asarray(IMAGENET_STD, dtype=np.float32)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    base_size: tuple[int, int] = (480, 352)
    """(width, height) the image is first resized to: the default inference size, so scale 1.0 matches deployment."""
    crop_size: tuple[int, int] = (384, 288)
    """(width, height) of the training crop; smaller crops give more steps per hour, larger give more context."""
    scale_range: tuple[float, float] = (0.75, 1.5)
    """Random rescale of the base size. Wider ranges help robustness to distance but need more epochs."""
    flip: bool = True
    color_jitter: float = 0.25
    """Max relative change of brightness, contrast and saturation; 0 disables."""
    gamma: float = 0.0
    """Random gamma exp(U(-g, g)) on 0..1 pixels (dusk, over-exposure); 0 disables."""
    blur_prob: float = 0.0
    """Chance of a Gaussian blur with sigma U(0.5, 1.5) px (soft or defocused cameras)."""
    noise_std: float = 0.0
    """Max standard deviation of additive Gaussian sensor noise, in 0..255 units; 0 disables."""
    stride: int = 4
    sigma: float = DEFAULT_SIGMA_INPUT_PX
    min_area: int = DEFAULT_MIN_AREA


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    image: np.ndarray  # float32[3, h, w] normalised
    labels: np.ndarray  # int64[h, w]
    heatmap: np.ndarray  # float32[1, h/4, w/4]
    offsets: np.ndarray  # float32[2, h/4, w/4]
    offset_mask: np.ndarray  # float32[1, h/4, w/4]
    valid: np.ndarray  # float32[1, h/4, w/4]: 1 where the crop holds real image (heatmap loss mask)


def _jitter(img: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    b = 1.0 + rng.uniform(-amount, amount)
    c = 1.0 + rng.uniform(-amount, amount)
    s = 1.0 + rng.uniform(-amount, amount)
    gray = x.mean(axis=2, keepdims=True)
    x = gray + (x - gray) * s  # saturation
    m = x.mean()
    x = (x - m) * c + m  # contrast
    x = x * b  # brightness
    return np.clip(x, 0, 255).astype(np.uint8)


def _photometric(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Gamma, blur and sensor noise (each only when enabled in ``cfg``) on a uint8 BGR crop."""
    if cfg.gamma > 0:
        g = float(np.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** g + 0.5, 0, 255).astype(np.uint8)
        img = cv2.LUT(np.ascontiguousarray(img), lut)
    if cfg.blur_prob > 0 and rng.random() < cfg.blur_prob:
        img = cv2.GaussianBlur(np.ascontiguousarray(img), (0, 0), sigmaX=float(rng.uniform(0.5, 1.5)))
    if cfg.noise_std > 0:
        std = float(rng.uniform(0.0, cfg.noise_std))
        noisy = img.astype(np.float32) + rng.normal(0.0, std, size=img.shape).astype(np.float32)
        img = np.clip(noisy, 0, 255).astype(np.uint8)
    return img


def augment(
    image: np.ndarray,
    labels: np.ndarray,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    *,
    instances: np.ndarray | None = None,
    instance_classes: tuple[int, ...] = (),
) -> Sample:
    """Random scale, crop, flip, colour jitter, gamma, blur and noise of one image/label pair, plus its
    instance targets.

    ``instances`` (uint16[H, W], ids 1..K of ``instance_classes``): the image's own per-object masks,
    transformed with the labels; without them the instances are the thing classes' connected components.
    """
    bw, bh = cfg.base_size
    cw, ch = cfg.crop_size
    s = rng.uniform(*cfg.scale_range)
    w, h = max(int(round(bw * s)), 1), max(int(round(bh * s)), 1)
    img = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    maps = [cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST), np.ones((h, w), dtype=np.uint8)]
    if instances is not None:
        maps.append(cv2.resize(instances, (w, h), interpolation=cv2.INTER_NEAREST))
    if w < cw or h < ch:
        pw, ph = max(cw - w, 0), max(ch - h, 0)
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(104, 116, 124))
        fills = (IGNORE_INDEX, 0, 0)
        maps = [cv2.copyMakeBorder(m, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=f) for m, f in zip(maps, fills)]
        h, w = maps[0].shape
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    img = img[y0 : y0 + ch, x0 : x0 + cw]
    maps = [m[y0 : y0 + ch, x0 : x0 + cw] for m in maps]
    if cfg.flip and rng.random() < 0.5:
        img, maps = img[:, ::-1], [m[:, ::-1] for m in maps]
    if cfg.color_jitter > 0:
        img = _jitter(img, cfg.color_jitter, rng)
    img = _photometric(img, cfg, rng)
    lab, valid = np.ascontiguousarray(maps[0]), maps[1]
    if instances is not None:
        t = targets_from_instances(np.ascontiguousarray(maps[2]), list(instance_classes), stride=cfg.stride,
                                   sigma=cfg.sigma)
    else:
        t = instance_targets(lab, thing_ids=CAMVID_THING_IDS, stride=cfg.stride, sigma=cfg.sigma,
                             min_area=cfg.min_area)
    st = cfg.stride
    return Sample(
        image=normalize(np.ascontiguousarray(img)),
        labels=lab.astype(np.int64),
        heatmap=t.heatmap[None],
        offsets=t.offsets,
        offset_mask=t.offset_mask[None].astype(np.float32),
        valid=np.ascontiguousarray(valid[st // 2 :: st, st // 2 :: st])[None].astype(np.float32),
    )


def collate(samples: list[Sample]) -> dict[str, np.ndarray]:
    """Stack samples into a batch dict of arrays with a leading N axis."""
    return {f: np.stack([getattr(s, f) for s in samples]) for f in Sample.__slots__}
