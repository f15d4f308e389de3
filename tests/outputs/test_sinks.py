"""Sinks: the registry, the plugin seam, and a newcomer's sink added without touching the package."""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest

from perception.config import OutputConfig, PublishConfig
from perception.errors import ConfigError
from perception.outputs.base import RunContext, Sink, SinkConfig
from perception.outputs.overlay import OverlaySink, camera_path
from perception.outputs.publisher import PublisherSink
from perception.outputs.registry import load_plugin, make_sinks
from perception.types import ClassInfo, FrameMeta, FrameResult
from tests.runtime.helpers import REPO, free_port, kill_tree, start_pipeline, write_config, write_video
from tests.tinymodel import make_tiny_model

COUNTING_SINK = '''
"""A newcomer's sink: counts frames per camera and writes the counts when the stream ends."""
import json
import os
from pathlib import Path


class CountingSink:
    name = "counting"

    def __init__(self, path):
        self.path = Path(path)
        self.counts = {}
        self.sizes = set()

    def open(self, run):
        self.classes = len(run.classes)

    def write(self, result):
        cam = result.meta.camera_id
        self.counts[cam] = self.counts.get(cam, 0) + 1
        self.sizes.add(result.labels.shape)
        return True

    def close(self, *, reason="end"):
        self.path.write_text(json.dumps({"counts": self.counts, "reason": reason, "classes": self.classes,
                                         "sizes": sorted(self.sizes)}))


def make_sink(config):
    return CountingSink(os.environ["COUNTING_SINK_OUT"])
'''


def _config(**output) -> SinkConfig:
    return SinkConfig(publish=PublishConfig(address="tcp://127.0.0.1:0"), output=OutputConfig(**output))


def test_the_publisher_is_always_chosen_and_the_overlay_only_when_asked(tmp_path):
    assert [type(s) for s in make_sinks(_config())] == [PublisherSink]
    sinks = make_sinks(_config(overlay=str(tmp_path / "o.mp4")))
    assert [type(s) for s in sinks] == [PublisherSink, OverlaySink]
    assert all(isinstance(s, Sink) for s in sinks)


@pytest.mark.parametrize(("spec", "needle"), [
    ("no_colon", "expected 'module:factory'"),
    ("perception_no_such_module:make", "cannot import 'perception_no_such_module'"),
    ("perception.outputs.overlay:no_such_factory", "has no callable 'no_such_factory'"),
])
def test_a_bad_plugin_is_one_clear_error(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        load_plugin(spec)
    with pytest.raises(ConfigError, match=r"output\.plugins"):
        make_sinks(_config(plugins=(spec,)))


def test_a_factory_that_returns_no_sink_is_refused():
    with pytest.raises(ConfigError, match="not a Sink"):
        make_sinks(_config(plugins=("builtins:repr",)))  # callable, returns a string


def test_overlay_files_per_camera(tmp_path):
    base = tmp_path / "run.mp4"
    assert camera_path(base, "/cam/front", first=True) == base
    assert camera_path(base, "/cam/front", first=False) == tmp_path / "run_cam_front.mp4"
    sink = OverlaySink(path=base, alpha=0.5)
    classes = (ClassInfo(id=0, name="road", color=(128, 64, 128), is_thing=False),)
    sink.open(RunContext(classes=classes, fps=10.0, mode="replay"))
    for cam, (w, h) in (("a", (64, 48)), ("b", (32, 24)), ("a", (64, 48))):
        meta = FrameMeta(seq=0, camera_id=cam, frame_index=0, t_mono_ns=0, t_wall_ns=0, pts_ns=0, width=w, height=h)
        frame = np.full((h, w, 3), 90, np.uint8)
        assert sink.write(FrameResult(meta=meta, labels=np.zeros((h, w), np.uint8), frame=frame))
    sink.close()
    import cv2

    for path, n in ((base, 2), (tmp_path / "run_b.mp4", 1)):
        cap = cv2.VideoCapture(str(path))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == n
        cap.release()


def test_a_newcomers_sink_runs_in_the_real_pipeline_without_touching_the_package(tmp_path):
    """The newcomer writes one module (here, in a temporary folder outside the package) and names it in
    ``output.plugins``: the real pipeline (three processes) hands it every frame's FrameResult."""
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "counting_sink.py").write_text(textwrap.dedent(COUNTING_SINK))
    model = make_tiny_model(tmp_path / "model")
    video = write_video(tmp_path / "clip.mp4", frames=12, size=(96, 72))
    out = tmp_path / "counts.json"
    cfg = write_config(tmp_path / "c.yaml", model=model, source=str(video), port=free_port(),
                       replay={"speed": 0}, output={"plugins": ["counting_sink:make_sink"]})
    env_before = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(plugin_dir), str(REPO), os.environ.get("PYTHONPATH", "")])
    os.environ["COUNTING_SINK_OUT"] = str(out)
    try:
        proc = start_pipeline(cfg, "--json")
        try:
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            kill_tree(proc)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    assert proc.returncode == 0, stderr
    got = json.loads(out.read_text())
    assert got == {"counts": {"cam0": 12}, "reason": "end", "classes": got["classes"], "sizes": [[72, 96]]}
    assert got["classes"] > 0
    assert json.loads(stdout)["frames"] == 12
