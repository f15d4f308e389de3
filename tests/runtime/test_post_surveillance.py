"""PostProcessor with the fixed-camera mode and counting on: motion instances tracked, crossings counted."""

from __future__ import annotations

import numpy as np

from perception.config import parse_config
from perception.modelcard import load_card
from perception.paths import DATA_ROOT
from perception.runtime.post import PostProcessor
from perception.types import FrameMeta


def test_a_person_the_centre_head_misses_is_tracked_and_counted():
    card = load_card(DATA_ROOT / "engines" / "camvid_lite0_panoptic.onnx")
    cfg = parse_config({
        "postprocess": {"upsample": "bilinear", "motion": "mog2",
                        "background": {"min_area": 100, "scale": 1.0, "warmup_frames": 5, "classes": ["Pedestrian"]}},
        "tracking": {"confirm_hits": 2},
        "analytics": {"lines": [{"name": "mid", "points": [[0.5, 0.0], [0.5, 1.0]]}],
                      "zones": [{"name": "left", "points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}]},
    })
    post = PostProcessor(card=card, postprocess=cfg.postprocess, tracking=cfg.tracking, analytics=cfg.analytics)
    rng = np.random.default_rng(0)
    w, h = 160, 128
    bg = (np.full((h, w, 3), 140) + rng.integers(0, 20, (h, w, 3))).astype(np.uint8)
    logits = np.zeros((11, h // 4, w // 4), np.float32)
    logits[4] = 2.0  # pavement everywhere, the person a little less sure
    logits[9, 10:22, :] = 1.5
    logits[8, 10:22, :] = 1.0
    outputs = {"semantic_logits": logits, "center_heatmap": np.zeros((h // 4, w // 4), np.float32),
               "center_offsets": np.zeros((2, h // 4, w // 4), np.float32)}
    ids = set()
    for i in range(40):
        frame = bg.copy()
        x = 150 - 4 * i  # walks right to left across the middle line at frame ~18
        if i >= 8:
            frame[45:85, max(0, x - 8):max(0, x + 8)] = (60, 40, 30)
        meta = FrameMeta(seq=i, camera_id="c", frame_index=i, t_mono_ns=i * 10**8, t_wall_ns=i * 10**8,
                         pts_ns=i * 10**8, width=w, height=h)
        r = post.process(meta=meta, frame=frame, outputs=outputs, timings_ms={})
        ids |= {t.track_id for t in r.tracks if t.class_id == 9}
        if i == 30:
            assert [d.class_id for d in r.instances] == [9] and "motion" in r.latencies_ms
            assert r.analytics.zones[0].counts == {9: 1}
    assert len(ids) == 1  # one person, one id
    (line,) = r.analytics.lines
    # A above, B below: A->B points down, so its right side on the image is the left half; walking
    # leftward goes from its left side to its right: directions[0] ("in")
    assert line.counts == ({9: 1}, {})
