"""Bad input to ``perception run``: one clear line and a non-zero exit, before any process starts;
and the ``source.reconnect`` / ``source.stall_timeout_s`` settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from perception.config import ReconnectConfig, apply_overrides, load_config, parse_config
from perception.errors import ConfigError
from tests.sources.mjpeg_server import MjpegServer, closed_port


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "perception.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("text,kind", [("- a\n- b\n", "list"), ("just words\n", "string"), ("42\n", "number")])
def test_a_top_level_that_is_not_a_mapping_is_a_config_error(tmp_path, text, kind):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    for overrides in (None, ["source.uri=synthetic"]):
        with pytest.raises(ConfigError, match=rf"{cfg}: the top level must be a mapping of sections .* got a {kind}"):
            load_config(cfg, overrides)
    with pytest.raises(ConfigError, match="--set needs a configuration whose top level is a mapping"):
        apply_overrides(["a"], ["x=1"])  # type: ignore[arg-type]


def test_cli_list_config_with_set_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- source\n- model\n")
    r = _run("run", str(cfg), "--set", "runtime.slots=3")
    assert r.returncode == 2
    assert "top level must be a mapping" in _one_line(r) and "Traceback" not in r.stderr


@pytest.mark.parametrize("where", ["under-a-file", "proc", "read-only-folder"])
def test_cli_unwritable_overlay_is_refused_before_start(tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "out.mp4"
    elif where == "proc":
        target = "/proc/perception-overlay-test.mp4"
    else:
        if os.geteuid() == 0:
            pytest.skip("root may write to a read-only folder")
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        target = ro / "out.mp4"
    started = time.monotonic()
    r = _run("run", "--source", "synthetic", "--max-frames", "2", "--overlay", str(target))
    line = _one_line(r)
    assert r.returncode == 2
    assert "output.overlay: cannot write" in line and str(target) in line
    assert time.monotonic() - started < 30  # refused at build time (the run used to fail after start-up)


def test_cli_verbose_never_logs_a_password():
    url = f"http://admin:hunter2@127.0.0.1:{closed_port()}/stream.mjpg"
    r = _run("-vv", "run", "--source", url)
    assert r.returncode != 0
    assert "hunter2" not in r.stderr + r.stdout
    assert "admin:***@" in r.stderr  # the input is still named


def test_reconnect_settings_and_defaults():
    cfg = parse_config({})
    assert cfg.source.reconnect == ReconnectConfig()
    assert cfg.source.reconnect.max_attempts is None  # forever
    assert cfg.source.reconnect.max_delay_s <= 5.0
    assert cfg.source.stall_timeout_s == 5.0
    cfg = parse_config({"source": {"reconnect": {"max_attempts": 3, "initial_delay_s": 0.2}, "stall_timeout_s": 2}})
    assert cfg.source.reconnect.max_attempts == 3 and cfg.source.stall_timeout_s == 2.0
    with pytest.raises(ConfigError, match=r"source\.reconnect.*initial_delay_s \(9\) must not exceed max_delay_s"):
        parse_config({"source": {"reconnect": {"initial_delay_s": 9}}})
    with pytest.raises(ConfigError, match=r"unknown key 'source\.reconnect\.tries'"):
        parse_config({"source": {"reconnect": {"tries": 3}}})
    with pytest.raises(ConfigError, match=r"'source\.stall_timeout_s'"):
        parse_config({"source": {"stall_timeout_s": 0}})


def test_configured_reconnect_reaches_a_live_source():
    from perception.sources.factory import open_configured
    from perception.sources.grabber import ReconnectPolicy

    with MjpegServer(fps=30) as server:
        cfg = parse_config({"source": {"uri": server.url, "stall_timeout_s": 1.5,
                                       "reconnect": {"max_attempts": 2, "initial_delay_s": 0.1, "max_delay_s": 1}}})
        with open_configured(cfg.source) as src:
            timeouts = src._grabber.timeouts
    assert timeouts.stall_s == 1.5
    assert timeouts.reconnect == ReconnectPolicy(initial_delay_s=0.1, max_delay_s=1.0, max_attempts=2)
    # replayed inputs ignore the live settings
    with open_configured(parse_config({"source": {"uri": "synthetic:num_frames=2"}}).source) as src:
        assert sum(1 for _ in src) == 2
