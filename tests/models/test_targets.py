"""Instance targets derived from semantic labels (connected components per thing class)."""

from __future__ import annotations

import numpy as np
import pytest

from perception.models.targets import instance_targets

CAR, PED = 8, 9


def _two_cars() -> np.ndarray:
    lab = np.full((64, 96), 3, dtype=np.uint8)  # road
    lab[8:24, 8:40] = CAR  # car A: rows 8..23, cols 8..39
    lab[40:56, 60:76] = CAR  # car B
    lab[30:50, 20:24] = PED  # a pedestrian
    return lab


def test_two_separate_cars_are_two_instances_with_centre_of_mass() -> None:
    lab = _two_cars()
    before = lab.copy()
    t = instance_targets(lab, stride=4, sigma=8.0, min_area=4)
    np.testing.assert_array_equal(lab, before)  # input untouched
    assert list(t.classes) == [CAR, CAR, PED]
    assert t.instance_map.dtype == np.uint16 and t.instance_map.shape == lab.shape
    assert set(np.unique(t.instance_map[lab == CAR])) == {1, 2}
    assert set(np.unique(t.instance_map[lab == PED])) == {3}
    assert not t.instance_map[lab == 3].any()
    np.testing.assert_allclose(t.centers[0], [15.5, 23.5])
    np.testing.assert_allclose(t.centers[1], [47.5, 67.5])
    np.testing.assert_allclose(t.centers[2], [39.5, 21.5])


def test_heatmap_peaks_at_centres_and_offsets_point_to_them() -> None:
    t = instance_targets(_two_cars(), stride=4, sigma=8.0, min_area=4)
    assert t.heatmap.shape == (16, 24) and t.offsets.shape == (2, 16, 24)
    assert t.heatmap.max() <= 1.0 + 1e-6
    # car A centre (15.5, 23.5) input px -> output grid ((15.5-1.5)/4, (23.5-1.5)/4) = (3.5, 5.5)
    # centre between 4 output pixels, each at distance sqrt(0.5) -> exp(-0.5 / (2 * 2^2)) = 0.939
    np.testing.assert_allclose(t.heatmap[3:5, 5:7], np.exp(-0.5 / 8.0), rtol=1e-5)
    # every masked output pixel + its offset lands on its instance's centre (in output pixels)
    ys, xs = np.nonzero(t.offset_mask)
    assert ys.size > 0
    inst = t.instance_map[2::4, 2::4][ys, xs].astype(int)
    target_y = ys + t.offsets[0, ys, xs]
    target_x = xs + t.offsets[1, ys, xs]
    cy = (t.centers[inst - 1, 0] - 1.5) / 4
    cx = (t.centers[inst - 1, 1] - 1.5) / 4
    np.testing.assert_allclose(target_y, cy, atol=1e-4)
    np.testing.assert_allclose(target_x, cx, atol=1e-4)
    # a pixel of car B left of its centre points right (dx > 0)
    assert t.offsets[1, 11, 15] > 0
    assert not t.offsets[:, ~t.offset_mask].any()


def test_small_components_dropped_and_no_things_gives_zero_maps() -> None:
    lab = np.zeros((32, 32), dtype=np.uint8)
    lab[2:4, 2:4] = CAR  # 4 px
    t = instance_targets(lab, stride=4, min_area=16)
    assert t.centers.shape == (0, 2) and not t.heatmap.any() and not t.offset_mask.any()


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of the stride"):
        instance_targets(np.zeros((30, 32), dtype=np.uint8), stride=4)
    with pytest.raises(ValueError, match="uint8"):
        instance_targets(np.zeros((32, 32), dtype=np.int32))


def test_given_instances_keep_touching_objects_apart() -> None:
    """Per-object masks (Penn-Fudan's) give one instance per object even where two touch, unlike components."""
    from perception.models.targets import targets_from_instances

    inst = np.zeros((64, 96), dtype=np.uint16)
    inst[8:56, 20:30] = 1  # two people side by side, touching
    inst[8:56, 30:40] = 2
    lab = np.where(inst > 0, PED, 3).astype(np.uint8)
    assert len(instance_targets(lab, stride=4, min_area=4).classes) == 1  # components merge them
    t = targets_from_instances(inst, [PED, PED], stride=4, sigma=8.0)
    assert list(t.classes) == [PED, PED]
    np.testing.assert_allclose(t.centers, [[31.5, 24.5], [31.5, 34.5]])
    # each pixel points at its own person's centre: the border columns point apart
    assert t.offsets[1, 8, 6] < 0 < t.offsets[1, 8, 7]  # output col 6 samples input col 26 (person 1), col 7 col 30


def test_given_instances_cropped_away_get_no_centre() -> None:
    from perception.models.targets import targets_from_instances

    inst = np.zeros((32, 32), dtype=np.uint16)
    inst[4:12, 4:12] = 2  # id 1 was cropped away entirely
    t = targets_from_instances(inst, [PED, PED], stride=4, sigma=4.0)
    # one centre, at input (7.5, 7.5) = output (1.5, 1.5): four pixels at distance sqrt(0.5), sigma 1 output px
    np.testing.assert_allclose(t.heatmap[1:3, 1:3], np.exp(-0.25), rtol=1e-5)
    assert t.heatmap[7, 7] < 1e-6
    empty = targets_from_instances(np.zeros((32, 32), dtype=np.uint16), [PED], stride=4)
    assert not empty.heatmap.any() and not empty.offset_mask.any()
    with pytest.raises(ValueError, match="only 1 classes"):
        targets_from_instances(inst, [PED], stride=4)
