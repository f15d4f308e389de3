"""Panoptic grouping: centre NMS, offset grouping, majority vote, full resolution, descriptions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.errors import ConfigError, DataError
from perception.postprocess.panoptic import (
    PanopticGrouper,
    describe_instances,
    find_centers,
    group_pixels,
    instances_full_resolution,
    merge_semantic_and_instance,
)

CAR, PED = 8, 9
THINGS = (8, 9, 10)


def test_find_centers_nms_on_handmade_heatmap():
    hm = np.zeros((20, 30), np.float32)
    hm[5, 5] = 0.9
    hm[5, 6] = 0.8  # neighbour of a stronger peak: suppressed
    hm[15, 25] = 0.6
    hm[10, 15] = 0.05  # below threshold
    hm[2, 28] = 0.3
    before = hm.copy()
    c = find_centers(hm, threshold=0.1, nms_kernel=3, top_k=10)
    assert c.dtype == np.int64 and c.shape == (3, 2)
    assert c.tolist() == [[5, 5], [15, 25], [2, 28]]  # by decreasing score, (y, x)
    np.testing.assert_array_equal(hm, before)
    # top_k keeps the best
    assert find_centers(hm, threshold=0.1, nms_kernel=3, top_k=2).tolist() == [[5, 5], [15, 25]]
    # a wider window suppresses peaks within its reach only
    hm2 = hm.copy()
    hm2[5, 9] = 0.7
    assert [5, 9] in find_centers(hm2, threshold=0.1, nms_kernel=3, top_k=10).tolist()
    assert [5, 9] not in find_centers(hm2, threshold=0.1, nms_kernel=7, top_k=10).tolist()
    assert find_centers(np.zeros((4, 4), np.float32), threshold=0.1, nms_kernel=3, top_k=5).shape == (0, 2)
    with pytest.raises(ConfigError):
        find_centers(hm, threshold=0.1, nms_kernel=4, top_k=5)


def _two_blobs(h=16, w=24):
    """Two square things; offsets of every pixel point at its blob's centre."""
    inst = np.zeros((h, w), np.int32)
    inst[2:8, 2:8] = 1
    inst[8:14, 14:22] = 2
    centres = {1: (4.5, 4.5), 2: (10.5, 17.5)}
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    off = np.zeros((2, h, w), np.float32)
    for k, (cy, cx) in centres.items():
        m = inst == k
        off[0][m] = cy - yy[m]
        off[1][m] = cx - xx[m]
    return inst, off


def _reference_group(thing, offsets, centers):
    out = np.zeros(thing.shape, np.int32)
    for y in range(thing.shape[0]):
        for x in range(thing.shape[1]):
            if not thing[y, x]:
                continue
            vy, vx = y + offsets[0, y, x], x + offsets[1, y, x]
            d = [(vy - cy) ** 2 + (vx - cx) ** 2 for cy, cx in centers]
            out[y, x] = int(np.argmin(d)) + 1
    return out


def test_group_pixels_two_blobs_with_offsets():
    inst, off = _two_blobs()
    thing = inst > 0
    centers = np.array([[10, 17], [4, 4]], np.int64)  # order decides the ids
    off_before = off.copy()
    g = group_pixels(thing, off, centers)
    assert g.dtype == np.int32
    np.testing.assert_array_equal(g[inst == 1], 2)
    np.testing.assert_array_equal(g[inst == 2], 1)
    np.testing.assert_array_equal(g[~thing], 0)
    np.testing.assert_array_equal(off, off_before)
    assert not group_pixels(thing, off, np.zeros((0, 2), np.int64)).any()


def test_group_pixels_max_distance_leaves_stray_votes_out():
    inst, off = _two_blobs()
    off = off.copy()
    off[:, 2, 2] = (40.0, 40.0)  # this pixel votes far from every centre
    centers = np.array([[4, 4], [10, 17]], np.int64)
    g = group_pixels(inst > 0, off, centers, max_distance=3.0)
    assert g[2, 2] == 0 and g[3, 3] == 1 and g[10, 17] == 2
    assert group_pixels(inst > 0, off, centers)[2, 2] != 0


def test_group_pixels_matches_reference_loop_on_random_input():
    rng = np.random.default_rng(3)
    thing = rng.random((13, 17)) < 0.6
    off = rng.normal(0, 4, size=(2, 13, 17)).astype(np.float32)
    centers = rng.integers(0, [13, 17], size=(5, 2)).astype(np.int64)
    np.testing.assert_array_equal(group_pixels(thing, off, centers), _reference_group(thing, off, centers))


def test_merge_majority_vote_score_and_min_area():
    ids = np.zeros((10, 10), np.int32)
    ids[0:4, 0:4] = 1  # 16 px: 10 car, 6 pedestrian -> car
    ids[5:10, 5:10] = 2  # 25 px all pedestrian
    ids[0, 9] = 3  # 1 px: below min_area
    labels = np.zeros((10, 10), np.uint8)
    labels[0:4, 0:4] = CAR
    labels[0:2, 0:3] = PED  # 6 px
    labels[5:10, 5:10] = PED
    labels[0, 9] = CAR
    probs = np.full((11, 10, 10), 0.05, np.float32)
    probs[CAR] = 0.5
    probs[PED] = 0.25
    scores_in = np.array([0.8, 0.6, 0.9], np.float32)
    before = (ids.copy(), labels.copy(), probs.copy())
    out, cls, score = merge_semantic_and_instance(
        ids, labels, center_scores=scores_in, thing_ids=THINGS, min_area=2, class_probs=probs
    )
    assert cls.tolist() == [CAR, PED]
    np.testing.assert_allclose(score, [0.8 * 0.5, 0.6 * 0.25], rtol=1e-6)
    assert out[0, 9] == 0 and (out[0:4, 0:4] == 1).all() and (out[5:10, 5:10] == 2).all()
    for a, b in zip(before, (ids, labels, probs)):
        np.testing.assert_array_equal(a, b)


def test_merge_matches_reference_loop():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 6, size=(12, 14)).astype(np.int32)
    labels = rng.choice(np.array([3, 8, 9, 10], np.uint8), size=(12, 14))
    ids[~np.isin(labels, THINGS)] = 0
    logits = rng.normal(size=(11, 12, 14)).astype(np.float32)
    cs = rng.random(5).astype(np.float32)
    out, cls, score = merge_semantic_and_instance(
        ids, labels, center_scores=cs, thing_ids=THINGS, min_area=3, semantic_logits=logits
    )
    probs = np.exp(logits) / np.exp(logits).sum(0)
    ref_cls, ref_score = [], []
    for k in range(1, 6):
        m = ids == k
        if m.sum() < 3:
            continue
        counts = np.bincount(labels[m], minlength=11)
        c = int(np.argmax(counts))
        ref_cls.append(c)
        ref_score.append(cs[k - 1] * probs[c][m].mean())
    assert cls.tolist() == ref_cls
    np.testing.assert_allclose(score, ref_score, rtol=1e-5)
    assert out.max() == len(ref_cls)


def test_full_resolution_restricted_to_thing_pixels_of_the_instance_class():
    low = np.zeros((4, 4), np.int32)
    low[0:2, 0:2] = 1
    low[2:4, 2:4] = 2
    labels = np.zeros((8, 8), np.uint8)
    labels[0:4, 0:4] = CAR
    labels[0, 0] = 3  # road: cleared
    labels[4:8, 4:8] = PED
    labels[7, 7] = CAR  # wrong class for instance 2: cleared when classes are given
    full = instances_full_resolution(low, labels, THINGS, (8, 8), instance_classes=np.array([CAR, PED]))
    assert full.dtype == np.uint16 and full.shape == (8, 8)
    assert full[0, 0] == 0 and full[1, 1] == 1 and full[5, 5] == 2 and full[7, 7] == 0
    full2 = instances_full_resolution(low, labels, THINGS, (8, 8))
    assert full2[7, 7] == 2 and full2[0, 0] == 0
    with pytest.raises(DataError):
        instances_full_resolution(low, labels, THINGS, (9, 8))


def test_describe_instances_matches_reference():
    rng = np.random.default_rng(1)
    m = np.zeros((30, 40), np.uint16)
    m[3:10, 5:20] = 1
    m[12:29, 30:33] = 3  # id 2 has no pixels and is skipped
    m[rng.random((30, 40)) < 0.05] = 0
    insts = describe_instances(m, np.array([0.9, 0.5, 0.7], np.float32), np.array([8, 9, 10]))
    assert [i.index for i in insts] == [1, 3]
    for inst in insts:
        ys, xs = np.nonzero(m == inst.index)
        assert inst.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert inst.area == xs.size
        assert inst.centroid == pytest.approx((xs.mean(), ys.mean()))
    assert insts[1].class_id == 10 and insts[1].score == pytest.approx(0.7)


def test_grouper_end_to_end_two_objects():
    inst, off = _two_blobs()
    h, w = inst.shape
    logits = np.zeros((11, h, w), np.float32)
    logits[3] = 1.0
    logits[CAR][inst == 1] = 5.0
    logits[PED][inst == 2] = 5.0
    heat = np.full((h, w), -6.0, np.float32)
    heat[4, 4] = 3.0
    heat[10, 17] = 2.0
    labels_full = np.repeat(np.repeat(np.argmax(logits, 0).astype(np.uint8), 4, 0), 4, 1)
    grouper = PanopticGrouper(thing_ids=THINGS, heatmap_is_logit=True, min_area=4)
    imap, insts = grouper(logits, heat, off, labels_full)
    assert imap.shape == (4 * h, 4 * w) and imap.dtype == np.uint16
    assert [(i.index, i.class_id) for i in insts] == [(1, CAR), (2, PED)]
    assert insts[0].box == (8.0, 8.0, 32.0, 32.0) and insts[0].area == 24 * 24
    assert insts[0].score == pytest.approx(1 / (1 + np.exp(-3.0)) * np.exp(5) / (np.exp(5) + np.e + 9), rel=1e-5)
    with pytest.raises(ConfigError):
        PanopticGrouper(thing_ids=())


@pytest.mark.parametrize("grid,frame", [((120, 88), (960, 540)), ((120, 68), (1920, 1080)), ((120, 90), (480, 360)),
                                        ((5, 7), (11, 13)), ((10, 10), (7, 5)), ((240, 135), (960, 540))])
def test_full_resolution_window_equals_whole_frame_nearest_resize(grid, frame):
    """Only the window the instances reach is computed: same map as resizing the whole grid with
    cv2.INTER_NEAREST and clearing, and describe_instances over the window gives the same objects."""
    (w, h), (W, H) = grid, frame
    rng = np.random.default_rng(w * h + W)
    low = np.zeros((h, w), np.int32)
    for k in range(1, 4):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        low[y:y + int(rng.integers(1, 6)), x:x + int(rng.integers(1, 6))] = k
    classes = np.array([CAR, PED, CAR])
    labels = rng.choice(np.array([3, CAR, PED], np.uint8), size=(H, W), p=[0.2, 0.5, 0.3])
    ref = cv2.resize(low.astype(np.uint16), (W, H), interpolation=cv2.INTER_NEAREST)
    ref_cls = ref.copy()
    ref_cls[np.concatenate([[255], classes]).astype(np.uint8)[ref] != labels] = 0
    full = instances_full_resolution(low, labels, THINGS, (W, H), instance_classes=classes)
    np.testing.assert_array_equal(full, ref_cls)
    ref[~np.isin(labels, THINGS)] = 0
    np.testing.assert_array_equal(instances_full_resolution(low, labels, THINGS, (W, H)), ref)
    scores = np.array([0.9, 0.5, 0.7], np.float32)
    from perception.postprocess.panoptic import _full_resolution_window

    full_w, window = _full_resolution_window(low, labels, THINGS, (W, H), classes)
    np.testing.assert_array_equal(full_w, ref_cls)
    assert describe_instances(full_w, scores, classes, window=window) == describe_instances(ref_cls, scores, classes)


def test_full_resolution_of_an_empty_map_is_zero():
    labels = np.full((20, 30), CAR, np.uint8)
    full = instances_full_resolution(np.zeros((5, 6), np.int32), labels, THINGS, (30, 20))
    assert full.shape == (20, 30) and not full.any()
    assert describe_instances(full, np.zeros(2, np.float32), np.array([CAR, CAR]), window=(0, 0, 0, 0)) == []
