"""Matching: IoU matrices, mask IoU via bincount, thresholded assignment that never mutates input."""

from __future__ import annotations

import numpy as np

from perception.tracking.matching import (
    box_iou,
    buffered_box_iou,
    linear_assignment,
    mask_iou,
    normalized_center_distance,
    normalized_center_distance_sq,
    shifted_mask_iou,
)


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], float)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    iou = box_iou(a, b)
    np.testing.assert_allclose(iou, [[50 / 150, 1.0, 0.0], [0, 0, 0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_buffered_iou_reaches_boxes_that_do_not_overlap():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[12, 0, 22, 10]], float)
    assert box_iou(a, b)[0, 0] == 0.0
    assert buffered_box_iou(a, b, 0.0)[0, 0] == 0.0
    assert buffered_box_iou(a, b, 0.3)[0, 0] > 0.0
    np.testing.assert_allclose(buffered_box_iou(a, b, np.array([0.0])), box_iou(a, b))


def test_normalized_center_distance():
    a = np.array([[0, 0, 10, 20]], float)
    b = np.array([[10, 0, 20, 20], [0, 20, 10, 40]], float)
    np.testing.assert_allclose(normalized_center_distance(a, b), [[1.0, 1.0]])


def _reference_mask_iou(ma, ia, mb, ib):
    out = np.zeros((len(ia), len(ib)))
    for i, x in enumerate(ia):
        for j, y in enumerate(ib):
            u = ((ma == x) | (mb == y)).sum()
            out[i, j] = ((ma == x) & (mb == y)).sum() / u if u else 0.0
    return out


def test_mask_iou_equals_reference_loop():
    rng = np.random.default_rng(2)
    ma = rng.integers(0, 5, size=(20, 30)).astype(np.uint16)
    mb = rng.integers(0, 4, size=(20, 30)).astype(np.uint16)
    ia, ib = np.array([1, 2, 4, 7]), np.array([3, 1, 2])
    np.testing.assert_allclose(mask_iou(ma, ia, mb, ib), _reference_mask_iou(ma, ia, mb, ib))


def test_shifted_mask_iou_compensates_motion():
    prev = np.zeros((20, 40), np.uint16)
    prev[5:10, 5:10] = 1
    cur = np.zeros((20, 40), np.uint16)
    cur[5:10, 15:20] = 7  # moved 10 px right
    ys, xs = np.nonzero(prev)
    pix = np.stack([ys, xs], 1).astype(np.int64)
    rows = np.zeros(ys.size, np.int64)
    moved = shifted_mask_iou(pix, rows, np.array([[10.0, 0.0]]), cur, np.array([7]), np.array([25]))
    still = shifted_mask_iou(pix, rows, np.array([[0.0, 0.0]]), cur, np.array([7]), np.array([25]))
    assert moved[0, 0] == 1.0 and still[0, 0] == 0.0


def test_linear_assignment_respects_threshold_and_does_not_mutate():
    cost = np.array([[0.1, 0.9, 0.8], [0.2, 0.95, 0.3]])
    before = cost.copy()
    m, ur, uc = linear_assignment(cost, 0.5)
    np.testing.assert_array_equal(cost, before)
    assert m.tolist() == [[0, 0], [1, 2]] and ur.tolist() == [] and uc.tolist() == [1]
    # a forbidden pair is never returned even when it would be the "global optimum" otherwise
    m, ur, uc = linear_assignment(np.array([[0.9, 0.45], [0.2, 0.99]]), 0.5)
    assert m.tolist() == [[0, 1], [1, 0]]
    m, ur, uc = linear_assignment(np.array([[0.6, 0.7]]), 0.5)
    assert m.shape == (0, 2) and ur.tolist() == [0] and uc.tolist() == [0, 1]
    # thresholding first lets the solver pick a feasible partner instead of a forbidden best pair
    # (unthresholded optimum: (0,0)+(1,1) = 0.6, whose (1,1) is above the threshold -> one match;
    #  thresholded: (0,1)+(1,0) = 0.98 -> two matches)
    c = np.array([[0.0, 0.49], [0.49, 0.6]])
    m, _, _ = linear_assignment(c, 0.5)
    assert m.tolist() == [[0, 1], [1, 0]]
    nan = np.array([[np.nan, 0.1]])
    m, _, _ = linear_assignment(nan, 0.5)
    assert m.tolist() == [[0, 1]] and np.isnan(nan[0, 0])
    m, ur, uc = linear_assignment(np.zeros((0, 3)), 0.5)
    assert m.shape == (0, 2) and uc.tolist() == [0, 1, 2]


def test_normalized_center_distance_sq_is_the_square_and_degenerate_pairs_are_far():
    a = np.array([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 5.0, 5.0]])
    b = np.array([[3.0, -4.0, 13.0, 16.0], [5.0, 5.0, 5.0, 5.0], [100.0, 0.0, 130.0, 20.0]])
    d2 = normalized_center_distance_sq(a, b)
    np.testing.assert_allclose(d2[0, :1], [(3 / 10) ** 2 + (4 / 20) ** 2])
    assert np.isinf(d2[1, 1])  # both boxes empty: no size to measure the distance in
    np.testing.assert_allclose(np.sqrt(d2), normalized_center_distance(a, b))


def test_saturated_assignment_keeps_the_best_pair_instead_of_two_poor_ones():
    """Tracks A, B; detections x, y. B-x is by far the best pair; A-y is forbidden. Most-matches-first
    takes A-x and B-y (an ID switch each way in a tracker); saturating pair costs at 1 takes B-x alone."""
    from perception.tracking.matching import linear_assignment_pairs

    inf = np.inf
    cost = np.array([[0.85, inf], [0.4, 1.2]])
    rows, cols = linear_assignment_pairs(cost, inf)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0), (1, 1)]
    rows, cols = linear_assignment_pairs(cost, inf, saturate=1.0)
    assert list(zip(rows.tolist(), cols.tolist())) == [(1, 0)]
    # a saturated pair is still taken when it displaces nothing: a lone pair, or two rows of which
    # only one can match
    rows, cols = linear_assignment_pairs(np.array([[3.0]]), inf, saturate=1.0)
    assert rows.tolist() == [0] and cols.tolist() == [0]
    rows, cols = linear_assignment_pairs(np.array([[2.0, 5.0], [inf, 4.0]]), inf, saturate=1.0)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 0), (1, 1)]
    # forbidden stays forbidden, the threshold still applies, the input is not modified
    c = np.array([[inf, 0.2], [0.3, inf]])
    before = c.copy()
    rows, cols = linear_assignment_pairs(c, 0.25, saturate=1.0)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 1)]
    np.testing.assert_array_equal(c, before)
