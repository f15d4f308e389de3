"""The pieces the recorders share: the indexed label PNG, topic names, the output configuration."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from perception.config import parse_config
from perception.errors import ConfigError
from perception.outputs.base import SinkConfig
from perception.outputs.foxglove_sink import FoxgloveSink
from perception.outputs.frames import indexed_png, palette_rgb, ros_name, wrap_ids
from perception.outputs.registry import make_sinks
from perception.outputs.ros2 import Ros2BagSink, bag_folder
from perception.viz import generated_palette
from tests.outputs.readers import decode_image, png_ids


def test_an_indexed_png_keeps_the_ids_and_shows_the_palette():
    ids = np.random.default_rng(0).integers(0, 256, (37, 53)).astype(np.uint8)
    lut = generated_palette(3)
    png = indexed_png(ids, palette_rgb(lut))
    assert np.array_equal(png_ids(png), ids)
    assert np.array_equal(decode_image(png), lut[ids])
    with pytest.raises(ValueError, match="768 bytes"):
        indexed_png(ids, b"\0" * 12)


def test_instance_ids_wrap_into_one_byte_without_becoming_background():
    inst = np.array([[0, 1, 255, 256, 510, 65535]], np.uint16)
    assert wrap_ids(inst).tolist() == [[0, 1, 255, 1, 255, 255]]
    assert wrap_ids(inst)[0, 1:].min() > 0


@pytest.mark.parametrize(("name", "ros"), [("/perception/cam0/labels", "/perception/cam0/labels"),
                                            ("/perception/front-cam/2/x", "/perception/front_cam/_2/x"),
                                            ("perception//cam.1", "/perception/cam_1")])
def test_ros_names(name, ros):
    assert ros_name(name) == ros


def test_bag_folder():
    assert str(bag_folder("out/run.mcap")) == "out/run" and str(bag_folder("out/run")) == "out/run"


def _sinks(tmp_path, **output):
    cfg = parse_config({"publish": {"address": "tcp://127.0.0.1:0"}, "output": output})
    return [type(s) for s in make_sinks(SinkConfig(publish=cfg.publish, output=cfg.output))]


def test_the_registry_picks_the_recorders_from_the_output_section(tmp_path):
    assert FoxgloveSink in _sinks(tmp_path, record=str(tmp_path / "a.mcap"))
    assert FoxgloveSink in _sinks(tmp_path, foxglove="127.0.0.1:0")
    assert Ros2BagSink in _sinks(tmp_path, record=str(tmp_path / "a.mcap"), record_format="ros2")
    assert not {FoxgloveSink, Ros2BagSink} & set(_sinks(tmp_path))
    with pytest.raises(ConfigError, match=r"\.mcap file"):
        _sinks(tmp_path, record=str(tmp_path / "a.bag"))
    (tmp_path / "a.mcap").write_bytes(b"")
    with pytest.raises(ConfigError, match="exists"):  # before any process starts
        _sinks(tmp_path, record=str(tmp_path / "a.mcap"))


@pytest.mark.parametrize(("output", "needle"), [
    ({"foxglove": "localhost:http"}, "expected HOST:PORT"),
    ({"foxglove": "127.0.0.1:70000"}, "port must be 0-65535"),
    ({"record_format": "rosbag"}, "'output.record_format'"),
    ({"calibration": {"cam0": {"K": [1, 2, 3]}}}, r"'output.calibration.cam0.K': .*3x3 matrix"),
    ({"calibration": {"cam0": {"K": [1, 0, 0, 0, 1, 0, 0, 0, 1], "P": [1]}}}, "3x4 matrix"),
])
def test_bad_output_settings_name_the_key(output, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config({"output": output})


def test_run_options_map_onto_the_output_section():
    from perception.cli.run import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    cfg = build_config(parser.parse_args(["run", "--record", "o/r.mcap", "--format", "ros2", "--foxglove"]))
    assert (cfg.output.record, cfg.output.record_format) == ("o/r.mcap", "ros2")
    assert cfg.output.foxglove_address() == ("127.0.0.1", 8765)
    assert build_config(parser.parse_args(["run", "--foxglove", "0.0.0.0:9000"])).output.foxglove == "0.0.0.0:9000"
    assert build_config(parser.parse_args(["run"])).output.foxglove is None
