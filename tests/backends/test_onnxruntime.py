"""ONNX Runtime backend on real (tiny) ONNX models: tensors declared, checked against the card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perception.backends.factory import open_backend, select_backend_kind
from perception.backends.preprocess import Preprocessor
from perception.errors import BackendError, ModelCardError
from perception.inference import Segmenter
from perception.modelcard import load_card
from tests.tinymodel import make_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("m"))


def test_declares_tensors_and_runs(tiny):
    with open_backend(tiny) as b:
        assert b.name == "onnxruntime"
        assert list(b.inputs) == ["image"] and b.inputs["image"].shape == (None, 3, None, None)
        assert set(b.outputs) == {"semantic_logits", "center_heatmap", "center_offsets"}
        seg = Segmenter(backend=b)
        frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
        out = seg(frame)
        assert out.semantic_logits.shape == (11, 12, 16)
        assert out.center_heatmap.shape == (12, 16) and out.center_offsets.shape == (2, 12, 16)
        assert out.stride == 4 and out.input_size == (64, 48)


def test_matches_a_direct_onnxruntime_session(tiny):
    import onnxruntime as ort

    card = load_card(tiny)
    frame = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    x = Preprocessor(card=card)(frame).copy()
    ref = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with open_backend(tiny) as b:
        got = b.infer({"image": x})["semantic_logits"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_preprocess_normalisation_and_colour_order(tiny):
    card = load_card(tiny)
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[..., 2] = 255  # red in BGR
    x = Preprocessor(card=card)(frame)
    mean, std = np.array(card.input.mean), np.array(card.input.std)
    np.testing.assert_allclose(x[0, :, 0, 0], (np.array([1.0, 0.0, 0.0]) - mean) / std, rtol=1e-5)


def test_dynamic_input_sizes(tiny):
    with open_backend(tiny, input_size=(128, 96)) as b:
        out = Segmenter(backend=b)(np.zeros((480, 640, 3), np.uint8))
        assert out.semantic_logits.shape == (11, 24, 32)
    with pytest.raises(BackendError, match="multiples of 4"):
        open_backend(tiny, input_size=(130, 96))


def test_fixed_model_refuses_other_sizes(tmp_path):
    p = make_tiny_model(tmp_path, name="fixed", dynamic=False)
    with pytest.raises(BackendError, match="fixed input size 64x48"):
        open_backend(p, input_size=(128, 96))


def _edit_card(path, fn):
    cp = path.with_name(path.stem + ".card.json")
    data = json.loads(cp.read_text())
    fn(data)
    cp.write_text(json.dumps(data))


def test_card_with_wrong_class_count_is_refused(tmp_path):
    p = make_tiny_model(tmp_path, num_classes=5)
    _edit_card(p, lambda d: (d["classes"].append({"id": 5, "name": "x", "color": [1, 2, 3], "is_thing": False}),
                             d["outputs"][0].update(channels=6)))
    with pytest.raises(ModelCardError, match=r"semantic_logits.*should be \[N,6"):
        open_backend(p)


def test_card_naming_a_missing_output_is_refused(tmp_path):
    p = make_tiny_model(tmp_path)
    _edit_card(p, lambda d: d["outputs"][1].update(name="heatmap"))
    with pytest.raises(ModelCardError, match=r"output 'heatmap'.*not in the model"):
        open_backend(p)


def test_card_with_wrong_fixed_size_is_refused(tmp_path):
    p = make_tiny_model(tmp_path, dynamic=False)
    _edit_card(p, lambda d: d["input"].update(width=128))
    with pytest.raises(ModelCardError, match="input is 64x48 but the card says 128x48"):
        open_backend(p)


def test_missing_card_and_model(tmp_path):
    p = make_tiny_model(tmp_path)
    p.with_name(p.stem + ".card.json").unlink()
    with pytest.raises(ModelCardError, match="model card not found"):
        open_backend(p)
    with pytest.raises(BackendError, match="model file not found"):
        open_backend(tmp_path / "nope.onnx")
    with pytest.raises(ModelCardError, match=r"model file not found: .*nope\.onnx \(nor its card nope\.card\.json\)"):
        load_card(tmp_path / "nope.onnx")


def test_corrupt_model_is_a_backend_error(tmp_path):
    p = make_tiny_model(tmp_path)
    p.write_bytes(b"not an onnx file")
    with pytest.raises(BackendError, match="cannot load ONNX model"):
        open_backend(p)


def test_feeds_are_checked(tiny):
    with open_backend(tiny) as b:
        with pytest.raises(BackendError, match="must be float32"):
            b.infer({"image": np.zeros((1, 3, 48, 64), np.float64)})
        with pytest.raises(BackendError, match="missing"):
            b.infer({})


def test_auto_selection_falls_back_to_onnxruntime_without_tensorrt():
    kind, why = select_backend_kind("auto")
    assert kind == "onnxruntime" and why
    with pytest.raises(BackendError, match="unknown backend"):
        select_backend_kind("openvino")


# --- the backend owns its preprocessing (issue 27, deliverable 5) ----------------------------------------


def _old_segmenter_outputs(backend, card, input_size, frame):
    """What Segmenter did before the backend owned its preprocessing: a CPU Preprocessor, then infer."""
    return backend.infer({"image": Preprocessor(card=card, input_size=input_size)(frame)})


@pytest.mark.parametrize("frame_hw", [(48, 64), (96, 128), (360, 480), (40, 72)])
@pytest.mark.parametrize("input_size", [None, (128, 96)])
def test_infer_frame_is_bit_identical_to_preprocess_then_infer(tiny, frame_hw, input_size):
    card = load_card(tiny)
    frame = np.random.default_rng(3).integers(0, 255, (*frame_hw, 3), dtype=np.uint8)
    with open_backend(tiny, input_size=input_size) as a, open_backend(tiny, input_size=input_size) as b:
        want = {k: v.copy() for k, v in _old_segmenter_outputs(a, card, input_size, frame).items()}
        got = b.infer_frame(frame)
        assert set(got) == set(want)
        for name in want:
            assert got[name].dtype == want[name].dtype
            np.testing.assert_array_equal(got[name], want[name])
        out = Segmenter(backend=b)(frame)
        np.testing.assert_array_equal(out.semantic_logits, want["semantic_logits"][0])
        np.testing.assert_array_equal(out.center_heatmap, want["center_heatmap"][0, 0])
        np.testing.assert_array_equal(out.center_offsets, want["center_offsets"][0])
        assert out.input_size == b.input_size


def test_segmenter_uses_the_backends_preprocessing_and_size(tiny):
    with open_backend(tiny, input_size=(128, 96)) as b:
        assert Segmenter(backend=b, input_size=(128, 96)).input_size == (128, 96)
        with pytest.raises(BackendError, match="runs at 128x96 but 64x48 was asked for"):
            Segmenter(backend=b, input_size=(64, 48))
        with pytest.raises(BackendError, match=r"BGR uint8\[H, W, 3\]"):
            b.infer_frame(np.zeros((48, 64), np.uint8))
        with pytest.raises(BackendError, match="float32"):
            Segmenter(backend=b)(np.zeros((48, 64, 3), np.float32))


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-size", "fixed-size"])
def test_card_with_the_wrong_output_stride_is_refused_at_load(tmp_path, dynamic):
    # Before: a dynamic-size model with a card saying stride 8 (the model's is 4) loaded fine and failed
    # only at the first inference, when ONNX Runtime found the output buffers sized from the card.
    p = make_tiny_model(tmp_path, dynamic=dynamic)
    _edit_card(p, lambda d: [o.update(stride=8) for o in d["outputs"]])
    with pytest.raises(ModelCardError, match=r"semantic_logits.*(stride 8|\(6, 8\))"):
        open_backend(p)


def test_dynamic_model_with_a_right_card_still_loads_and_runs(tmp_path):
    p = make_tiny_model(tmp_path, dynamic=True)
    with open_backend(p) as backend:
        out = backend.infer_frame(np.zeros((48, 64, 3), np.uint8))
    assert out["semantic_logits"].shape[2:] == (12, 16)
