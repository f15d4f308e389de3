"""A tiny but real ONNX segmentation model (with its model card) for tests.

The graph is a fixed, deterministic function of the image so tests can reason about its output:

* ``semantic_logits`` [N, C, H/4, W/4]: a 4×4 average pool of the input, then a 1×1 convolution whose
  weights make class ``c`` prefer a particular mix of colour channels (plus a position ramp so that
  several classes appear on real images);
* ``center_heatmap`` [N, 1, H/4, W/4] and ``center_offsets`` [N, 2, H/4, W/4] (panoptic only): simple
  functions of the pooled image.

Built with ``onnx.helper`` only (no torch), so it is fast to make in every test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.modelcard import CAMVID_CLASSES, CardClass, CardInput, CardOutput, ModelCard, save_card


def make_tiny_model(
    directory: str | Path,
    *,
    num_classes: int = 11,
    input_size: tuple[int, int] = (64, 48),
    panoptic: bool = True,
    dynamic: bool = True,
    name: str = "tiny",
    seed: int = 0,
    heavy_layers: int = 0,
) -> Path:
    """Write ``<directory>/<name>.onnx`` and ``<name>.card.json``; return the ONNX path.

    ``heavy_layers`` > 0 prepends that many 32-channel 3×3 convolutions at the input resolution
    (a residual branch that does not change the outputs' meaning), making inference deliberately
    slow — for tests of back-pressure and drop policies with a real, slow model.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    w, h = input_size
    rng = np.random.default_rng(seed)
    n_dim = "N" if dynamic else 1
    h_dim = "H" if dynamic else h
    w_dim = "W" if dynamic else w
    oh = "h" if dynamic else h // 4
    ow = "w" if dynamic else w // 4

    weight = rng.normal(0.0, 1.0, size=(num_classes, 3, 1, 1)).astype(np.float32)
    bias = np.linspace(-0.5, 0.5, num_classes).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "sem_w"), numpy_helper.from_array(bias, "sem_b")]
    nodes = []
    first = "image"
    if heavy_layers > 0:
        c = 32
        prev = "image"
        for i in range(heavy_layers):
            cin = 3 if i == 0 else c
            wgt = (rng.normal(0.0, 0.05, size=(c, cin, 3, 3))).astype(np.float32)
            inits.append(numpy_helper.from_array(wgt, f"heavy_w{i}"))
            nodes.append(helper.make_node("Conv", [prev, f"heavy_w{i}"], [f"heavy{i}"], pads=[1, 1, 1, 1]))
            prev = f"heavy{i}"
        # squeeze back to 3 channels with zero weights and add: outputs equal the light model's
        inits.append(numpy_helper.from_array(np.zeros((3, c, 1, 1), np.float32), "heavy_out"))
        nodes += [
            helper.make_node("Conv", [prev, "heavy_out"], ["heavy_res"]),
            helper.make_node("Add", ["image", "heavy_res"], ["image_h"]),
        ]
        first = "image_h"
    nodes += [
        helper.make_node("AveragePool", [first], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["pooled", "sem_w", "sem_b"], ["semantic_logits"]),
    ]
    outputs = [
        helper.make_tensor_value_info("semantic_logits", TensorProto.FLOAT, [n_dim, num_classes, oh, ow])
    ]
    if panoptic:
        hw = np.array([[[[0.5]], [[-0.25]], [[0.25]]]], dtype=np.float32)  # [1,3,1,1]
        ow_ = np.array([[[[1.0]], [[0.0]], [[-1.0]]], [[[0.0]], [[1.0]], [[0.5]]]], dtype=np.float32)
        inits += [numpy_helper.from_array(hw, "hm_w"), numpy_helper.from_array(ow_, "off_w")]
        nodes += [
            helper.make_node("Conv", ["pooled", "hm_w"], ["hm_raw"]),
            helper.make_node("Sigmoid", ["hm_raw"], ["center_heatmap"]),
            helper.make_node("Conv", ["pooled", "off_w"], ["center_offsets"]),
        ]
        outputs += [
            helper.make_tensor_value_info("center_heatmap", TensorProto.FLOAT, [n_dim, 1, oh, ow]),
            helper.make_tensor_value_info("center_offsets", TensorProto.FLOAT, [n_dim, 2, oh, ow]),
        ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [n_dim, 3, h_dim, w_dim])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = directory / f"{name}.onnx"
    onnx.save(model, str(path))

    if num_classes == len(CAMVID_CLASSES):
        classes = CAMVID_CLASSES
    else:
        classes = tuple(
            CardClass(id=i, name=f"class{i}", color=(int(37 * i % 256), int(91 * i % 256), int(53 * i % 256)),
                      is_thing=i >= num_classes - 2)
            for i in range(num_classes)
        )
    card_outputs = [CardOutput(name="semantic_logits", kind="semantic_logits", channels=num_classes, stride=4)]
    if panoptic:
        card_outputs += [
            CardOutput(name="center_heatmap", kind="center_heatmap", channels=1, stride=4),  # in-graph sigmoid
            CardOutput(name="center_offsets", kind="center_offsets", channels=2, stride=4, order="yx"),
        ]
    card = ModelCard(
        name=name,
        description="tiny deterministic test model",
        input=CardInput(height=h, width=w, dynamic_batch=dynamic, dynamic_size=dynamic, size_multiple=4),
        outputs=tuple(card_outputs),
        classes=classes,
        ignore_index=num_classes if num_classes == 11 else None,
        training={"data": "none (random weights)"},
    )
    save_card(card, path)
    return path
