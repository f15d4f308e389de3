"""Model cards: the JSON file beside every ONNX model that says how to feed it and read it.

A card lives at ``<model>.card.json`` next to ``<model>.onnx``. It names the classes (with colours
and thing/stuff flags), the input tensor (size, colour order, normalisation) and every output tensor
(its role, channels and stride relative to the input). Backends check the model's real tensors
against the card and refuse a model that does not match (:class:`ModelCardError`).

Normalisation: ``x = (pixel / 255 - mean) / std`` per channel, channels in ``color_order``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from perception.errors import ModelCardError
from perception.types import ClassInfo

CARD_SCHEMA_VERSION = 1

OutputKind = Literal["semantic_logits", "center_heatmap", "center_offsets"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CardClass(_Strict):
    id: int = Field(ge=0, le=254)
    name: str
    color: tuple[int, int, int]
    is_thing: bool = False


class CardInput(_Strict):
    name: str = "image"
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[3] = 3
    color_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32", "float16"] = "float32"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    dynamic_batch: bool = False
    size_multiple: int = Field(default=32, gt=0)
    """Other input sizes are accepted when the model is dynamic and both sides are multiples of this."""
    dynamic_size: bool = False


class CardOutput(_Strict):
    name: str
    kind: OutputKind
    channels: int = Field(gt=0)
    stride: int = Field(gt=0)
    """Input pixels per output pixel along each axis."""
    order: Literal["yx", "xy"] | None = None
    """For ``center_offsets``: channel order of the (dy, dx) vector to the instance centre."""
    activation: Literal["none", "sigmoid"] = "none"
    """For ``center_heatmap``: what a consumer applies to get a [0, 1] centre score. ``none``: the
    output already is one (a regressed Gaussian, as in Panoptic-DeepLab, or an in-graph sigmoid);
    ``sigmoid``: the output is a logit."""
    units: Literal["output_px", "input_px"] = "output_px"
    """For ``center_offsets``: offsets measured in output-grid pixels or in network-input pixels."""


class ModelCard(_Strict):
    schema_version: int = CARD_SCHEMA_VERSION
    name: str
    version: str = "1"
    description: str = ""
    input: CardInput
    outputs: tuple[CardOutput, ...]
    classes: tuple[CardClass, ...]
    ignore_index: int | None = None
    """Label id in training data that means 'unlabelled' (not a model class)."""
    training: dict = Field(default_factory=dict)
    """Free-form provenance: data set, its terms/licence, recipe, seeds."""
    metrics: dict = Field(default_factory=dict)
    """Measured figures (with the command that measured them)."""

    @model_validator(mode="after")
    def _check(self) -> ModelCard:
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"classes must have ids 0..{len(ids) - 1} in order, got {ids}")
        kinds = [o.kind for o in self.outputs]
        if "semantic_logits" not in kinds:
            raise ValueError("outputs must include one 'semantic_logits' tensor")
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"each output kind may appear once, got {kinds}")
        sem = self.output("semantic_logits")
        if sem.channels != len(self.classes):
            raise ValueError(
                f"semantic_logits has {sem.channels} channels but the card lists {len(self.classes)} classes"
            )
        return self

    # --- convenience -------------------------------------------------------------------------
    def output(self, kind: OutputKind) -> CardOutput:
        for o in self.outputs:
            if o.kind == kind:
                return o
        raise ModelCardError(f"model card {self.name!r} has no {kind!r} output")

    def has_output(self, kind: OutputKind) -> bool:
        return any(o.kind == kind for o in self.outputs)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` of the network input."""
        return self.input.width, self.input.height

    def class_infos(self) -> tuple[ClassInfo, ...]:
        return tuple(
            ClassInfo(id=c.id, name=c.name, color=tuple(c.color), is_thing=c.is_thing) for c in self.classes
        )

    def thing_ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self.classes if c.is_thing)

    def class_id(self, name: str) -> int:
        for c in self.classes:
            if c.name.lower() == name.lower():
                return c.id
        raise ModelCardError(
            f"model card {self.name!r} has no class {name!r}; it has {[c.name for c in self.classes]}"
        )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"


def card_path_for(model_path: str | Path) -> Path:
    """``engines/x.onnx`` -> ``engines/x.card.json``."""
    p = Path(model_path)
    return p.with_name(p.stem + ".card.json")


def load_card(path: str | Path) -> ModelCard:
    """Read and validate a card. ``path`` may be the card itself or the model it sits beside."""
    p = Path(path)
    if p.suffix != ".json":
        p = card_path_for(p)
    try:
        text = p.read_text()
    except FileNotFoundError as exc:
        if p != Path(path) and not Path(path).exists():  # asked for a model that is not there either
            raise ModelCardError(f"model file not found: {path} (nor its card {p.name})") from exc
        raise ModelCardError(
            f"model card not found: {p} (every model needs a <name>.card.json beside it; "
            "see docs/model-card.md)"
        ) from exc
    except OSError as exc:
        raise ModelCardError(f"cannot read model card {p}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"model card {p} is not valid JSON: {exc}") from exc
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "(card)"
        raise ModelCardError(f"model card {p}: {loc}: {first['msg']}") from exc


def save_card(card: ModelCard, path: str | Path) -> Path:
    p = Path(path)
    if p.suffix != ".json":
        p = card_path_for(p)
    p.write_text(card.to_json())
    return p


CAMVID_CLASSES: tuple[CardClass, ...] = tuple(
    CardClass(id=i, name=n, color=c, is_thing=t)
    for i, (n, c, t) in enumerate(
        [
            ("Sky", (128, 128, 128), False),
            ("Building", (128, 0, 0), False),
            ("Pole", (192, 192, 128), False),
            ("Road", (128, 64, 128), False),
            ("Pavement", (60, 40, 222), False),
            ("Tree", (128, 128, 0), False),
            ("SignSymbol", (192, 128, 128), False),
            ("Fence", (64, 64, 128), False),
            ("Car", (64, 0, 128), True),
            ("Pedestrian", (64, 64, 0), True),
            ("Bicyclist", (0, 128, 192), True),
        ]
    )
)
"""The 11 CamVid classes (SegNet version) in id order; label 11 = Unlabelled is the ignore index."""
