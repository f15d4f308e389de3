"""The TensorRT build and open paths on the CPU, with a stand-in ``tensorrt`` module
(:mod:`tests.backends.fake_tensorrt`: NVIDIA's library cannot be installed here) and real files,
real ONNX models and (CPU) torch tensors. One test per defect of issue 26, and the TensorRT 10/11
build path."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from perception.backends import engine_build
from perception.backends.engine_build import (
    BuildOptions,
    GpuIdentity,
    build_serialized,
    calibration_stamp,
    create_builder,
    create_runtime,
    import_tensorrt,
    make_request,
    model_is_quantized,
    plan_typing,
    read_calibration_cache,
    set_profile_shape,
    tensorrt_api,
    trt_logger,
    write_calibration_cache,
)
from perception.backends.engine_cache import ShapeProfile, file_sha256
from perception.backends.tensorrt import bind_io_buffers, initial_input_shape, io_dtype
from perception.errors import EngineError
from perception.modelcard import load_card
from tests.backends import fake_tensorrt
from tests.tinymodel import make_tiny_model

REPO = Path(__file__).resolve().parents[2]
GPU = GpuIdentity(name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), dynamic=True)


@pytest.fixture
def fake(monkeypatch):
    """Install a fake ``tensorrt`` (call with version and model kind); the project's process-wide
    TensorRT logger is reset around it so that it is made from the fake's ``ILogger``."""
    monkeypatch.setattr(engine_build, "_LOGGER", None)

    def install(version: str = "10.3.0", model: str = "fp32"):
        trt = fake_tensorrt.make(version, model=model)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt

    return install


# --- defect 2: trt.Builder / trt.Runtime raise TypeError, never return None ---------------------------


def test_builder_and_runtime_failures_become_engine_errors(fake, tiny):
    trt = fake()
    trt.builder_fails = trt.runtime_fails = True
    logger = trt_logger(trt)
    with pytest.raises(EngineError, match="cannot create a TensorRT builder"):
        create_builder(trt, logger)
    with pytest.raises(EngineError, match="cannot create a TensorRT runtime"):
        create_runtime(trt, logger)
    with pytest.raises(EngineError, match="cannot create a TensorRT builder"):  # the whole build path too
        build_serialized(trt, model_path=tiny, card=load_card(tiny), options=BuildOptions(precision="fp32"))


# --- defect 3: an explicit engine's fixed shapes win over the card's -----------------------------------


def test_explicit_engine_keeps_its_fixed_batch_and_size():
    assert initial_input_shape((4, 3, 480, 640), None, (64, 48)) == (4, 3, 480, 640)
    assert initial_input_shape((None, 3, 480, 640), ((2, 3, 480, 640), (8, 3, 480, 640)), (64, 48)) == (2, 3, 480, 640)
    assert initial_input_shape((None, 3, None, None), ((1, 3, 32, 32), (4, 3, 96, 128)), (64, 48)) == (1, 3, 48, 64)


# --- defect 4a: create_timing_cache may return None ------------------------------------------------------


def test_timing_cache_none_starts_fresh_or_raises(fake, tiny, tmp_path):
    trt = fake()
    card = load_card(tiny)
    timing = tmp_path / "t.cache"
    timing.write_bytes(b"from another GPU")
    trt.timing_cache_factory = lambda blob: None if blob else fake_tensorrt.TimingCache()
    build_serialized(trt, model_path=tiny, card=card, options=BuildOptions(precision="fp32", timing_cache=timing))
    assert timing.read_bytes() == b"timing"  # the fresh cache was used and saved
    trt.timing_cache_factory = lambda blob: None
    with pytest.raises(EngineError, match="could not create an empty timing cache"):
        build_serialized(trt, model_path=tiny, card=card, options=BuildOptions(precision="fp32", timing_cache=timing))


# --- defect 4b: profile.set_shape raises RuntimeError ----------------------------------------------------


def test_set_shape_runtime_error_becomes_engine_error(fake, tiny):
    trt = fake()
    logger = trt_logger(trt)
    good = ShapeProfile(name="image", min=(1, 3, 48, 64), opt=(1, 3, 48, 64), max=(1, 3, 48, 64))
    set_profile_shape(fake_tensorrt.Profile(), good, logger)

    class Refusing(fake_tensorrt.Profile):
        def set_shape(self, name, lo, opt, hi) -> None:
            raise RuntimeError("IOptimizationProfile::setDimensions: Error Code 3: API Usage Error")

    with pytest.raises(EngineError, match="refused the shapes image"):
        set_profile_shape(Refusing(), good, logger)
    trt.profile_factory = Refusing
    with pytest.raises(EngineError, match="API Usage Error"):
        build_serialized(trt, model_path=tiny, card=load_card(tiny), options=BuildOptions(precision="fp32"))


# --- defect 4c: buffer reallocation is all or nothing ----------------------------------------------------


def test_failed_reallocation_leaves_the_context_on_the_old_buffers():
    torch = pytest.importorskip("torch")
    ctx = fake_tensorrt.Context({"semantic_logits": 11, "center_heatmap": 1})
    dtypes = {"image": "float32", "semantic_logits": "float32", "center_heatmap": "float16"}
    kw = dict(input_name="image", dtypes=dtypes, device="cpu", errors=lambda: "refused")
    old = bind_io_buffers(torch, ctx, shape=(1, 3, 48, 64), previous=None, **kw)
    assert old.h_out_np["semantic_logits"].shape == (1, 11, 12, 16)
    assert old.h_out_np["center_heatmap"].dtype == np.float16
    bound = dict(ctx.addresses)
    ctx.fail_on = "center_heatmap"  # the last binding fails, after the input and one output moved
    with pytest.raises(EngineError, match="refused the buffer address of 'center_heatmap'"):
        bind_io_buffers(torch, ctx, shape=(1, 3, 96, 128), previous=old, **kw)
    assert ctx.addresses == bound and ctx.input_shape == (1, 3, 48, 64)
    assert bound["image"] == old.d_in.data_ptr() and old.h_in_np.shape == (1, 3, 48, 64)


# --- defect 4d: an INT8 calibration cache is not reused for a retrained model ----------------------------


def test_calibration_cache_is_bound_to_its_model(tmp_path):
    cache = tmp_path / "m.calib"
    a = calibration_stamp(onnx_sha256="a" * 64, shape=(1, 3, 48, 64), images={"images": 8, "images_sha256": "x"})
    write_calibration_cache(cache, b"TRT-1003-EntropyCalibration2\n", a)
    assert read_calibration_cache(cache, a) == b"TRT-1003-EntropyCalibration2\n"
    retrained = dict(a, onnx_sha256="b" * 64)
    assert read_calibration_cache(cache, retrained) is None
    assert read_calibration_cache(cache, dict(a, input=[1, 3, 96, 128])) is None
    assert read_calibration_cache(cache, dict(a, images=None)) is not None  # cache only: images unknown
    (tmp_path / "m.calib.json").unlink()
    assert read_calibration_cache(cache, a) is None  # a cache without its stamp (written before) is not trusted


def test_stale_calibration_cache_alone_refuses_to_build(fake, tiny, tmp_path):
    trt = fake("10.3.0")
    cache = tmp_path / "m.calib"
    write_calibration_cache(cache, b"calibration", calibration_stamp(onnx_sha256="0" * 64, shape=(1, 3, 48, 64),
                                                                     images=None))
    opts = BuildOptions(precision="int8", calib_cache=cache)
    with pytest.raises(EngineError, match=r"was not made for tiny\.onnx"):
        build_serialized(trt, model_path=tiny, card=load_card(tiny), options=opts,
                         make_calibrator=lambda **kw: pytest.fail("must not calibrate"))
    write_calibration_cache(cache, b"calibration", calibration_stamp(onnx_sha256=file_sha256(tiny),
                                                                     shape=(1, 3, 48, 64), images=None))
    made = []
    build_serialized(trt, model_path=tiny, card=load_card(tiny), options=opts,
                     make_calibrator=lambda **kw: made.append(kw) or type("C", (), {"error": None})())
    assert made and made[0]["stamp"]["onnx_sha256"] == file_sha256(tiny)


# --- defect 4e: trt.nptype raises for BF16/FP8 -----------------------------------------------------------


def test_io_dtype_names_what_numpy_cannot_hold(fake):
    trt = fake()
    with pytest.raises(TypeError):
        trt.nptype(trt.DataType.BF16)  # what the old code called
    assert io_dtype(trt, trt.DataType.FLOAT, name="x") == "float32"
    assert io_dtype(trt, trt.DataType.HALF, name="x") == "float16"
    for dt in (trt.DataType.BF16, trt.DataType.FP8):
        with pytest.raises(EngineError, match="inputs and outputs float32 or float16"):
            io_dtype(trt, dt, name="semantic_logits")


# --- one build path for TensorRT 10 and 11 ------------------------------------------------------------------


@pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
@pytest.mark.parametrize("model, precision", [("fp32", "fp32"), ("fp16", "fp16"), ("int8", "int8")])
def test_the_model_carries_its_precision_strongly_typed(fake, tiny, version, model, precision):
    trt = fake(version, model=model)
    built = build_serialized(trt, model_path=tiny, card=load_card(tiny), options=BuildOptions(precision=precision),
                             make_calibrator=lambda **kw: pytest.fail("a strongly typed build never calibrates"))
    builder = trt.builders[-1]
    network, config = builder.built
    assert len(builder.networks) == 1 and network.flags == 1 << 1  # STRONGLY_TYPED
    assert config.flags == [] and config.int8_calibrator is None
    assert built.blob == b"serialized-engine" and built.typing == "strong" and built.model_precision == model
    meta = built.metadata()
    assert meta["tensorrt_version"] == version and meta["tensorrt_major"] == int(version[:2])
    assert meta["network"] == "strongly typed"


def test_fp32_model_at_fp16_uses_the_builder_flag_on_10_only(fake, tiny):
    trt = fake("10.3.0", model="fp32")
    built = build_serialized(trt, model_path=tiny, card=load_card(tiny), options=BuildOptions(precision="fp16"))
    builder = trt.builders[-1]
    network, config = builder.built
    assert [n.flags for n in builder.networks] == [2, 0] and network.flags == 0  # parsed again weakly typed
    assert config.flags == [trt.BuilderFlag.FP16] and built.typing == "weak"
    trt = fake("11.0.0", model="fp32")
    with pytest.raises(EngineError, match=r"strongly typed networks only.*export_onnx.py --fp16"):
        build_serialized(trt, model_path=tiny, card=load_card(tiny), options=BuildOptions(precision="fp16"))
    with pytest.raises(EngineError, match=r"quantize_onnx\.py --tensorrt"):
        build_serialized(trt, model_path=tiny, card=load_card(tiny), options=BuildOptions(precision="int8"))


def test_plan_typing_refuses_another_precision_than_the_models(fake):
    api = tensorrt_api(fake("10.3.0"))
    assert plan_typing(api, requested="fp16", model="fp16") == "strong"
    assert plan_typing(api, requested="int8", model="fp32") == "weak"
    with pytest.raises(EngineError, match=r"carries fp16 precision .* ask for --precision fp16"):
        plan_typing(api, requested="int8", model="fp16")


@pytest.mark.parametrize("version, ok", [("10.3.0", True), ("11.1.0", True), ("9.3.0", False), ("12.0.0", False)])
def test_supported_versions(fake, version, ok):
    fake(version)
    if ok:
        assert import_tensorrt().__version__ == version
    else:
        with pytest.raises(EngineError, match=r"supports TensorRT 10.x and 11.x.*tensorrt>=10,<12"):
            import_tensorrt()


def test_qdq_models_need_no_calibration_data(tiny):
    fp16 = REPO / "engines" / "camvid_lite0_panoptic_fp16.onnx"
    qdq = REPO / "engines" / "camvid_lite0_panoptic_int8_trt.onnx"
    assert model_is_quantized(REPO / "engines" / "camvid_lite0_panoptic_int8.onnx")
    assert model_is_quantized(qdq) and not model_is_quantized(fp16) and not model_is_quantized(tiny)
    assert model_is_quantized(qdq, chunk_bytes=7)  # a name split across reads is still found
    req = make_request(model_path=qdq, card=load_card(qdq), options=BuildOptions(precision="int8"),
                       tensorrt_version="11.0.0", gpu=GPU)
    assert req.build_options["calibration"] is None
    with pytest.raises(EngineError, match="INT8 needs calibration data"):
        make_request(model_path=tiny, card=load_card(tiny), options=BuildOptions(precision="int8"),
                     tensorrt_version="10.3.0", gpu=GPU)
