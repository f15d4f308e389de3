"""Self-describing engine files and the engine cache (pure Python: runs on the CPU)."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from perception.backends.engine_cache import (
    ENVIRONMENT_FIELDS,
    KEY_FIELDS,
    MAGIC,
    EngineCache,
    EngineRequest,
    ShapeProfile,
    default_cache_dir,
    describe_differences,
    load_checked,
    read_engine_file,
    read_metadata,
    write_engine_file,
)
from perception.errors import EngineError

ENGINE = bytes(range(256)) * 40  # stands in for a serialized TensorRT engine


def make_request(**changes) -> EngineRequest:
    base = EngineRequest(
        card={"name": "tiny", "version": "1", "input": {"width": 64, "height": 48}},
        onnx_sha256="ab" * 32,
        tensorrt_version="10.3.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
        precision="fp16",
        profiles=(ShapeProfile(name="image", min=(1, 3, 48, 64), opt=(1, 3, 48, 64), max=(1, 3, 48, 64)),),
        build_options={"workspace_mb": 2048, "dla_core": None, "gpu_fallback": None, "calibration": None},
        onnx_path="models/tiny.onnx",
    )
    return replace(base, **changes)


def test_round_trip_keeps_metadata_and_engine(tmp_path):
    req = make_request()
    path = tmp_path / "x.engine"
    written = write_engine_file(path, req, ENGINE, extra={"built_by": "test"})
    meta, engine = read_engine_file(path)
    assert engine == ENGINE
    assert meta.request == req
    assert meta.request.onnx_path == "models/tiny.onnx"
    assert meta.key == req.key() == written.key
    assert meta.engine_size == len(ENGINE)
    assert meta.extra == {"built_by": "test"}
    assert meta.created_utc.endswith("Z") and meta.created_utc[:2] == "20"
    assert read_metadata(path) == meta
    assert path.read_bytes().startswith(MAGIC)
    assert not [p for p in tmp_path.iterdir() if p.name != "x.engine"], "temporary file left behind"


def test_header_is_readable_json(tmp_path):
    path = tmp_path / "x.engine"
    write_engine_file(path, make_request(), ENGINE)
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[8:16])
    data = json.loads(raw[16 : 16 + length])
    assert data["request"]["tensorrt_version"] == "10.3.0"
    assert data["request"]["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert data["request"]["card"]["name"] == "tiny"
    assert raw[16 + length :] == ENGINE


CHANGES = {
    "card": {"card": {"name": "tiny", "version": "2", "input": {"width": 64, "height": 48}}},
    "onnx_sha256": {"onnx_sha256": "cd" * 32},
    "tensorrt_version": {"tensorrt_version": "10.8.0"},
    "gpu_name": {"gpu_name": "Orin"},
    "compute_capability": {"compute_capability": "8.7"},
    "precision": {"precision": "int8"},
    "profiles": {
        "profiles": (ShapeProfile(name="image", min=(1, 3, 48, 64), opt=(1, 3, 96, 128), max=(1, 3, 96, 128)),)
    },
    "build_options": {
        "build_options": {"workspace_mb": 512, "dla_core": None, "gpu_fallback": None, "calibration": None}
    },
}


def test_every_key_field_has_a_change_case():
    assert set(CHANGES) == set(KEY_FIELDS)


@pytest.mark.parametrize("field", KEY_FIELDS)
def test_key_changes_when_any_field_changes(field):
    assert make_request(**CHANGES[field]).key() != make_request().key()


def test_key_ignores_paths_and_dict_order():
    a = make_request()
    b = make_request(onnx_path="/elsewhere/tiny.onnx", build_options=dict(reversed(list(a.build_options.items()))))
    assert a.key() == b.key()
    assert len(a.key()) == 20


@pytest.mark.parametrize("field", KEY_FIELDS)
def test_mismatched_engine_is_refused_naming_the_field(tmp_path, field):
    path = tmp_path / "x.engine"
    write_engine_file(path, make_request(), ENGINE)
    with pytest.raises(EngineError) as info:
        load_checked(path, make_request(**CHANGES[field]))
    message = str(info.value)
    assert f"{field}:" in message
    assert "rebuild with: perception build-engine models/tiny.onnx" in message
    others = [f for f in KEY_FIELDS if f != field]
    assert not any(f"- {f}:" in message for f in others)


def test_version_mismatch_message_is_specific(tmp_path):
    path = tmp_path / "x.engine"
    write_engine_file(path, make_request(), ENGINE)
    with pytest.raises(EngineError, match=r"engine built for TensorRT 10\.3\.0 but 10\.8\.0 is installed"):
        load_checked(path, make_request(tensorrt_version="10.8.0"))


def test_all_differing_fields_are_listed(tmp_path):
    path = tmp_path / "x.engine"
    write_engine_file(path, make_request(), ENGINE)
    with pytest.raises(EngineError) as info:
        load_checked(path, make_request(tensorrt_version="10.8.0", compute_capability="8.7", precision="fp32"))
    message = str(info.value)
    for phrase in (
        "TensorRT 10.3.0 but 10.8.0",
        "compute capability 9.0 but this GPU has 8.7",
        "built at fp16 but fp32",
    ):
        assert phrase in message


def test_environment_fields_only_ignores_build_choices(tmp_path):
    path = tmp_path / "x.engine"
    write_engine_file(path, make_request(), ENGINE)
    meta, engine = load_checked(path, make_request(precision="int8", build_options={}), fields=ENVIRONMENT_FIELDS)
    assert engine == ENGINE and meta.request.precision == "fp16"
    with pytest.raises(EngineError, match="gpu_name"):
        load_checked(path, make_request(gpu_name="Orin"), fields=ENVIRONMENT_FIELDS)


def test_describe_differences_is_empty_for_equal_requests():
    assert describe_differences(make_request(), make_request(onnx_path="elsewhere")) == []
    with pytest.raises(EngineError, match="unknown engine field"):
        describe_differences(make_request(), make_request(), fields=("colour",))


# --- damaged files ------------------------------------------------------------------------------


@pytest.fixture
def engine_file(tmp_path):
    path = tmp_path / "x.engine"
    write_engine_file(path, make_request(), ENGINE)
    return path


def test_truncated_engine_is_refused(engine_file):
    engine_file.write_bytes(engine_file.read_bytes()[:-100])
    with pytest.raises(EngineError, match="truncated"):
        read_engine_file(engine_file)


@pytest.mark.parametrize("keep", [0, 5, 12, 40])
def test_truncated_header_is_refused(engine_file, keep):
    engine_file.write_bytes(engine_file.read_bytes()[:keep])
    with pytest.raises(EngineError, match=r"truncated|not a perception engine"):
        read_engine_file(engine_file)


def test_flipped_engine_byte_is_refused(engine_file):
    raw = bytearray(engine_file.read_bytes())
    raw[-10] ^= 0xFF
    engine_file.write_bytes(bytes(raw))
    with pytest.raises(EngineError, match="sha256"):
        read_engine_file(engine_file)
    read_metadata(engine_file)  # the header alone is still fine


def test_corrupt_json_is_refused(engine_file):
    raw = bytearray(engine_file.read_bytes())
    raw[17] = ord("#")
    engine_file.write_bytes(bytes(raw))
    with pytest.raises(EngineError, match="corrupt metadata"):
        read_engine_file(engine_file)


def test_absurd_metadata_length_is_refused(engine_file):
    raw = bytearray(engine_file.read_bytes())
    raw[8:16] = struct.pack("<Q", 1 << 40)
    engine_file.write_bytes(bytes(raw))
    with pytest.raises(EngineError, match="corrupt or truncated"):
        read_engine_file(engine_file)


def test_raw_tensorrt_engine_is_refused(tmp_path):
    path = tmp_path / "raw.engine"
    path.write_bytes(b"ftrt" + ENGINE)
    with pytest.raises(EngineError, match=r"not a perception engine file.*perception build-engine"):
        read_engine_file(path)


def test_future_format_is_refused(engine_file):
    raw = engine_file.read_bytes()
    (length,) = struct.unpack("<Q", raw[8:16])
    data = json.loads(raw[16 : 16 + length])
    data["format_version"] = 99
    payload = json.dumps(data).encode()
    engine_file.write_bytes(raw[:8] + struct.pack("<Q", len(payload)) + payload + raw[16 + length :])
    with pytest.raises(EngineError, match="format 99"):
        read_engine_file(engine_file)


def test_missing_file(tmp_path):
    with pytest.raises(EngineError, match="not found"):
        read_engine_file(tmp_path / "nope.engine")


# --- the cache ----------------------------------------------------------------------------------


def test_cache_lookup_store_load(tmp_path):
    cache = EngineCache(directory=tmp_path / "cache")
    req = make_request()
    assert cache.lookup(req) is None
    assert cache.entries() == []
    path = cache.store(req, ENGINE)
    assert path.parent == tmp_path / "cache"
    assert path.name == f"tiny_fp16_{req.key()}.engine"
    assert cache.lookup(req) == path
    assert cache.lookup(make_request(precision="fp32")) is None
    meta, engine = cache.load_checked(path, req)
    assert engine == ENGINE and meta.request == req
    assert cache.entries(model_name="tiny") == [path]
    assert cache.entries(model_name="other") == []


def test_cache_never_returns_a_mismatched_engine_even_if_renamed(tmp_path):
    cache = EngineCache(directory=tmp_path)
    old = make_request(tensorrt_version="10.3.0")
    new = make_request(tensorrt_version="10.8.0")
    cache.store(old, ENGINE).rename(cache.path_for(new))  # a file under the wrong name
    path = cache.lookup(new)
    assert path is not None
    with pytest.raises(EngineError, match=r"TensorRT 10\.3\.0 but 10\.8\.0"):
        cache.load_checked(path, new)


def test_explain_miss_names_what_differs(tmp_path):
    cache = EngineCache(directory=tmp_path)
    cache.store(make_request(tensorrt_version="10.3.0"), ENGINE)
    (tmp_path / "tiny_fp16_broken.engine").write_bytes(b"junk")
    lines = cache.explain_miss(make_request(tensorrt_version="10.8.0"))
    assert any("TensorRT 10.3.0 but 10.8.0" in line for line in lines)
    assert any("broken" in line and "unreadable" in line for line in lines)
    assert len(lines) == 2


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("PERCEPTION_ENGINE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "perception" / "engines"
    assert EngineCache().directory == default_cache_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.chdir(tmp_path)  # not relative to the working directory
    assert default_cache_dir() == Path.home() / ".cache" / "perception" / "engines"
    monkeypatch.setenv("PERCEPTION_ENGINE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path


def test_shape_profile_validation():
    with pytest.raises(EngineError, match="min <= opt <= max"):
        ShapeProfile(name="image", min=(1, 3, 96, 64), opt=(1, 3, 48, 64), max=(1, 3, 96, 64))
    with pytest.raises(EngineError, match="ranks"):
        ShapeProfile(name="image", min=(1, 3, 48), opt=(1, 3, 48, 64), max=(1, 3, 48, 64))
    p = ShapeProfile(name="image", min=(1, 3, 32, 32), opt=(2, 3, 48, 64), max=(4, 3, 96, 128))
    assert not p.is_fixed and "max [4, 3, 96, 128]" in p.describe()
    assert ShapeProfile.from_json(p.to_json()) == p


def test_rebuild_command_spells_out_the_build():
    req = make_request(
        precision="int8",
        profiles=(ShapeProfile(name="image", min=(1, 3, 32, 32), opt=(2, 3, 48, 64), max=(4, 3, 96, 128)),),
        build_options={"workspace_mb": 512, "dla_core": 0, "gpu_fallback": False, "calibration": {}},
    )
    cmd = req.rebuild_command()
    assert cmd.startswith("perception build-engine models/tiny.onnx --precision int8")
    for part in ("--max-batch 4", "--opt-size 64x48", "--max-size 128x96", "--workspace-mb 512", "--dla 0",
                 "--no-gpu-fallback", "--calib-dir DIR"):
        assert part in cmd


def test_find_matching_ignores_only_the_named_options(tmp_path):
    cache = EngineCache(directory=tmp_path)
    opts = {"workspace_mb": 2048, "dla_core": None, "gpu_fallback": None}
    old = make_request(precision="int8", build_options={**opts, "calibration": {"images": 100, "images_sha256": "a"}})
    new = make_request(precision="int8", build_options={**opts, "calibration": {"images": 200, "images_sha256": "b"}})
    other_gpu = replace(new, gpu_name="Orin", compute_capability="8.7")
    from perception.backends.engine_cache import write_engine_file as write

    write(cache.path_for(old), old, ENGINE)
    meta_new = write(cache.path_for(new), new, ENGINE)
    write(cache.path_for(other_gpu), other_gpu, ENGINE)
    assert meta_new.created_utc >= read_metadata(cache.path_for(old)).created_utc  # newest first (same second: either)
    runtime_request = make_request(precision="int8", build_options={**opts, "calibration": None})
    assert cache.lookup(runtime_request) is None
    found = cache.find_matching(runtime_request, ignore_build_options=("calibration",))
    assert {p for p, _ in found} == {cache.path_for(old), cache.path_for(new)}
    assert all(m.request.gpu_name == "NVIDIA H100 80GB HBM3" for _, m in found)
    assert cache.find_matching(runtime_request) == []  # calibration compared unless ignored
    assert cache.find_matching(replace(runtime_request, precision="fp16"), ignore_build_options=("calibration",)) == []
