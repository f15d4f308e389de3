"""The tracker's two guards against ID switches after missed detections: the recovery stage leaves
a detection alone when two tracks could claim it equally (``recover_margin``), and a track confirmed
next to a lost one that looks like it takes the lost one's id (``link_distance``, ``link_appearance``).

No image is passed: learned embeddings alone carry the appearance, so every similarity is exact."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import ConfigError
from perception.tracking import Tracker
from tests.tracking.helpers import inst, meta

E = np.eye(3, 8, dtype=np.float32)  # codes of objects 0, 1 and of "something else"
A_BOX, B_BOX = (100, 100, 140, 200), (150, 100, 190, 200)  # two pedestrians side by side


def _frame(tr: Tracker, i: int, boxes, codes) -> dict[int, int]:
    """One update with detections ``boxes`` (instance indices 1..K) and their embeddings;
    returns instance index -> reported track id."""
    imap = np.zeros((480, 640), np.uint16)
    for k, (x0, y0, x1, y1) in enumerate(boxes, 1):
        imap[y0:y1, x0:x1] = k
    dets = [inst(k, b, cls=9) for k, b in enumerate(boxes, 1)]
    emb = np.asarray(codes, np.float32).reshape(len(boxes), E.shape[1])
    return {t.instance_index: t.track_id for t in tr.update(dets, meta(i), imap, embeddings=emb)}


def _recover_between(code, **kwargs) -> tuple[dict[int, int], dict[int, int]]:
    """A and B stand still for 5 frames; in frame 5 both are missed and one partial view straddles
    them (too little overlap for the IoU stages, near enough to either for recovery)."""
    tr = Tracker(**kwargs)
    for i in range(5):
        first = _frame(tr, i, [A_BOX, B_BOX], E[:2])
    return first, _frame(tr, 5, [(120, 160, 170, 200)], [code])


def test_recovery_leaves_a_detection_that_two_tracks_claim_equally_unmatched():
    both = (E[0] + E[1]) / np.sqrt(2)  # as like A as like B
    first, ids = _recover_between(both)
    assert len(first) == 2 and ids == {}
    _, ids = _recover_between(both, recover_margin=0.0)  # without the margin one of them takes it
    assert list(ids) == [1] and ids[1] in first.values()


def test_recovery_still_takes_a_detection_that_looks_like_one_track():
    like_b = 0.95 * E[1] + np.sqrt(1 - 0.95**2) * E[0]
    first, ids = _recover_between(like_b)
    assert ids == {1: first[2]}


def _reappear(good_view=E[0], **kwargs) -> tuple[int, dict[int, int]]:
    """A stands still for 5 frames, is missed for 2, then is seen 1.3 box sizes away: first in a
    view whose embedding is poor (recovery vetoes it and it starts a track), then in ``good_view``."""
    tr = Tracker(**kwargs)
    for i in range(5):
        a_id = _frame(tr, i, [A_BOX], E[:1])[1]
    for i in (5, 6):
        assert _frame(tr, i, [], np.zeros((0, E.shape[1]))) == {}
    poor = 0.3 * E[0] + np.sqrt(1 - 0.3**2) * E[2]
    assert _frame(tr, 7, [(150, 100, 190, 200)], [poor]) == {}  # a tentative track: not reported
    return a_id, _frame(tr, 8, [(152, 100, 192, 200)], [good_view])


def test_a_track_confirmed_next_to_a_lost_one_that_looks_like_it_takes_its_id():
    a_id, ids = _reappear()
    assert ids == {1: a_id}
    a_id, ids = _reappear(link_distance=0.0)  # off: the object comes back under a new id
    assert len(ids) == 1 and ids[1] > a_id


def test_linking_needs_the_lost_track_to_look_alike_and_to_be_near():
    a_id, ids = _reappear(link_distance=1.0)  # 1.3 box sizes away: too far
    assert len(ids) == 1 and ids[1] > a_id
    half_like_a = 0.5 * E[0] + np.sqrt(1 - 0.5**2) * E[2]  # similarity 0.5 < link_appearance 0.6
    a_id, ids = _reappear(half_like_a)
    assert len(ids) == 1 and ids[1] > a_id
    a_id, ids = _reappear(half_like_a, link_appearance=0.45)
    assert ids == {1: a_id}


@pytest.mark.parametrize(
    "kwargs", [{"recover_margin": -0.1}, {"link_distance": -1.0}, {"link_appearance": 1.5}]
)
def test_bad_margin_and_link_settings_are_refused(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        Tracker(**kwargs)
