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
