"""nearest / bilinear upsampling, the Upsampler front end and make_upsampler."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.errors import ConfigError
from perception.modelcard import (
    CAMVID_CLASSES,
    CardClass,
    CardInput,
    CardOutput,
    ModelCard,
)
from perception.postprocess.grid import block_grid
from perception.postprocess.labels import argmax_labels
from perception.postprocess.upsample import (
    Upsampler,
    make_upsampler,
    upsample_bilinear,
    upsample_nearest,
)


def _card(classes=CAMVID_CLASSES) -> ModelCard:
    return ModelCard(
        name="t",
        input=CardInput(height=48, width=64),
        outputs=(CardOutput(name="semantic_logits", kind="semantic_logits", channels=len(classes), stride=4),),
        classes=classes,
    )


def _smooth_logits(c: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(max(2, h // 3), max(2, w // 3), c)).astype(np.float32)
    fine = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, c)
    return np.ascontiguousarray(fine.transpose(2, 0, 1))


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
@pytest.mark.parametrize("frame", [(64, 48), (97, 31), (1920, 1080)])
def test_constant_maps_are_exact(method, frame):
    logits = np.zeros((11, 12, 16), np.float32)
    logits[7] = 3.0
    out = Upsampler(method=method, out_size=frame, num_classes=11)(logits)
    assert out.shape == (frame[1], frame[0]) and out.dtype == np.uint8
    assert (out == 7).all()


def test_nearest_matches_cv2_nearest_exact():
    labels = np.random.default_rng(0).integers(0, 11, (17, 23)).astype(np.uint8)
    before = labels.copy()
    out = upsample_nearest(labels, (200, 90))
    np.testing.assert_array_equal(out, cv2.resize(labels, (200, 90), interpolation=cv2.INTER_NEAREST_EXACT))
    np.testing.assert_array_equal(labels, before)


@pytest.mark.parametrize("frame", [(64, 48), (150, 61), (33, 200)])
def test_bilinear_two_classes_equals_full_resize_then_argmax(frame):
    logits = _smooth_logits(2, 12, 16, seed=3)
    full = cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), frame, interpolation=cv2.INTER_LINEAR)
    ref = np.argmax(full, axis=2)
    ours = upsample_bilinear(logits, frame)
    diff = ours != ref
    # only float rounding at exact ties may differ
    assert np.abs(full[..., 0] - full[..., 1])[diff].max(initial=0.0) < 1e-4


def test_bilinear_far_from_boundaries_is_nearest_and_band_is_full_bilinear():
    logits = _smooth_logits(11, 15, 20, seed=5)
    before = logits.copy()
    W, H = 160, 120
    labels = argmax_labels(logits)
    near = upsample_nearest(labels, (W, H))
    ours = upsample_bilinear(logits, (W, H))
    g = block_grid((20, 15), (W, H))
    by, bx = np.nonzero(g.occupied() & ~g.nonuniform(labels))
    far = g.flat_pixels(by, bx).reshape(-1)
    np.testing.assert_array_equal(ours.reshape(-1)[far], near.reshape(-1)[far])  # untouched outside the band
    full = np.argmax(cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), (W, H)), axis=2)
    assert (ours != full).mean() < 0.01  # candidates restricted to the block's classes: almost the same
    assert (ours != near).mean() > 0.01  # and the band really was recomputed
    np.testing.assert_array_equal(logits, before)


def test_upsampler_reuses_its_buffer_and_reports_timing():
    logits = _smooth_logits(11, 12, 16)
    up = Upsampler(method="bilinear", out_size=(64, 48), num_classes=11)
    a = up(logits)
    first = a.copy()
    b = up(-logits)
    assert b is a  # documented: a view of the reused buffer
    assert not np.array_equal(first, b)
    assert {"argmax", "nearest", "bilinear", "total"} <= set(up.last_timing_ms)
    assert all(v >= 0 for v in up.last_timing_ms.values())


def test_upsampler_handles_grid_size_changes():
    up = Upsampler(method="bilinear", out_size=(64, 48), num_classes=11)
    for h, w in [(12, 16), (6, 8), (12, 16)]:
        logits = _smooth_logits(11, h, w)
        np.testing.assert_array_equal(up(logits), upsample_bilinear(logits, (64, 48)))


def test_make_upsampler_maps_camvid_names():
    up = make_upsampler("refine", card=_card(), out_size=(64, 48))
    assert up.refine_classes == (3, 4)  # Road, Pavement
    assert make_upsampler("nearest", card=_card(), out_size=(64, 48)).method == "nearest"


def test_make_upsampler_refuses_missing_class_and_unknown_option():
    classes = tuple(CardClass(id=i, name=n, color=(0, 0, 0)) for i, n in enumerate(["sky", "car"]))
    with pytest.raises(ConfigError, match="road"):
        make_upsampler("refine", card=_card(classes), out_size=(64, 48))
    with pytest.raises(ConfigError, match="unknown upsampler option"):
        make_upsampler("refine", card=_card(), out_size=(64, 48), guide_eps=3)
    with pytest.raises(ConfigError, match="nearest, bilinear, refine"):
        make_upsampler("bicubic", card=_card(), out_size=(64, 48))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(method="cubic"), "method"),
        (dict(num_classes=0), "num_classes"),
        (dict(method="refine"), "refine_classes"),
        (dict(method="refine", refine_classes=(3, 11)), "outside"),
        (dict(method="refine", refine_classes=(3, 3)), "twice"),
        (dict(method="refine", refine_classes=(3,), color_sigma=0), "color_sigma"),
        (dict(method="refine", refine_classes=(3,), color_weight=-1), "color_weight"),
        (dict(method="refine", refine_classes=(3,), min_region_px=-5), "min_region_px"),
        (dict(method="refine", refine_classes=(3,), confident_logodds=-1.0), "confident_logodds"),
    ],
)
def test_bad_configuration_is_config_error(kwargs, match):
    args = dict(method="bilinear", out_size=(64, 48), num_classes=11) | kwargs
    with pytest.raises(ConfigError, match=match):
        Upsampler(**args)


def test_bad_call_arguments_are_value_errors():
    up = Upsampler(method="refine", out_size=(64, 48), num_classes=11, refine_classes=(3, 4))
    logits = _smooth_logits(11, 12, 16)
    with pytest.raises(ValueError, match="needs the full-resolution image"):
        up(logits)
    with pytest.raises(ValueError, match=r"uint8\[48, 64, 3\]"):
        up(logits, np.zeros((48, 63, 3), np.uint8))
    with pytest.raises(ValueError, match="classes"):
        up(logits[:5], np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="logits"):
        up(logits[0], np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="out_size"):
        Upsampler(method="nearest", out_size=(0, 5), num_classes=11)


def test_with_a_real_tiny_model(tmp_path):
    from perception.backends.factory import open_backend
    from perception.inference import Segmenter
    from perception.modelcard import load_card
    from tests.tinymodel import make_tiny_model

    path = make_tiny_model(tmp_path, input_size=(64, 48))
    card = load_card(path)
    frame = np.random.default_rng(0).integers(0, 255, (90, 160, 3)).astype(np.uint8)
    with open_backend(path, input_size=(64, 48)) as backend:
        logits = np.array(Segmenter(backend=backend, input_size=(64, 48))(frame).semantic_logits)
    for method in ("nearest", "bilinear", "refine"):
        out = make_upsampler(method, card=card, out_size=(160, 90))(logits, frame)
        assert out.shape == (90, 160) and out.dtype == np.uint8
        assert out.max() < card.num_classes


def test_first_max_label_is_argmax_over_candidates_with_ties_and_nans():
    """Junction blocks pick the candidate of the first largest interpolated score, as np.argmax does."""
    from perception.postprocess.upsample import _first_max_label

    rng = np.random.default_rng(5)
    for k in (2, 3, 4):
        val = rng.integers(-2, 3, (40, k, 5, 6)).astype(np.float32)  # many ties
        cand = np.sort(rng.choice(11, size=(40, k), replace=True), axis=1).astype(np.uint8)
        for nan in (False, True):
            if nan:
                val.reshape(-1)[rng.integers(0, val.size, 20)] = np.nan
            ref = np.take_along_axis(cand[:, :, None, None], np.argmax(val, axis=1)[:, None], axis=1)[:, 0]
            np.testing.assert_array_equal(_first_max_label(val, cand), ref)
