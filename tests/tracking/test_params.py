"""TrackerParams: one home for every tracker setting, validated with errors that name the field."""

from __future__ import annotations

import pytest

from perception.errors import ConfigError
from perception.tracking import KalmanParams, Tracker, TrackerParams
from tests.tracking.helpers import inst, meta

# the defaults the tracker had as keyword arguments before TrackerParams held them (e4abd5a)
_DEFAULTS_BEFORE = {
    "high_score": 0.5, "low_score": 0.1, "new_track_score": None, "match_iou": 0.3, "match_iou_low": 0.5,
    "confirm_hits": 2, "confirm_first_frame": True, "max_lost_frames": 30, "max_lost_seconds": None,
    "use_mask_iou": True, "mask_weight": 0.5, "mask_stride": 6, "buffer": 0.0, "lost_buffer": 0.0,
    "max_buffer": 1.0, "recover_distance": 2.0, "partial_ratio": 0.6, "distance_weight": 0.3,
    "min_birth_area": 50, "exit_fraction": 0.2, "appearance_weight": 0.5, "appearance_gate": 0.25,
    "appearance_bins": 6, "appearance_momentum": 0.9, "appearance_context": 0.0, "appearance_context_grow": 0.5,
    "recover_appearance": 0.45, "recover_appearance_weight": 4.0, "recover_margin": 0.2, "link_distance": 2.0,
    "link_appearance": 0.6, "lost_penalty": 0.2, "embedding_weight": 0.5, "match_cost": 1.0,
    "block_birth_distance": 0.7, "block_birth_lost": 6, "report_tentative": False, "report_lost": False,
    "clock": "pts", "kalman_params": KalmanParams(),
}  # fmt: skip


def test_every_setting_keeps_its_default_and_has_a_docstring():
    p = TrackerParams()
    assert {name: getattr(p, name) for name in TrackerParams.model_fields} == _DEFAULTS_BEFORE
    for name, field in TrackerParams.model_fields.items():
        assert field.description and len(field.description) > 20, name
    assert p.birth_score == p.high_score and TrackerParams(new_track_score=0.7).birth_score == 0.7


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"partial_ratio": 1.0}, "partial_ratio must be in [0, 1), got 1.0"),
        ({"appearance_bins": 17}, "appearance_bins must be in [2, 16], got 17"),
        ({"mask_stride": 0}, "mask_stride must be >= 1, got 0"),
        ({"match_cost": 0}, "match_cost must be > 0, got 0"),
        ({"max_lost_seconds": -1.0}, "max_lost_seconds must be >= 0, got -1.0"),
        ({"high_score": float("nan")}, "high_score must be in [0, 1], got nan"),
        ({"low_score": 0.6, "high_score": 0.5}, "low_score (0.6) must be <= high_score (0.5)"),
        ({"new_track_score": 0.4}, "new_track_score (0.4) must be >= high_score (0.5)"),
        ({"clock": "frames"}, "clock must be one of 'pts', 'mono' or 'wall', got 'frames'"),
        ({"appearance_gate": [0.1]}, "appearance_gate has the wrong type"),
        ({"mask_stride": 6.5}, "mask_stride has the wrong type"),
        ({"no_such_knob": 1}, "unknown setting 'no_such_knob'; known: high_score, low_score"),
        ({"kalman_params": {"noise": 1}}, "unknown setting 'kalman_params.noise'; known: accel_std"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field_and_its_range(kwargs, needle):
    with pytest.raises(ConfigError) as ei:
        TrackerParams(**kwargs)
    assert needle in str(ei.value)
    with pytest.raises(ConfigError) as ei:  # the tracker's keywords go through the same checks
        Tracker(**kwargs)
    assert needle in str(ei.value)


def test_params_are_frozen_and_replace_validates():
    p = TrackerParams(high_score=0.6)
    with pytest.raises(ValueError, match="frozen"):
        p.high_score = 0.7  # type: ignore[misc]
    q = p.replace(match_iou=0.4)
    assert (q.high_score, q.match_iou, p.match_iou) == (0.6, 0.4, 0.3)
    with pytest.raises(ConfigError, match="match_iou"):
        p.replace(match_iou=2.0)
    assert TrackerParams(kalman_params={"meas_std": 0.1}).kalman_params == KalmanParams(meas_std=0.1)


def test_tracker_takes_params_and_keyword_overrides():
    base = TrackerParams(confirm_hits=3, report_tentative=True)
    assert Tracker(base).params is base
    tr = Tracker(base, report_tentative=False, high_score=0.6)
    assert (tr.params.confirm_hits, tr.params.report_tentative, tr.params.high_score) == (3, False, 0.6)
    assert base.report_tentative  # the given params are not changed
    assert Tracker(high_score=0.6).params == TrackerParams(high_score=0.6)
    assert Tracker().params == TrackerParams()
    # the settings are used: with report_tentative the first detection is reported at once
    first = Tracker(base, confirm_first_frame=False).update([inst(1, (10, 10, 50, 40))], meta(0))
    assert len(first) == 1 and first[0].hits == 1


def test_docs_list_every_setting():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "tracking.md").read_text()
    missing = [name for name in TrackerParams.model_fields if f"| `{name}` |" not in doc]
    assert not missing, f"docs/tracking.md's settings table lacks {missing}"
