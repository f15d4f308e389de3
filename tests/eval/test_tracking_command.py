"""``perception eval-tracking`` as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perception.cli", "eval-tracking", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_eval_tracking_json_has_the_required_keys():
    p = _run("--json", "--seed", "1", "--seeds", "2", "--frames", "40", "--width", "480", "--height", "270")
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1  # exactly one JSON object
    out = json.loads(lines[0])
    for key in ("idf1", "mota", "id_switches", "track_frames", "hota", "deta", "assa", "loca"):
        assert key in out
    assert 0.0 < out["idf1"] <= 1.0 and out["mota"] <= 1.0
    # --match source: similarity 1 for every allowed pair, so every threshold gives the same figures
    assert 0.0 < out["hota"] <= 1.0 and out["loca"] == 1.0
    assert out["hota"] == pytest.approx((out["deta"] * out["assa"]) ** 0.5, abs=1e-9)
    assert set(out["per_seed"]["1"]) >= {"hota", "idf1", "mota", "id_switches"}
    assert out["track_frames"] > 0 and isinstance(out["id_switches"], int)
    assert out["seeds"] == [1, 2] and out["settings"]["frames"] == 40


def test_eval_tracking_table_and_bad_option():
    p = _run("--frames", "20", "--width", "320", "--height", "180", "--match", "iou")
    assert p.returncode == 0, p.stderr
    assert "IDF1" in p.stdout and "HOTA" in p.stdout and "AssA" in p.stdout and "mask IoU" in p.stdout
    bad = _run("--seeds", "0")
    assert bad.returncode == 2 and "--seeds" in bad.stderr


def test_eval_tracking_in_parallel_processes_gives_the_same_figures():
    args = ("--json", "--seed", "3", "--seeds", "3", "--frames", "30", "--width", "480", "--height", "270")
    one, two = _run(*args), _run(*args, "--jobs", "2")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    for d in (a, b):
        d.pop("seconds")
    assert a == b and a["seeds"] == [3, 4, 5]
    bad = _run("--jobs", "0")
    assert bad.returncode == 2 and "--jobs" in bad.stderr


def test_identity_image_gives_each_object_its_own_colour_and_false_positives_black():
    import numpy as np

    from perception.eval.tracking_sim import identity_image
    from perception.tracking.appearance import colour_embeddings, similarity

    inst = np.zeros((60, 90), np.uint16)
    inst[5:25, 5:40] = 1  # object 7
    inst[30:55, 5:40] = 2  # object 214 (the largest id with a distinct colour)
    inst[5:55, 50:85] = 3  # a false positive
    img = identity_image(inst, (7, 214, 0))
    assert img.shape == (60, 90, 3) and img.dtype == np.uint8
    colours = {k: {tuple(c) for c in img[inst == k]} for k in (0, 1, 2, 3)}
    assert all(len(c) == 1 for c in colours.values())  # one colour per detection
    assert colours[3] == colours[0] == {(21, 21, 21)}  # false positives look like the background
    assert len({colours[1].pop(), colours[2].pop(), (21, 21, 21)}) == 3
    # distinct for every object id below 215
    cells = {tuple(c) for c in identity_image(np.arange(215, dtype=np.uint16)[None, :], range(1, 215))[0, 1:]}
    assert len(cells) == 214 and (21, 21, 21) not in cells
    # the tracker's histograms see one cell per object: the same object matches, different ones do not
    emb, ok = colour_embeddings(inst, img, np.array([1, 2, 3]))
    assert ok.all()
    bc = similarity(emb, emb)
    assert np.allclose(np.diag(bc), 1.0) and bc[0, 1] == 0.0 and bc[0, 2] == 0.0


def test_eval_tracking_appearance_inputs():
    args = ("--json", "--seed", "2", "--frames", "40", "--width", "480", "--height", "270")
    explicit, default = _run(*args, "--appearance", "image"), _run(*args)
    assert explicit.returncode == 0 and default.returncode == 0, explicit.stderr + default.stderr
    a, b = json.loads(explicit.stdout), json.loads(default.stdout)
    a.pop("seconds"), b.pop("seconds")
    assert a == b and a["settings"]["appearance"] == "image"
    bad = _run("--appearance", "magic")
    assert bad.returncode == 2 and "--appearance" in bad.stderr


def test_appearance_none_and_oracle_bound_the_colour_cue():
    from perception.errors import ConfigError
    from perception.eval.tracking_sim import SimSettings, evaluate_seed

    # 'none' is the tracker without colours
    none = evaluate_seed(7, SimSettings(frames=150, appearance="none"))
    no_colour = evaluate_seed(
        7, SimSettings(frames=150), tracker_kwargs={"appearance_weight": 0.0, "appearance_gate": 0.0}
    )
    assert none == no_colour
    # with colours that name every object the tracker keeps ids far better (seed 7, 150 frames: 10 ID
    # switches without colours, 6 with the rendered frame's, 2 with every pixel in its object's own
    # colour, 0 with every detection in its object's colour)
    oracle = evaluate_seed(7, SimSettings(frames=150, appearance="oracle"))
    pixels = evaluate_seed(7, SimSettings(frames=150, appearance="oracle-pixels"))
    assert oracle.id_switches < pixels.id_switches < none.id_switches
    assert oracle.idf1 > pixels.idf1 > none.idf1
    assert oracle.num_gt == pixels.num_gt == none.num_gt  # the same detections and ground truth
    with pytest.raises(ConfigError, match="appearance"):
        SimSettings(appearance="magic")


def test_a_reader_that_goes_away_ends_the_command_quietly():
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # like `perception eval-tracking | head` after head has exited
    try:
        p = subprocess.run(
            [sys.executable, "-m", "perception.cli", "eval-tracking", "--frames", "5", "--width", "320",
             "--height", "180"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert p.returncode == 141, p.stderr
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_eval_tracking_takes_tracker_keywords():
    from perception.eval.tracking_sim import SimSettings, evaluate_seed

    args = ("--json", "--seed", "5", "--frames", "40", "--width", "480", "--height", "270", "--reid", "none")
    p = _run(*args, "--tracker", "appearance_context=0.01", "--tracker", "max_lost_frames=10")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["tracker"] == {"appearance_context": 0.01, "max_lost_frames": 10}
    settings = SimSettings(frames=40, width=480, height=270)
    expected = evaluate_seed(5, settings, tracker_kwargs={"appearance_context": 0.01, "max_lost_frames": 10})
    assert out["id_switches"] == expected.id_switches and out["idf1"] == pytest.approx(expected.idf1, abs=1e-12)
    # the settings change the result (so the option is not ignored): no colours at all
    off = json.loads(_run(*args, "--tracker", "appearance_weight=0", "--tracker", "appearance_gate=0").stdout)
    assert off["tracker"] == {"appearance_weight": 0, "appearance_gate": 0}
    assert off["idf1"] == pytest.approx(evaluate_seed(5, settings, tracker_kwargs=off["tracker"]).idf1, abs=1e-12)
    assert off["idf1"] != out["idf1"]
    table = _run("--frames", "10", "--width", "320", "--height", "180", "--tracker", "match_iou=0.4")
    assert table.returncode == 0 and "match_iou = 0.4" in table.stdout


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("no_such_knob=1", "unknown keyword(s) no_such_knob"),
        ("appearance_gate=2", "appearance_gate"),
        ("appearance_gate=[1", "cannot parse value"),
        ("appearance_gate=high", "--tracker"),
        ("=3", "empty key"),
        ("appearance_gate", "expects key=value"),
        ("appearance_gate=[0.1]", "wrong type"),
    ],
)
def test_eval_tracking_refuses_bad_tracker_keywords(option, message):
    p = _run("--frames", "5", "--tracker", option)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr


def test_tracker_options_are_read_as_yaml_with_plain_numbers():
    from perception.cli.eval_tracking import parse_tracker_options
    from perception.errors import ConfigError

    got = parse_tracker_options(["max_lost_seconds=1e1", "clock=mono", "report_lost=true", "new_track_score=null"])
    assert got == {"max_lost_seconds": 10.0, "clock": "mono", "report_lost": True, "new_track_score": None}
    with pytest.raises(ConfigError, match="twice"):
        parse_tracker_options(["match_iou=0.2", "match_iou=0.3"])
    both = _run("--frames", "5", "--confirm-hits", "2", "--tracker", "confirm_hits=3")
    assert both.returncode == 2 and "not both" in both.stderr


def test_eval_tracking_uses_the_bundled_reid_model_unless_told_otherwise():
    from perception.eval.tracking_sim import SimSettings, evaluate_seed
    from perception.tracking.reid import DEFAULT_REID_MODEL

    args = ("--json", "--seed", "2", "--frames", "40", "--width", "480", "--height", "270")
    options = {"default": (), "bare": ("--reid",), "none": ("--reid", "none")}
    runs = {how: _run(*args, *extra) for how, extra in options.items()}
    assert all(p.returncode == 0 for p in runs.values()), [p.stderr for p in runs.values()]
    out = {how: json.loads(p.stdout) for how, p in runs.items()}
    for d in out.values():
        d.pop("seconds")
    assert out["default"] == out["bare"] and out["default"]["settings"]["reid"] == str(DEFAULT_REID_MODEL)
    assert out["none"]["settings"]["reid"] == "" and out["default"]["track_frames"] > 0
    for how, model in (("default", str(DEFAULT_REID_MODEL)), ("none", "")):
        expected = evaluate_seed(2, SimSettings(frames=40, width=480, height=270, reid=model))
        assert out[how]["idf1"] == pytest.approx(expected.idf1, abs=1e-12)
        assert out[how]["id_switches"] == expected.id_switches
    bad = _run(*args, "--reid", "/nonexistent/model.onnx")
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_the_default_tracker_meets_the_issue_targets_on_held_out_seeds():
    """A regression guard for the tracking targets (IDF1 >= 0.90, <= 1 ID switch per 1000 track-frames)
    on six seeds that nothing was tuned or trained on, with the default settings of
    ``perception eval-tracking`` (bundled re-id model). Measured: 8 switches in 9 855 track-frames
    (0.81 per 1000), IDF1 0.924. Six seeds are a small sample (blocks of 40 range from 0.45 to 1.30 per
    1000): the figure that counts is ``perception eval-tracking --seed 160 --seeds 160``."""
    from perception.eval.tracking import TrackingCounts
    from perception.eval.tracking_sim import SimSettings, evaluate_seed
    from perception.tracking.reid import DEFAULT_REID_MODEL

    settings = SimSettings(reid=str(DEFAULT_REID_MODEL))
    total = sum((evaluate_seed(s, settings) for s in range(160, 166)), TrackingCounts())
    assert total.num_gt > 9000
    assert total.idf1 >= 0.90
    assert total.switches_per_1000_track_frames <= 1.0, total.id_switches
