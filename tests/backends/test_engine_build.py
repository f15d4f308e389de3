"""Engine build planning and the ``perception build-engine`` command (CPU: no TensorRT needed)."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.backends.engine_build import (
    TENSORRT_MISSING,
    BuildOptions,
    GpuIdentity,
    build_options_key,
    calibration_fingerprint,
    calibration_images,
    import_tensorrt,
    make_request,
    options_for_runtime,
    shape_profiles,
)
from perception.backends.engine_cache import file_sha256
from perception.cli.args import parse_size
from perception.cli.build_engine import options_from_args, register
from perception.errors import BackendError, ConfigError, EngineError
from perception.modelcard import load_card
from tests.tinymodel import make_tiny_model

REPO = Path(__file__).resolve().parents[2]
PERCEPTION = [sys.executable, "-m", "perception.cli"]
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
GPU = GpuIdentity(name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("dyn"), dynamic=True)


@pytest.fixture(scope="module")
def fixed_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("fixed"), dynamic=False, name="tinyfixed")


@pytest.fixture
def calib_dir(tmp_path) -> Path:
    root = tmp_path / "calib"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):
        folder = root if i < 6 else root / "sub"
        cv2.imwrite(str(folder / f"img{i:02d}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    (root / "notes.txt").write_text("not an image")
    return root


# --- shape profiles -------------------------------------------------------------------------------


def test_default_profile_is_the_card_size(fixed_model):
    card = load_card(fixed_model)
    (profile,) = shape_profiles(card, BuildOptions())
    assert profile.name == "image"
    assert profile.min == profile.opt == profile.max == (1, 3, 48, 64)


def test_dynamic_profile(dynamic_model):
    card = load_card(dynamic_model)
    opts = BuildOptions(batch=(1, 2, 4), min_size=(32, 32), opt_size=(64, 48), max_size=(128, 96))
    (profile,) = shape_profiles(card, opts)
    assert profile.min == (1, 3, 32, 32) and profile.opt == (2, 3, 48, 64) and profile.max == (4, 3, 96, 128)


def test_fixed_model_refuses_other_sizes_and_batches(fixed_model):
    card = load_card(fixed_model)
    with pytest.raises(BackendError, match="fixed input size 64x48"):
        shape_profiles(card, BuildOptions(opt_size=(128, 96)))
    with pytest.raises(EngineError, match="fixed batch of 1"):
        shape_profiles(card, BuildOptions(batch=(1, 1, 4)))


def test_sizes_must_be_multiples_and_ordered(dynamic_model):
    card = load_card(dynamic_model)
    with pytest.raises(BackendError, match="multiples of 4"):
        shape_profiles(card, BuildOptions(opt_size=(66, 48)))
    with pytest.raises(EngineError, match="min <= opt <= max"):
        shape_profiles(card, BuildOptions(min_size=(128, 96), opt_size=(64, 48)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"precision": "fp8"}, "precision"),
        ({"batch": (2, 1, 4)}, "batch"),
        ({"workspace_mb": 0}, "workspace_mb"),
        ({"dla_core": -1}, "dla_core"),
        ({"calib_images": 0}, "calib_images"),
        ({"opt_size": (0, 48)}, "opt_size"),
    ],
)
def test_build_options_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BuildOptions(**kwargs)


def test_runtime_options_fix_the_input_size(dynamic_model):
    card = load_card(dynamic_model)
    opts = options_for_runtime(card, BuildOptions(workspace_mb=512), precision="fp32", input_size=(128, 96))
    assert opts.precision == "fp32" and opts.opt_size == (128, 96) and opts.workspace_mb == 512
    assert shape_profiles(card, opts)[0].max == (1, 3, 96, 128)
    ranged = BuildOptions(min_size=(32, 32), max_size=(128, 96))
    with pytest.raises(EngineError, match="min <= opt <= max"):
        options_for_runtime(card, ranged, precision="fp16", input_size=(256, 192))


# --- calibration data -------------------------------------------------------------------------------


def test_calibration_images_evenly_spaced_and_recursive(calib_dir):
    everything = calibration_images(calib_dir, 100)
    assert len(everything) == 10 and all(p.suffix == ".png" for p in everything)
    assert any(p.parent.name == "sub" for p in everything)
    picked = calibration_images(calib_dir, 4)
    assert len(picked) == 4
    assert picked[0] == everything[0] and picked[-1] == everything[-1]


def test_calibration_images_errors(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        calibration_images(tmp_path / "nope", 10)
    with pytest.raises(EngineError, match="holds no images"):
        calibration_images(tmp_path, 10)


def test_calibration_fingerprint(calib_dir, tmp_path):
    assert calibration_fingerprint(BuildOptions(precision="fp16", calib_dir=calib_dir)) is None
    a = calibration_fingerprint(BuildOptions(precision="int8", calib_dir=calib_dir, calib_images=100))
    assert a["images"] == 10
    cv2.imwrite(str(calib_dir / "img99.png"), np.zeros((48, 64, 3), np.uint8))
    b = calibration_fingerprint(BuildOptions(precision="int8", calib_dir=calib_dir, calib_images=100))
    assert b["images"] == 11 and b["images_sha256"] != a["images_sha256"]
    with pytest.raises(EngineError, match="INT8 needs calibration data"):
        calibration_fingerprint(BuildOptions(precision="int8"))
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"TRT-1003-EntropyCalibration2\n")
    c = calibration_fingerprint(BuildOptions(precision="int8", calib_cache=cache))
    assert c == {"cache_sha256": file_sha256(cache)}


def test_timing_cache_path_is_not_part_of_the_key(tmp_path):
    a = build_options_key(BuildOptions(timing_cache=tmp_path / "a.timing"))
    b = build_options_key(BuildOptions(timing_cache=None))
    assert a == b


# --- the cache request ------------------------------------------------------------------------------


def test_make_request(dynamic_model):
    card = load_card(dynamic_model)
    req = make_request(model_path=dynamic_model, card=card, options=BuildOptions(), tensorrt_version="10.8.0", gpu=GPU)
    assert req.onnx_sha256 == file_sha256(dynamic_model)
    assert req.card["name"] == "tiny" and req.gpu_name == GPU.name and req.compute_capability == "9.0"
    again = make_request(model_path=dynamic_model, card=card, options=BuildOptions(), tensorrt_version="10.8.0",
                         gpu=GPU)
    assert again.key() == req.key()
    other = make_request(model_path=dynamic_model, card=card, options=BuildOptions(precision="fp32"),
                         tensorrt_version="10.8.0", gpu=GPU)
    assert other.key() != req.key()
    orin = make_request(model_path=dynamic_model, card=card, options=BuildOptions(), tensorrt_version="10.8.0",
                        gpu=GpuIdentity(name="Orin", compute_capability="8.7"))
    assert orin.key() != req.key()


def test_changed_onnx_changes_the_key(tmp_path):
    a = make_tiny_model(tmp_path / "a", seed=0)
    b = make_tiny_model(tmp_path / "b", seed=1)
    card = load_card(a)
    ka = make_request(model_path=a, card=card, options=BuildOptions(), tensorrt_version="10.8.0", gpu=GPU).key()
    kb = make_request(model_path=b, card=card, options=BuildOptions(), tensorrt_version="10.8.0", gpu=GPU).key()
    assert ka != kb


# --- the command ------------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["build-engine", "m.onnx", *argv])


def test_options_from_args(calib_dir):
    opts = options_from_args(_parse([]))
    assert opts == BuildOptions()
    opts = options_from_args(_parse(["--precision", "int8", "--calib-dir", str(calib_dir), "--calib-images", "50",
                                     "--batch", "2", "--input-size", "640x480", "--workspace-mb", "512",
                                     "--dla", "1", "--no-gpu-fallback", "--timing-cache", "t.timing"]))
    assert opts.precision == "int8" and opts.calib_dir == calib_dir and opts.calib_images == 50
    assert opts.batch == (2, 2, 2) and opts.opt_size == (640, 480) and opts.min_size is None
    assert opts.workspace_mb == 512 and opts.dla_core == 1 and opts.gpu_fallback is False
    assert opts.timing_cache == Path("t.timing")
    opts = options_from_args(_parse(["--min-batch", "1", "--max-batch", "8", "--min-size", "320x240",
                                     "--max-size", "1280x960"]))
    assert opts.batch == (1, 1, 8) and opts.min_size == (320, 240) and opts.max_size == (1280, 960)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--batch", "2", "--max-batch", "4"], "--batch fixes"),
        (["--input-size", "64x48", "--max-size", "128x96"], "--input-size fixes"),
        (["--precision", "int8"], "needs --calib-dir"),
        (["--calib-dir", "x"], "only apply to --precision int8"),
        (["--no-gpu-fallback"], "only applies with --dla"),
    ],
)
def test_contradictory_flags(argv, match):
    with pytest.raises(ConfigError, match=match):
        options_from_args(_parse(argv))


def test_parse_size():
    assert parse_size("640x480") == (640, 480)
    assert parse_size("640X480") == (640, 480)
    for bad in ("640", "640x", "ax480", "0x480", "-1x2"):
        with pytest.raises(ConfigError):
            parse_size(bad)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*PERCEPTION, *argv], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_help_runs_anywhere(tmp_path):
    result = _run(["build-engine", "--help"], REPO)
    assert result.returncode == 0, result.stderr
    for flag in ("--precision", "--calib-dir", "--calib-cache", "--min-batch", "--max-size", "--workspace-mb",
                 "--dla", "--no-gpu-fallback", "--timing-cache", "--out", "--cache-dir"):
        assert flag in result.stdout


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_without_tensorrt_the_command_fails_clearly(dynamic_model, tmp_path):
    result = _run(["build-engine", str(dynamic_model), "--cache-dir", str(tmp_path / "cache")], REPO)
    assert result.returncode == 2
    assert TENSORRT_MISSING in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists()


def test_int8_without_calibration_data_fails_before_touching_tensorrt(dynamic_model):
    result = _run(["build-engine", str(dynamic_model), "--precision", "int8"], REPO)
    assert result.returncode == 2
    assert "--calib-dir" in result.stderr and "Traceback" not in result.stderr


def test_missing_model_fails_clearly(tmp_path):
    result = _run(["build-engine", str(tmp_path / "nope.onnx")], REPO)
    assert result.returncode == 2
    assert "model file not found" in result.stderr


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_import_tensorrt_error_says_how_to_install():
    with pytest.raises(EngineError) as info:
        import_tensorrt()
    assert str(info.value).startswith(TENSORRT_MISSING)


def test_int8_request_without_calibration_for_lookup_only(dynamic_model):
    card = load_card(dynamic_model)
    opts = BuildOptions(precision="int8")
    with pytest.raises(EngineError, match="INT8 needs calibration data"):
        make_request(model_path=dynamic_model, card=card, options=opts, tensorrt_version="10.8.0", gpu=GPU)
    req = make_request(model_path=dynamic_model, card=card, options=opts, tensorrt_version="10.8.0", gpu=GPU,
                       require_calibration=False)
    assert req.precision == "int8" and req.build_options["calibration"] is None
