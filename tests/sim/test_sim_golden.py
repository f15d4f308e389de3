"""Pin the generated scenes and the detector simulator bit for bit.

Tracking figures (``perception eval-tracking``, docs/tracking.md) are measured on these scenes, so a
change to the generator or the simulator that moves a single pixel or draw changes every published
figure. Refactors must keep these digests; a deliberate change updates them together with the figures.
The digests are of integer outputs and random draws only (label and instance maps, boxes, areas, ids,
scores), plus one of the textured image, which also depends on OpenCV's and numpy's float kernels.
"""

from __future__ import annotations

import hashlib

from perception.sim import DetectorSimulator, SceneConfig, SceneSequence

SEEDS = (0, 1, 2)
GOLDEN_GT = {
    0: "82a80bee2d6f30dca73f",
    1: "bec660abc67764b52e0f",
    2: "5b0014bbbe229498c915",
}
GOLDEN_DETECTIONS = {
    0: "f0bca4234933cb220094",
    1: "4152682348c0bb457a53",
    2: "f155f4f6072f23c8f730",
}
GOLDEN_IMAGES = {
    0: "baca549701f0ff125518",
    1: "98c70d7d710442bf0f84",
    2: "9eb5b3c0a5c6e6c50d38",
}


def _digests(seed: int) -> tuple[str, str, str]:
    scene = SceneSequence(config=SceneConfig(seed=seed, width=320, height=180, num_frames=24))
    detector = DetectorSimulator(seed=seed, fp_rate=0.3, mask_jitter_px=3)
    gt, det, img = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    for frame in scene:
        gt.update(frame.semantic.tobytes())
        gt.update(frame.instances.tobytes())
        for o in frame.objects:
            gt.update(repr((o.object_id, o.class_id, o.box, o.area, o.full_area, o.inframe_area, o.full_box)).encode())
        img.update(frame.image.tobytes())
        d = detector(frame)
        det.update(d.instance_map.tobytes())
        det.update(repr((d.gt_ids, d.missed_ids, d.eligible_ids, d.num_false_positives)).encode())
        for inst in d.instances:
            det.update(repr((inst.index, inst.class_id, inst.score, inst.box, inst.area)).encode())
    return gt.hexdigest()[:20], det.hexdigest()[:20], img.hexdigest()[:20]


def test_scenes_and_detections_are_unchanged():
    got = {seed: _digests(seed) for seed in SEEDS}
    assert {s: g[0] for s, g in got.items()} == GOLDEN_GT, "ground truth (labels, instances, objects) changed"
    assert {s: g[1] for s, g in got.items()} == GOLDEN_DETECTIONS, "detector simulator output changed"
    assert {s: g[2] for s, g in got.items()} == GOLDEN_IMAGES, "rendered image pixels changed"

