"""The ``publish`` section: addresses and CURVE keys, checked before any process starts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from perception.config import parse_config
from perception.errors import ConfigError
from tests.runtime.helpers import REPO


def test_curve_section_parses_and_needs_client_keys():
    cfg = parse_config({"publish": {"curve": {"secret_key": "k/server.key_secret", "client_keys": ["k/a.key"]}}})
    assert cfg.publish.curve.client_keys == ("k/a.key",)
    assert parse_config({}).publish.curve is None
    with pytest.raises(ConfigError, match=r"publish\.curve\.client_keys"):
        parse_config({"publish": {"curve": {"secret_key": "k/server.key_secret", "client_keys": []}}})
    with pytest.raises(ConfigError, match=r"unknown key 'publish\.curve\.public'"):
        parse_config({"publish": {"curve": {"secret_key": "s", "client_keys": ["a"], "public": "x"}}})


def _run(tmp_path, publish: dict) -> subprocess.CompletedProcess:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"publish": publish, "source": {"max_frames": 1}}))
    return subprocess.run([sys.executable, "-m", "perception.cli", "run", str(cfg)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def test_missing_or_malformed_key_files_are_one_clear_line(tmp_path):
    r = _run(tmp_path, {"curve": {"secret_key": str(tmp_path / "none.key_secret"), "client_keys": ["x.key"]}})
    assert r.returncode == 2 and "none.key_secret: not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    (tmp_path / "bad.key_secret").write_text("garbage\n")
    r = _run(tmp_path, {"curve": {"secret_key": str(tmp_path / "bad.key_secret"), "client_keys": ["x.key"]}})
    assert r.returncode == 2 and "bad.key_secret: no 'public-key" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_out_of_range_port_is_a_config_error(tmp_path):
    r = _run(tmp_path, {"address": "tcp://127.0.0.1:99999"})
    assert r.returncode == 2 and "publish.address" in r.stderr and "99999" in r.stderr


def test_shipped_configs_bind_loopback():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        address = parse_config(yaml.safe_load(path.read_text())).publish.address
        assert address.startswith(("tcp://127.0.0.1:", "ipc://")), (path, address)
