"""Configuration: defaults, YAML, --set overrides and the errors a person sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from perception.config import DEFAULT_CONFIG, apply_overrides, load_config, parse_config
from perception.errors import ConfigError


def test_default_config_file_is_valid_and_embedded_default():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.model.backend == "onnxruntime"
    assert cfg.source.uri.endswith("media/solidWhiteRight.mp4") and Path(cfg.source.uri).is_file()  # the bundled clip
    assert cfg.model.resolved_path().name == "camvid_lite0_panoptic.onnx"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"source": {"url": "x"}}, "unknown key 'source.url'; allowed keys here: camera_id"),
        ({"sourcez": {}}, "unknown key 'sourcez'"),
        ({"sources": [{"uri": "a"}, {"uri": "b", "camera_id": "cam0"}]},
         "stream id 'cam0' is used by more than one source"),
        ({"source": {"uri": "a"}, "sources": [{"uri": "b"}]}, "either 'source' (one stream) or 'sources'"),
        ({"sources": [{"uri": "a", "camera_id": "front cam"}]}, "letters, digits"),
        ({"publish": {"encoding": "gzip"}}, "'publish.encoding': must be one of 'raw', 'zstd' or 'lz4'"),
        ({"model": {"backend": "cuda"}}, "'model.backend': must be one of 'onnxruntime', 'tensorrt' or 'auto'"),
        ({"mode": "fast"}, "'mode': must be one of 'live' or 'replay'"),
        ({"publish": {"address": "localhost:5555"}}, "'publish.address'"),
        ({"runtime": {"slots": 1}}, "'runtime.slots'"),
        (["not", "a", "mapping"], "top level must be a mapping"),
        ({"tracking": {"partial_ratio": 1.5}}, "'tracking.partial_ratio': Input should be less than 1 (got 1.5)"),
        ({"tracking": {"low_score": 0.9}}, "'tracking': low_score (0.9) must be <= high_score (0.5)"),
        ({"tracking": {"clock": "frames"}}, "'tracking.clock': must be one of 'pts', 'mono' or 'wall'"),
        ({"tracking": {"mask_strid": 4}}, "unknown key 'tracking.mask_strid'; allowed keys here: appearance_bins"),
        (
            {"tracking": {"kalman_params": {"noise": 1}}},
            "unknown key 'tracking.kalman_params.noise'; allowed keys here: accel_std, init_size_velocity_std",
        ),
    ],
)
def test_bad_values_name_the_key(data, needle):
    with pytest.raises(ConfigError) as ei:
        parse_config(data)
    assert needle in str(ei.value)


def test_overrides_parse_yaml_values_and_nest():
    out = apply_overrides({"publish": {"hwm": 4}}, ["publish.hwm=8", "model.input_size=[256, 192]", "source.loop=true"])
    assert out == {"publish": {"hwm": 8}, "model": {"input_size": [256, 192]}, "source": {"loop": True}}
    cfg = parse_config(out)
    assert cfg.model.input_size == (256, 192)


def test_override_errors():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["publish.hwm"])
    with pytest.raises(ConfigError, match="'publish' is not a section"):
        apply_overrides({"publish": 3}, ["publish.hwm=1"])


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_unknown_key_is_one_line_and_nonzero(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("source:\n  uri: synthetic\n  colour: red\n")
    r = subprocess.run([sys.executable, "-m", "perception.cli", "run", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "unknown key 'source.colour'" in lines[0]


def test_every_tracker_setting_is_a_tracking_key_with_the_tracker_default():
    from perception.config import TrackingConfig
    from perception.tracking import TrackerParams

    cfg = parse_config({}).tracking
    assert set(TrackingConfig.model_fields) == set(TrackerParams.model_fields) | {"enabled", "reid_model"}
    assert cfg.params() == TrackerParams() and type(cfg.params()) is TrackerParams
    cfg = parse_config({"tracking": {"mask_stride": 4, "exit_fraction": 0.3, "kalman_params": {"meas_std": 0.1}}})
    assert cfg.tracking.params() == TrackerParams(mask_stride=4, exit_fraction=0.3, kalman_params={"meas_std": 0.1})


def test_tracking_section_reaches_the_tracker_through_the_runtime_dict():
    """The supervisor hands stages ``model_dump(mode="json")``; the post-processing stage passes every
    tracking key but ``enabled`` and ``reid_model`` to the Tracker (perception/runtime/post.py)."""
    from perception.tracking import Tracker

    cfg = load_config(DEFAULT_CONFIG, ["tracking.confirm_hits=3", "tracking.kalman_params={accel_std: 0.2}"])
    section = cfg.model_dump(mode="json")["tracking"]
    tracker = Tracker(**{k: v for k, v in section.items() if k not in ("enabled", "reid_model")})
    assert tracker.params == cfg.tracking.params()
    assert tracker.params.confirm_hits == 3 and tracker.params.kalman_params.accel_std == 0.2
    # or the section itself: the tracker keeps the tracker's settings alone
    assert Tracker(cfg.tracking).params == cfg.tracking.params() and type(Tracker(cfg.tracking).params) is not type(
        cfg.tracking
    )


def test_motion_off_written_plainly_is_off(tmp_path):
    """YAML 1.1 reads a bare ``off`` as false: ``motion: off`` in a file and ``--set postprocess.motion=off``
    (the documented value) must mean off, not fail with "got False"."""
    path = tmp_path / "c.yaml"
    path.write_text("postprocess:\n  motion: off\n")
    assert load_config(path).postprocess.motion == "off"
    surveillance = Path(__file__).resolve().parents[2] / "configs" / "surveillance.yaml"
    assert load_config(surveillance).postprocess.motion == "mog2"
    assert load_config(surveillance, ["postprocess.motion=off"]).postprocess.motion == "off"
    with pytest.raises(ConfigError, match=r"postprocess\.motion"):
        load_config(surveillance, ["postprocess.motion=on"])  # true is not a background model
