"""Training data: sequences of a split, joining splits, and the photometric augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import DataError
from perception.models.data import AugmentConfig, Split, augment, concat, sequence_of


def _split(names: list[str]) -> Split:
    images = tuple(np.full((36, 48, 3), i, dtype=np.uint8) for i in range(len(names)))
    labels = tuple(np.full((36, 48), i % 11, dtype=np.uint8) for i in range(len(names)))
    return Split(names=tuple(names), images=images, labels=labels)


def test_sequences_come_from_camvid_file_names() -> None:
    assert sequence_of("0016E5_07959.png") == "0016E5"
    assert sequence_of("Seq05VD_f00000.png") == "Seq05VD"
    assert sequence_of("frame.png") == "frame"


def test_split_sequence_and_concat_keep_images_with_their_labels() -> None:
    train = _split(["0001TP_1.png", "0006R0_1.png", "0001TP_2.png"])
    val = _split(["0016E5_1.png"])
    both = concat([train, val])
    assert both.names == (*train.names, *val.names)
    rest, held = both.split_sequence("0001TP")
    assert held.names == ("0001TP_1.png", "0001TP_2.png")
    assert rest.names == ("0006R0_1.png", "0016E5_1.png")
    assert [int(im[0, 0, 0]) for im in held.images] == [0, 2] and int(held.labels[1][0, 0]) == 2
    with pytest.raises(DataError, match=r"no image of sequence 'Seq05VD'; the sequences are \['0001TP', '0006R0'"):
        both.split_sequence("Seq05VD")
    masked = Split(names=("p.png",), images=val.images, labels=val.labels,
                   instances=(np.zeros((36, 48), np.uint16),), instance_classes=((),))
    with pytest.raises(DataError, match="per-object masks"):
        concat([val, masked])


def test_photometric_augmentation_changes_pixels_not_labels() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
    labels = np.full((72, 96), 3, dtype=np.uint8)
    labels[30:50, 20:40] = 8
    plain = AugmentConfig(base_size=(96, 72), crop_size=(96, 72), scale_range=(1.0, 1.0), flip=False, color_jitter=0)
    strong = AugmentConfig(base_size=(96, 72), crop_size=(96, 72), scale_range=(1.0, 1.0), flip=False, color_jitter=0,
                           gamma=0.5, blur_prob=1.0, noise_std=8.0)
    a = augment(image, labels, plain, np.random.default_rng(1))
    b = augment(image, labels, strong, np.random.default_rng(1))
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.heatmap, b.heatmap)
    assert np.abs(a.image - b.image).mean() > 0.05  # normalised units: blurred, noisy and re-gamma'd
    again = augment(image, labels, strong, np.random.default_rng(1))
    assert np.array_equal(b.image, again.image)  # seeded: reproducible


def test_scale_range_down_to_half_pads_with_ignored_pixels() -> None:
    image = np.zeros((72, 96, 3), dtype=np.uint8)
    labels = np.full((72, 96), 3, dtype=np.uint8)
    cfg = AugmentConfig(base_size=(96, 72), crop_size=(96, 72), scale_range=(0.5, 0.5), flip=False, color_jitter=0)
    s = augment(image, labels, cfg, np.random.default_rng(0))
    assert s.labels.shape == (72, 96)
    assert (s.labels == 3).sum() == 48 * 36 and (s.labels == 11).sum() == 96 * 72 - 48 * 36
