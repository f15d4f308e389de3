"""Colour appearance: histogram embeddings, Bhattacharyya similarity, and what they change in the tracker."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import DataError
from perception.tracking import Tracker
from perception.tracking.appearance import (
    blend_embeddings,
    colour_embeddings,
    context_weights,
    similarity,
)
from perception.types import FrameMeta
from tests.tracking.helpers import inst

RED, BLUE, GREY, GREEN = (0, 0, 220), (220, 0, 0), (100, 100, 100), (0, 200, 0)


def _scene(rects, size=(480, 640)):
    """Instance map and BGR image with filled rectangles ``(id, (x0, y0, x1, y1), colour)``."""
    imap = np.zeros(size, np.uint16)
    img = np.full((*size, 3), GREY, np.uint8)
    for k, (x0, y0, x1, y1), colour in rects:
        imap[y0:y1, x0:x1] = k
        img[y0:y1, x0:x1] = colour
    return imap, img


def test_same_colours_give_one_and_disjoint_colours_zero():
    imap, img = _scene([(1, (40, 40, 120, 120), RED), (2, (200, 40, 280, 120), BLUE), (3, (300, 200, 340, 260), RED)])
    emb, ok = colour_embeddings(imap[::4, ::4], img, [1, 2, 3], stride=4)
    assert ok.all() and emb.shape == (3, 216) and emb.dtype == np.float32
    np.testing.assert_allclose((emb**2).sum(axis=1), 1.0, rtol=1e-6)  # roots of normalised histograms
    s = similarity(emb, emb)
    np.testing.assert_allclose(s, [[1, 0, 1], [0, 1, 0], [1, 0, 1]], atol=1e-6)


def test_outline_samples_are_left_out_unless_the_instance_is_thin():
    # a red square whose mask is one grid step too wide on every side (a detector's mask a few pixels
    # off): the ring of grey it covers must not count; a thin red bar has no inside samples at all
    imap, img = _scene([(2, (200, 40, 204, 140), RED)])
    imap[36:124, 36:124] = 1
    img[40:120, 40:120] = RED
    emb, ok = colour_embeddings(imap[::4, ::4], img, [1, 2], stride=4)
    assert ok.all()
    red_map, red_img = _scene([(1, (40, 40, 120, 120), RED)])
    red, _ = colour_embeddings(red_map[::4, ::4], red_img, [1], stride=4)
    assert similarity(emb[:1], red)[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert similarity(emb[1:], red)[0, 0] == pytest.approx(1.0, abs=1e-6)  # the bar: all its samples


def test_too_few_samples_give_no_embedding_and_stride_reads_the_right_pixels():
    imap, img = _scene([(1, (40, 40, 48, 48), RED), (2, (100, 100, 180, 180), GREY)])
    # colour only the sampled pixels of instance 2 blue: with stride 4 it must look blue
    img[100:180:4, 100:180:4] = BLUE
    emb, ok = colour_embeddings(imap[::4, ::4], img, [1, 2, 7], stride=4, min_samples=8)
    assert ok.tolist() == [False, True, False]  # 4 samples; absent id
    assert not emb[0].any() and not emb[2].any()
    blue_map, blue_img = _scene([(1, (0, 0, 64, 64), BLUE)])
    blue, _ = colour_embeddings(blue_map[::4, ::4], blue_img, [1], stride=4)
    assert similarity(emb[1:2], blue)[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_bad_inputs_raise_data_error():
    imap, img = _scene([(1, (40, 40, 120, 120), RED)])
    with pytest.raises(DataError, match="does not give the grid"):
        colour_embeddings(imap[::4, ::4], img[:-8], [1], stride=4)
    with pytest.raises(DataError, match="uint8"):
        colour_embeddings(imap[::4, ::4], img.astype(np.float32), [1], stride=4)
    with pytest.raises(DataError, match="bins"):
        colour_embeddings(imap[::4, ::4], img, [1], stride=4, bins=1)


def test_blend_averages_histograms_and_keeps_them_normalised():
    imap, img = _scene([(1, (40, 40, 120, 120), RED), (2, (200, 40, 280, 120), BLUE)])
    emb, _ = colour_embeddings(imap[::4, ::4], img, [1, 2], stride=4)
    out = blend_embeddings(emb[:1], emb[1:], 0.75)
    np.testing.assert_allclose((out**2).sum(), 1.0, rtol=1e-6)
    assert similarity(out, emb).ravel() == pytest.approx([np.sqrt(0.75), np.sqrt(0.25)], abs=1e-6)
    np.testing.assert_array_equal(blend_embeddings(emb[:1], emb[1:], 0.0), emb[1:])
    assert emb[0].max() > 0  # inputs untouched


def _cell(colour) -> int:
    b, g, r = (v * 6 // 256 for v in colour)
    return (b * 6 + g) * 6 + r


def test_context_weights_play_down_the_surroundings_but_never_the_instance_itself():
    # a red square alone on grey, and a blue square with a green one beside it (within its reach)
    rects = [(1, (40, 40, 120, 120), RED), (2, (300, 200, 380, 280), BLUE), (3, (380, 200, 460, 280), GREEN)]
    imap, img = _scene(rects)
    boxes = np.array([box for _, box, _ in rects], float)
    wgt = context_weights(imap[::4, ::4], img, [1, 2, 3], boxes, stride=4, floor=0.01, grow=0.25)
    assert wgt.shape == (3, 216) and wgt.dtype == np.float32 and (wgt > 0).all() and (wgt <= 1).all()
    red, blue, green, grey = (_cell(c) for c in (RED, BLUE, GREEN, GREY))
    # its own colour, which fills its box, is not its context: full weight
    assert wgt[0, red] == 1 and wgt[1, blue] == 1 and wgt[2, green] == 1
    # the grey all around is played down to about floor / its share of the context
    assert wgt[0, grey] < 0.02
    # each neighbour plays down the other's colour; the lone square's context has no green
    assert wgt[1, green] < 0.1 and wgt[2, blue] < 0.1 and wgt[0, green] == 1
    # colours absent from every context keep weight 1
    assert wgt[:, _cell((255, 255, 255))].tolist() == [1, 1, 1]
    with pytest.raises(DataError, match="floor"):
        context_weights(imap[::4, ::4], img, [1], boxes[:1], stride=4, floor=0.0)
    with pytest.raises(DataError, match="boxes"):
        context_weights(imap[::4, ::4], img, [1, 2], boxes[:1], stride=4)
    assert context_weights(imap[::4, ::4], img, [], np.zeros((0, 4)), stride=4).shape == (0, 216)


def test_weighted_embeddings_of_objects_in_the_same_surroundings_differ():
    # two thin objects whose masks a detector drew a few pixels too wide: most of each mask is the
    # grey road, so their plain histograms look alike; with the road played down they do not
    imap = np.zeros((240, 320), np.uint16)
    img = np.full((240, 320, 3), GREY, np.uint8)
    imap[40:200, 60:100] = 1
    imap[40:200, 200:240] = 2
    img[40:200, 76:84] = RED  # a red pole inside mask 1
    img[40:200, 216:224] = BLUE
    boxes = np.array([(60, 40, 100, 200), (200, 40, 240, 200)], float)
    grid = imap[::4, ::4]
    plain, _ = colour_embeddings(grid, img, [1, 2], stride=4)
    wgt = context_weights(grid, img, [1, 2], boxes, stride=4)
    weighted, ok = colour_embeddings(grid, img, [1, 2], stride=4, cell_weights=wgt)
    assert ok.all()
    np.testing.assert_allclose((weighted**2).sum(axis=1), 1.0, rtol=1e-5)
    assert similarity(plain[:1], plain[1:])[0, 0] > 0.7
    assert similarity(weighted[:1], weighted[1:])[0, 0] < 0.2


def _swap_ids(*, thin: bool = False, **kwargs) -> tuple[int, int, int, int]:
    """Two people of one class stand side by side for 5 frames, then take each other's places (as a
    crossing seen at a low frame rate does). Returns the red and blue ids before and after.

    ``thin``: each person is a vertical stripe a fifth of its mask's width, the rest of the mask
    grey road (a thin object under a mask a detector drew too wide)."""
    left, right = (100, 100, 180, 160), (140, 100, 220, 160)  # box IoU 1/3: both pairs admissible
    tr = Tracker(**kwargs)
    for i in range(6):
        red_box, blue_box = (left, right) if i < 5 else (right, left)
        imap, img = _scene([(1, red_box, RED), (2, blue_box, BLUE)])
        if thin:
            for x0, _, x1, _ in (red_box, blue_box):
                img[:, x0 : x0 + 32] = GREY
                img[:, x1 - 32 : x1] = GREY
        t = round(i / 15 * 1e9)
        meta = FrameMeta(seq=i, camera_id="t", frame_index=i, t_mono_ns=t, t_wall_ns=t, pts_ns=t, width=640, height=480)
        tracks = tr.update([inst(1, red_box, cls=9), inst(2, blue_box, cls=9)], meta, imap, img)
        ids = {tk.instance_index: tk.track_id for tk in tracks}
        if i == 4:
            before = ids[1], ids[2]
    return (*before, ids[1], ids[2])


def test_colours_keep_ids_when_objects_swap_places():
    red0, blue0, red1, blue1 = _swap_ids()
    assert (red1, blue1) == (red0, blue0)


def test_without_appearance_ids_follow_positions():
    # the same frames with colour switched off: the boxes alone hand each id to the other person,
    # which is what the test above guards against
    red0, blue0, red1, blue1 = _swap_ids(appearance_weight=0.0, appearance_gate=0.0)
    assert (red1, blue1) == (blue0, red0)


def test_surroundings_in_the_masks_do_not_make_two_people_look_alike():
    # four fifths of each mask is the same grey: plain histograms find the two alike and the boxes
    # hand each id to the other; with the grey played down the colours keep them
    red0, blue0, red1, blue1 = _swap_ids(thin=True, appearance_context=0.01)
    assert (red1, blue1) == (red0, blue0)
    red0, blue0, red1, blue1 = _swap_ids(thin=True)  # the default: plain histograms
    assert (red1, blue1) == (blue0, red0)


def _recover_after_a_miss(**kwargs) -> tuple[int, int | None, int | None]:
    """A red person is tracked for 5 frames, missed in the sixth, and in the seventh two people of its
    class stand near where it was, neither overlapping it enough for the IoU stages: one 0.6 box
    sizes away, half red and half green, one 1.2 box sizes away, all red. Returns the red person's
    track id and the ids the near and the far detection got in the seventh frame."""
    box = (300, 200, 360, 280)  # size sqrt(60 * 80) = 69 px
    near, far = (341, 200, 401, 280), (217, 200, 277, 280)  # centres 41 px right and 83 px left
    tr = Tracker(**kwargs)
    for i in range(7):
        t = round(i / 15 * 1e9)
        meta = FrameMeta(seq=i, camera_id="t", frame_index=i, t_mono_ns=t, t_wall_ns=t, pts_ns=t, width=640, height=480)
        if i < 5:
            imap, img = _scene([(1, box, RED)])
            tracks = tr.update([inst(1, box, cls=9)], meta, imap, img)
            first = tracks[0].track_id
        elif i == 5:
            tr.update([], meta, *_scene([]))
        else:
            imap, img = _scene([(1, near, RED), (2, far, RED)])
            img[240:280, near[0] : near[2]] = GREEN  # the near one's lower half
            tracks = tr.update([inst(1, near, cls=9), inst(2, far, cls=9)], meta, imap, img)
    ids = {tk.instance_index: tk.track_id for tk in tracks}
    return first, ids.get(1), ids.get(2)


def test_recovery_prefers_the_detection_that_looks_like_the_track_to_the_nearer_one():
    first, near, far = _recover_after_a_miss()
    assert far == first and near != first
    # by distance alone the nearer one, whose colours still pass the recovery gate, takes the id
    first, near, far = _recover_after_a_miss(recover_appearance_weight=0.0)
    assert near == first and far != first


def test_tracker_rejects_an_image_of_another_size():
    imap, img = _scene([(1, (40, 40, 120, 120), RED)])
    meta = FrameMeta(seq=0, camera_id="t", frame_index=0, t_mono_ns=0, t_wall_ns=0, pts_ns=0, width=640, height=480)
    with pytest.raises(DataError, match="differ in size"):
        Tracker().update([inst(1, (40, 40, 120, 120), cls=9)], meta, imap, img[:240])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"appearance_weight": -1},
        {"appearance_gate": 1.5},
        {"appearance_bins": 1},
        {"appearance_momentum": 1.0},
        {"appearance_context": -0.1},
        {"appearance_context_grow": -1},
        {"recover_appearance_weight": -1},
    ],
)
def test_bad_appearance_settings_raise_config_error(kwargs):
    from perception.errors import ConfigError

    with pytest.raises(ConfigError, match="appearance"):
        Tracker(**kwargs)
