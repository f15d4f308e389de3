"""Learned re-id embeddings: crops, the ONNX Runtime embedder (tiny models made here and the bundled
one), and what the tracker does with embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import BackendError, ConfigError, DataError
from perception.tracking import Tracker
from perception.tracking.reid import DEFAULT_REID_MODEL, ReIdEmbedder, crop_instances
from tests.tracking.helpers import inst, meta


def _linear_model(path, *, side: int = 8, dim: int = 16, channels: int = 4, seed: int = 0):
    """A real ONNX model: crops [N, channels, side, side] -> flatten -> matmul -> [N, dim]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(channels * side * side, dim)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["crops"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
        ],
        "reid",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["n", channels, side, side])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", dim])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_crops_hold_the_box_resized_and_the_instance_mask():
    imap = np.zeros((60, 80), np.uint16)
    img = np.zeros((60, 80, 3), np.uint8)
    imap[10:30, 20:60] = 1
    img[10:30, 20:60] = (0, 0, 255)
    imap[10:30, 40:60] = 2  # a neighbour covers the right half of instance 1's box
    img[10:30, 40:60] = (255, 0, 0)
    out = np.zeros((4, 8, 8, 4), np.uint8)
    boxes = [inst(1, (20, 10, 60, 30), cls=9), inst(2, (300, 300, 320, 320), cls=9)]
    crops = crop_instances(img, imap, boxes, size=8, out=out)
    assert crops.shape == (2, 8, 8, 4)
    left, right = crops[0, :, :4], crops[0, :, 4:]
    assert (left[..., 3] == 255).all() and (right[..., 3] == 0).all()  # the mask channel is the instance's own
    assert (left[..., 2] == 255).all() and (right[..., 0] == 255).all()  # colours are the whole box's
    assert (crops[1] == 0).all()  # a box outside the frame gives an empty crop


def test_embedder_refuses_missing_unloadable_and_wrongly_shaped_models(tmp_path):
    with pytest.raises(BackendError, match="does not exist"):
        ReIdEmbedder(model=tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(BackendError, match="could not be loaded"):
        ReIdEmbedder(model=tmp_path / "junk.onnx")
    with pytest.raises(BackendError, match=r"float32\[N, 4, S, S\]"):
        ReIdEmbedder(model=_linear_model(tmp_path / "rgb.onnx", channels=3))


def test_embedder_gives_unit_non_negative_rows_in_instance_order(tmp_path):
    emb = ReIdEmbedder(model=_linear_model(tmp_path / "lin.onnx"), max_instances=1)
    assert (emb.size, emb.dim) == (8, 16)
    imap = np.zeros((48, 64), np.uint16)
    img = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    imap[5:20, 5:30] = 1
    imap[25:45, 30:60] = 2
    a, b = inst(1, (5, 5, 30, 20), cls=9), inst(2, (30, 25, 60, 45), cls=9)
    e = emb(img, imap, [a, b])  # more instances than the buffer: it grows
    assert e.shape == (2, 16) and e.dtype == np.float32
    assert (e >= 0).all() and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.allclose(emb(img, imap, [b, a]), e[::-1], atol=1e-6)
    assert emb(img, imap, []).shape == (0, 16)
    with pytest.raises(DataError, match="differ"):
        emb(img, imap[:10], [a])


def test_bundled_model_tells_generated_objects_apart():
    # a sequence the model was not trained on (training seeds 1000-1059)
    from perception.sim import SceneConfig, SceneSequence
    from perception.sim.detector import DetectorSimulator

    emb = ReIdEmbedder(model=DEFAULT_REID_MODEL)
    scene, det = SceneSequence(config=SceneConfig(num_frames=40, seed=5)), DetectorSimulator(seed=5)
    rows, gts, classes = [], [], []
    for i in range(len(scene)):
        f = scene.frame(i)
        d = det(f)
        rows.append(emb(f.image, d.instance_map, d.instances))
        gts += d.gt_ids
        classes += [x.class_id for x in d.instances]
    e, g, c = np.concatenate(rows), np.asarray(gts), np.asarray(classes)
    keep = g > 0
    e, g, c = e[keep], g[keep], c[keep]
    sim = e @ e.T
    same = (g[:, None] == g[None, :]) & ~np.eye(g.size, dtype=bool)
    other = (g[:, None] != g[None, :]) & (c[:, None] == c[None, :])  # another object of the same class
    assert same.sum() > 100 and other.sum() > 100
    # measured: medians 0.96 (same object) and 0.11 (another of its class) on this sequence
    assert np.median(sim[same]) > 0.85
    assert np.median(sim[other]) < 0.3


def _swap(embeddings: bool, **kwargs) -> tuple[int, int, int, int]:
    """Two people of one class stand side by side for 5 frames, then take each other's places; no
    image (no colours), so only the embeddings can tell them apart. Returns ids before and after."""
    left, right = (100, 100, 180, 160), (140, 100, 220, 160)
    tr = Tracker(**kwargs)
    codes = np.eye(2, 8, dtype=np.float32)  # person 1, person 2
    for i in range(6):
        b1, b2 = (left, right) if i < 5 else (right, left)
        imap = np.zeros((480, 640), np.uint16)
        imap[b1[1] : b1[3], b1[0] : b1[2]] = 1
        imap[b2[1] : b2[3], b2[0] : b2[2]] = 2
        people = [inst(1, b1, cls=9), inst(2, b2, cls=9)]
        tracks = tr.update(people, meta(i), imap, embeddings=codes if embeddings else None)
        ids = {t.instance_index: t.track_id for t in tracks}
        if i == 4:
            before = ids[1], ids[2]
    return (*before, ids[1], ids[2])


def test_embeddings_keep_ids_when_objects_swap_places_and_boxes_alone_do_not():
    a0, b0, a1, b1 = _swap(True)
    assert (a1, b1) == (a0, b0)
    a0, b0, a1, b1 = _swap(False)
    assert (a1, b1) == (b0, a0)


def test_tracker_checks_embeddings_and_their_weight():
    tr = Tracker()
    imap = np.zeros((480, 640), np.uint16)
    imap[10:40, 10:40] = 1
    with pytest.raises(DataError, match=r"\[1, D\]"):
        tr.update([inst(1, (10, 10, 40, 40), cls=9)], meta(0), imap, embeddings=np.ones((2, 4), np.float32))
    tr.update([inst(1, (10, 10, 40, 40), cls=9)], meta(0), imap, embeddings=np.ones((1, 4), np.float32) / 2)
    with pytest.raises(DataError, match="changed size"):
        tr.update([inst(1, (10, 10, 40, 40), cls=9)], meta(1), imap, embeddings=np.ones((1, 8), np.float32))
    with pytest.raises(ConfigError, match="embedding_weight"):
        Tracker(embedding_weight=1.5)
