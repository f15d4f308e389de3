"""The TensorRT backend. CPU tests: availability, lazy imports, tensor checks, selection. GPU tests
(marked ``gpu``) build tiny real engines and compare them with ONNX Runtime; they skip cleanly
without TensorRT (10 or 11) and a CUDA GPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perception.backends.base import Backend
from perception.backends.tensorrt import TensorRTBackend, available, check_engine_tensors, check_shape_in_profile
from perception.errors import BackendError, EngineError, ModelCardError
from perception.modelcard import load_card
from perception.types import TensorSpec
from tests.tinymodel import make_tiny_model

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
TRT_OK, TRT_WHY = available()
gpu = pytest.mark.skipif(not TRT_OK, reason=f"TensorRT backend not usable here: {TRT_WHY}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), dynamic=True)


# --- CPU ----------------------------------------------------------------------------------------------


def test_available_gives_a_reason():
    ok, why = available()
    assert isinstance(ok, bool) and why
    if not HAS_TENSORRT:
        assert ok is False
        assert "TensorRT is not installed: pip install tensorrt" in why


def test_importing_the_backend_loads_neither_torch_nor_tensorrt():
    code = (
        "import sys, perception.backends.tensorrt, perception.cli.build_engine, "
        "perception.backends.engine_build, perception.backends.engine_cache\n"
        "print(sorted(m for m in ('torch', 'tensorrt') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_constructor_without_tensorrt_raises_clear_error(tiny, tmp_path):
    with pytest.raises(EngineError, match="TensorRT is not installed"):
        TensorRTBackend(model_path=tiny, card=load_card(tiny), engine_cache_dir=tmp_path)


def test_factory_auto_falls_back_with_a_reason(tiny):
    from perception.backends.factory import select_backend_kind

    kind, why = select_backend_kind("auto")
    if TRT_OK:
        assert kind == "tensorrt"
    else:
        assert kind == "onnxruntime" and "TensorRT not usable" in why


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_factory_tensorrt_kind_raises_without_tensorrt(tiny, tmp_path):
    from perception.backends.factory import open_backend

    with pytest.raises(EngineError, match="TensorRT is not installed"):
        open_backend(tiny, kind="tensorrt", engine_cache_dir=tmp_path)


def _specs(card, *, in_name="image", channels=None):
    inputs = {in_name: TensorSpec(name=in_name, shape=(None, 3, None, None), dtype="float32")}
    outputs = {
        o.name: TensorSpec(
            name=o.name, shape=(None, (channels or {}).get(o.name, o.channels), None, None), dtype="float32"
        )
        for o in card.outputs
    }
    return inputs, outputs


def test_check_engine_tensors(tiny):
    card = load_card(tiny)
    inputs, outputs = _specs(card)
    check_engine_tensors(card, inputs, outputs, where="t")
    with pytest.raises(ModelCardError, match="the card's input is 'image'"):
        check_engine_tensors(card, *_specs(card, in_name="input"), where="t")
    with pytest.raises(ModelCardError, match="should be \\[N,11,h,w\\]"):
        check_engine_tensors(card, *_specs(card, channels={"semantic_logits": 12}), where="t")
    del outputs["center_offsets"]
    with pytest.raises(ModelCardError, match="center_offsets"):
        check_engine_tensors(card, inputs, outputs, where="t")
    bad_in = {"image": TensorSpec(name="image", shape=(1, 4, 48, 64), dtype="float32")}
    with pytest.raises(ModelCardError, match="\\[N,3,H,W\\]"):
        check_engine_tensors(card, bad_in, _specs(card)[1], where="t")


def test_check_shape_in_profile():
    declared = (None, 3, None, None)
    lo, hi = (1, 3, 32, 32), (4, 3, 96, 128)
    check_shape_in_profile("image", (2, 3, 48, 64), declared, lo, hi)
    check_shape_in_profile("image", (1, 3, 48, 64), (1, 3, 48, 64), None, None)
    with pytest.raises(BackendError, match="outside the engine's profile"):
        check_shape_in_profile("image", (1, 3, 192, 256), declared, lo, hi)
    with pytest.raises(BackendError, match="axis 1 must be 3"):
        check_shape_in_profile("image", (1, 4, 48, 64), declared, lo, hi)
    with pytest.raises(BackendError, match="4 axes"):
        check_shape_in_profile("image", (3, 48, 64), declared, lo, hi)


# --- GPU ----------------------------------------------------------------------------------------------


def _ort(path, input_size=None):
    from perception.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model_path=path, card=load_card(path), providers="cpu", input_size=input_size)


def _frames(n: int, shape=(48, 64, 3), seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):  # smooth-ish images so that the tiny model yields several classes
        small = rng.integers(0, 255, (-(-shape[0] // 8), -(-shape[1] // 8), 3), dtype=np.uint8)
        frames.append(np.ascontiguousarray(np.kron(small, np.ones((8, 8, 1), np.uint8))[: shape[0], : shape[1]]))
    return frames


@pytest.mark.gpu
@gpu
def test_fp32_engine_matches_onnxruntime(tiny, tmp_path):
    from perception.backends.preprocess import Preprocessor

    card = load_card(tiny)
    pre = Preprocessor(card=card)
    with _ort(tiny) as ort, TensorRTBackend(model_path=tiny, card=card, engine_cache_dir=tmp_path,
                                            precision="fp32") as trt:
        assert isinstance(trt, Backend)
        assert set(trt.outputs) == set(ort.outputs)
        for frame in _frames(4):
            x = pre(frame).copy()
            want = {k: v.copy() for k, v in ort.infer({"image": x}).items()}
            got = trt.infer({"image": x})
            for name, ref in want.items():
                assert got[name].shape == ref.shape
                np.testing.assert_allclose(got[name], ref, rtol=1e-3, atol=1e-3)
        with pytest.raises(BackendError, match="must be float32"):
            trt.infer({"image": x.astype(np.float64)})


@pytest.fixture(scope="module")
def tiny_fp16(tiny) -> Path:
    """The tiny model converted by the project's FP16 export (what TensorRT 11 builds FP16 from)."""
    pytest.importorskip("onnx")
    from perception.modelcard import save_card
    from perception.models.export import convert_to_fp16

    out = convert_to_fp16(tiny, tiny.with_name("tiny_fp16.onnx"))
    save_card(load_card(tiny), out)
    return out


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("route", ["fp16 model", "builder flag"])
def test_fp16_labels_agree_and_frame_path_matches(tiny, tiny_fp16, tmp_path, route):
    from perception.backends.engine_build import import_tensorrt, tensorrt_api
    from perception.backends.preprocess import Preprocessor

    if route == "builder flag" and not tensorrt_api(import_tensorrt()).precision_flags:
        pytest.skip("TensorRT 11 has no FP16 builder flag")
    model = tiny_fp16 if route == "fp16 model" else tiny
    card = load_card(tiny)
    pre = Preprocessor(card=card)
    agree = total = 0
    with _ort(tiny) as ort, TensorRTBackend(model_path=model, card=card, engine_cache_dir=tmp_path) as trt:
        for frame in _frames(6, shape=(96, 128, 3)):  # 2x downscale: the GPU path resizes
            ref = ort.infer({"image": pre(frame).copy()})["semantic_logits"][0].argmax(axis=0)
            out = trt.infer_frame_labels(frame)
            assert out["labels"].dtype == np.uint8 and out["labels"].shape == ref.shape
            assert out["center_heatmap"].shape == ref.shape and out["center_offsets"].shape == (2, *ref.shape)
            agree += int((out["labels"] == ref).sum())
            total += ref.size
    assert agree / total >= 0.97, agree / total


@pytest.mark.gpu
@gpu
def test_cache_is_reused_and_mismatch_refused(tiny, tmp_path):
    from perception.backends.engine_cache import EngineCache, read_engine_file, write_engine_file

    card = load_card(tiny)
    with TensorRTBackend(model_path=tiny, card=card, engine_cache_dir=tmp_path, precision="fp32") as first:
        path = first.engine_path
    stamp = path.stat().st_mtime_ns
    with TensorRTBackend(model_path=tiny, card=card, engine_cache_dir=tmp_path, precision="fp32") as second:
        assert second.engine_path == path
    assert path.stat().st_mtime_ns == stamp, "the cached engine was rebuilt"
    assert EngineCache(directory=tmp_path).entries() == [path]

    meta, blob = read_engine_file(path)
    from dataclasses import replace

    stale = tmp_path / "stale.engine"
    write_engine_file(stale, replace(meta.request, tensorrt_version="10.0.0.0"), blob)
    with pytest.raises(EngineError, match=r"engine built for TensorRT 10\.0\.0\.0 but"):
        TensorRTBackend(model_path=tiny, card=card, engine_path=stale)


@pytest.mark.gpu
@gpu
def test_cuda_graph_gives_the_same_results(tiny, tmp_path):
    card = load_card(tiny)
    frames = _frames(3, shape=(96, 128, 3), seed=3)
    with TensorRTBackend(model_path=tiny, card=card, engine_cache_dir=tmp_path, precision="fp32") as plain:
        want = [{k: v.copy() for k, v in plain.infer_frame_labels(f).items()} for f in frames]
    with TensorRTBackend(model_path=tiny, card=card, engine_cache_dir=tmp_path, precision="fp32",
                         use_cuda_graph=True) as graphed:
        for frame, ref in zip(frames, want):
            got = graphed.infer_frame_labels(frame)
            np.testing.assert_array_equal(got["labels"], ref["labels"])
            np.testing.assert_allclose(got["center_offsets"], ref["center_offsets"], atol=1e-5)


@pytest.mark.gpu
@gpu
def test_infer_frame_matches_onnxruntimes_infer_frame(tiny, tmp_path):
    """The pipeline's path (Segmenter → backend.infer_frame): GPU preprocessing + engine vs the CPU
    Preprocessor + ONNX Runtime, outputs keyed and shaped alike."""
    from perception.inference import Segmenter

    card = load_card(tiny)
    with _ort(tiny) as ort, TensorRTBackend(model_path=tiny, card=card, engine_cache_dir=tmp_path,
                                            precision="fp32") as trt:
        for frame in _frames(3, shape=(96, 128, 3), seed=11):
            want = {k: v.copy() for k, v in ort.infer_frame(frame).items()}
            got = trt.infer_frame(frame)
            assert set(got) == set(want)
            for name, ref in want.items():
                assert got[name].shape == ref.shape
                np.testing.assert_allclose(got[name], ref, rtol=0, atol=0.05)  # one grey level of preprocessing
        out = Segmenter(backend=trt)(_frames(1, shape=(96, 128, 3))[0])
        assert out.semantic_logits.shape == (11, 12, 16) and out.input_size == trt.input_size


@pytest.mark.gpu
@gpu
def test_cuda_graph_results_are_ready_when_only_the_backends_stream_is_synchronised(tmp_path):
    """Issue 26, defect 1: the replay must run on the backend's stream, which is all ``infer_frame``
    waits for. A slow model (heavy layers at a large size) leaves a replay on another stream still
    running when the call returns; the results are read straight away, with no device-wide sync."""
    heavy = make_tiny_model(tmp_path / "heavy", input_size=(512, 384), heavy_layers=12)
    card = load_card(heavy)
    frames = _frames(4, shape=(384, 512, 3), seed=21)
    with TensorRTBackend(model_path=heavy, card=card, engine_cache_dir=tmp_path, precision="fp32") as plain:
        want = [{k: v.copy() for k, v in plain.infer_frame(f).items()} for f in frames]
    with TensorRTBackend(model_path=heavy, card=card, engine_cache_dir=tmp_path, precision="fp32",
                         use_cuda_graph=True) as graphed:
        for _ in range(3):
            for frame, ref in zip(frames, want):
                got = graphed.infer_frame(frame)  # no torch.cuda.synchronize() before reading
                np.testing.assert_allclose(got["semantic_logits"], ref["semantic_logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_replay_on_stream_runs_on_that_stream():
    """The CUDA half of defect 1 without TensorRT: a graph captured on a side stream, replayed with
    :func:`replay_on_stream`, has written its pinned host result once that one stream is synchronised."""
    torch = _cuda_or_skip()
    from perception.backends.tensorrt import replay_on_stream

    stream = torch.cuda.Stream()
    a = torch.randn((2048, 2048), device="cuda")
    x = torch.empty((2048, 2048), device="cuda")
    host = torch.empty((2048, 2048), pin_memory=True)

    def body():
        with torch.cuda.stream(stream):
            y = x
            for _ in range(30):  # long enough that an unsynchronised reader would see stale memory
                y = torch.tanh(a @ y)
            host.copy_(y, non_blocking=True)

    x.copy_(torch.eye(2048, device="cuda"))
    torch.cuda.synchronize()
    body()
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        body()
    for scale in (0.5, 2.0, -1.0):
        x.copy_(torch.eye(2048, device="cuda") * scale)
        torch.cuda.synchronize()
        want = x.clone()
        for _ in range(30):
            want = torch.tanh(a @ want)
        want = want.cpu()
        host.zero_()
        replay_on_stream(torch, graph, stream)  # waits for `stream` only
        torch.testing.assert_close(host, want, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@gpu
def test_dynamic_shapes_and_close(tiny, tmp_path):
    from perception.backends.engine_build import BuildOptions

    card = load_card(tiny)
    opts = BuildOptions(min_size=(32, 32), max_size=(128, 96))
    backend = TensorRTBackend(model_path=tiny, card=card, engine_cache_dir=tmp_path, precision="fp32",
                              build_options=opts)
    try:
        small = backend.infer({"image": np.zeros((1, 3, 32, 32), np.float32)})
        assert small["semantic_logits"].shape == (1, 11, 8, 8)
        big = backend.infer({"image": np.zeros((1, 3, 96, 128), np.float32)})
        assert big["semantic_logits"].shape == (1, 11, 24, 32)
        with pytest.raises(BackendError, match="outside the engine's profile"):
            backend.infer({"image": np.zeros((1, 3, 192, 256), np.float32)})
    finally:
        backend.close()
    backend.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        backend.infer({"image": np.zeros((1, 3, 48, 64), np.float32)})


# --- the GPU preprocessing maths, with CPU torch tensors and (marked gpu) on a CUDA GPU ----------------


def _cuda_or_skip():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here (torch.cuda.is_available() is False)")
    return torch


def _textured_frame(frame_hw: tuple[int, int], seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-40, 41, (*frame_hw, 3))
    frame = np.clip(np.cumsum(noise, axis=1) // 4 + 128, 0, 255).astype(np.uint8)  # textured, not flat
    frame[..., 0] //= 3  # make the channels differ so that a colour-order mix-up shows
    return frame


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize(
    "frame_hw, expect_mode",
    [
        ((48, 64), None),  # same size
        ((96, 128), "area"),  # 2x shrink
        ((100, 150), "area"),  # 2.08x / 2.34x: non-integer area factors
        ((360, 480), "area"),  # 7.5x, CamVid frames into the tiny model
        ((60, 80), "bilinear"),  # 1.25x
        ((40, 72), "bilinear"),  # taller than wide: enlarge one axis, shrink the other
    ],
)
def test_torch_preprocessor_matches_the_cpu_preprocessor(tiny, frame_hw, expect_mode, device):
    torch = _cuda_or_skip() if device == "cuda" else pytest.importorskip("torch")
    from perception.backends.preprocess import Preprocessor
    from perception.backends.tensorrt import TorchPreprocessor, normalisation, resize_mode

    card = load_card(tiny)
    frame = _textured_frame(frame_hw)
    want = Preprocessor(card=card)(frame)
    assert resize_mode((frame_hw[1], frame_hw[0]), card.input_size) == expect_mode
    prep = TorchPreprocessor(card=card, device=device)
    out = torch.empty((1, 3, card.input.height, card.input.width), dtype=torch.float32, device=device)
    d_frame = torch.from_numpy(frame).to(device)
    prep(d_frame, out)
    np.testing.assert_array_equal(d_frame.cpu().numpy(), frame)  # the input is not modified
    # The CPU path rounds the resized image to uint8: allow one grey level, 1/(255*std) ~ 0.0175
    one_level = float(normalisation(card)[1].max())
    np.testing.assert_allclose(out.cpu().numpy(), want, rtol=0, atol=one_level * 1.01)


@pytest.mark.gpu
def test_cuda_graph_replays_preprocessing_and_argmax_on_new_frames(tiny):
    """The non-TensorRT half of ``infer_frame`` under CUDA-graph capture: a graph captured on one
    frame, replayed after the next frame is copied into the same buffer, gives that frame's result."""
    torch = _cuda_or_skip()
    from perception.backends.tensorrt import TorchPreprocessor

    card = load_card(tiny)
    h, w = card.input.height, card.input.width
    frames = [_textured_frame((360, 480), seed) for seed in (1, 2, 3)]
    prep = TorchPreprocessor(card=card, device="cuda:0")
    prep.prepare((360, 480))
    d_frame = torch.empty((360, 480, 3), dtype=torch.uint8, device="cuda:0")
    d_in = torch.empty((1, 3, h, w), dtype=torch.float32, device="cuda:0")
    d_labels = torch.empty((h, w), dtype=torch.uint8, device="cuda:0")
    weights = torch.linspace(-1.0, 1.0, 5 * 3, device="cuda:0").reshape(5, 3, 1, 1)

    def body():  # stands in for the engine: a 1x1 convolution to 5 "classes", then the argmax
        prep(d_frame, d_in)
        d_labels.copy_(torch.argmax(torch.nn.functional.conv2d(d_in, weights)[0], dim=0))

    def eager(frame):
        d_frame.copy_(torch.from_numpy(frame))
        body()
        torch.cuda.synchronize()
        return d_in.cpu().numpy().copy(), d_labels.cpu().numpy().copy()

    expected = [eager(f) for f in frames]
    stream = torch.cuda.Stream()
    d_frame.copy_(torch.from_numpy(frames[0]))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        body()
    for frame, (want_in, want_labels) in zip(frames, expected):
        d_frame.copy_(torch.from_numpy(frame))
        graph.replay()
        torch.cuda.synchronize()
        np.testing.assert_array_equal(d_in.cpu().numpy(), want_in)
        np.testing.assert_array_equal(d_labels.cpu().numpy(), want_labels)
    assert len({lab.tobytes() for _, lab in expected}) == 3  # the frames really give different labels


def test_resize_matrix_rows_sum_to_one():
    from perception.backends.tensorrt import resize_matrix

    assert resize_matrix(64, 64, "area") is None
    for src, dst, mode in [
        (480, 64, "area"), (100, 48, "area"), (48, 100, "area"), (60, 48, "bilinear"), (40, 48, "bilinear"),
    ]:
        m = resize_matrix(src, dst, mode)
        assert m.shape == (dst, src) and m.dtype == np.float32 and (m >= 0).all()
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(resize_matrix(4, 2, "area"), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])


@pytest.mark.gpu
@gpu
def test_int8_calibrated_build_then_found_without_calibration_data(tiny, tmp_path):
    import cv2

    from perception.backends.engine_build import BuildOptions

    card = load_card(tiny)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, frame in enumerate(_frames(8, shape=(96, 128, 3), seed=7)):
        cv2.imwrite(str(calib / f"{i:02d}.png"), frame)
    cache = tmp_path / "cache"
    opts = BuildOptions(calib_dir=calib, calib_images=8, calib_cache=tmp_path / "tiny.calib")
    with TensorRTBackend(model_path=tiny, card=card, engine_cache_dir=cache, precision="int8",
                         build_options=opts) as built:
        assert built.metadata.request.build_options["calibration"]["images"] == 8
        labels = built.infer_frame_labels(_frames(1, shape=(96, 128, 3))[0])["labels"].copy()
    assert (tmp_path / "tiny.calib").is_file()
    with TensorRTBackend(model_path=tiny, card=card, engine_cache_dir=cache, precision="int8") as found:
        assert found.engine_path == built.engine_path
        np.testing.assert_array_equal(found.infer_frame_labels(_frames(1, shape=(96, 128, 3))[0])["labels"], labels)
    with pytest.raises(EngineError, match="INT8 needs calibration data"):
        TensorRTBackend(model_path=tiny, card=card, engine_cache_dir=tmp_path / "empty", precision="int8")
