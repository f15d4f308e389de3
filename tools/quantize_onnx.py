#!/usr/bin/env python3
"""Static INT8 quantisation of a model for ONNX Runtime on the CPU (QDQ, per-channel weights).

Calibrates activation ranges on images preprocessed exactly like the runtime (the model card's
``Preprocessor``) — CamVid **train** images by default, never the val images used to report — and
writes ``<out>.onnx`` with a copy of the card (metrics cleared: measure them again with
``perception eval``).

    python tools/quantize_onnx.py engines/camvid_lite0_panoptic.onnx \
        --calib-dir ../shared/data/camvid/train --out engines/camvid_lite0_panoptic_int8.onnx

``--tensorrt`` quantises the way TensorRT's explicit (Q/DQ) quantisation needs it: signed INT8
activations with zero points of 0 (symmetric ranges) and float biases. TensorRT accepts no other
Q/DQ INT8 (the default here, unsigned activations with zero points, suits ONNX Runtime's CPU
kernels best), and TensorRT 11 builds INT8 engines only from such a model:

    python tools/quantize_onnx.py engines/camvid_lite0_panoptic.onnx --tensorrt \
        --calib-dir ../shared/data/camvid/train --out engines/camvid_lite0_panoptic_int8_trt.onnx
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perception.backends.preprocess import Preprocessor  # noqa: E402
from perception.cli.args import size_arg as parse_size  # noqa: E402
from perception.errors import DataError  # noqa: E402
from perception.modelcard import load_card, save_card  # noqa: E402


class _Reader:
    """onnxruntime CalibrationDataReader over a folder of images (sorted, every k-th)."""

    def __init__(self, files: list[Path], pre: Preprocessor, input_name: str) -> None:
        self._files = iter(files)
        self._pre = pre
        self._name = input_name

    def get_next(self):
        for f in self._files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise DataError(f"cannot read calibration image {f}")
            return {self._name: self._pre(img).copy()}
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--calib-dir", type=Path, default=REPO.parent / "shared" / "data" / "camvid" / "train")
    ap.add_argument("--calib-images", type=int, default=64, help="images used to calibrate (spread over the folder)")
    ap.add_argument("--input-size", type=parse_size, default=None,
                    help="WxH to calibrate at (default: the card's)")
    ap.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="percentile",
                    help="activation range estimator: percentile clips rare outliers (default), minmax keeps all")
    ap.add_argument("--tensorrt", action="store_true",
                    help="symmetric signed INT8 activations and float biases, as TensorRT's Q/DQ builds need")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    card = load_card(args.model)
    size = args.input_size or card.input_size
    pre = Preprocessor(card=card, input_size=size)
    files = sorted(p for p in args.calib_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no images in {args.calib_dir}")
    step = max(1, len(files) // args.calib_images)
    files = files[::step][: args.calib_images]
    print(f"calibrating on {len(files)} images from {args.calib_dir} at {size[0]}x{size[1]} ({args.method})")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[args.method]
    extra = {"CalibMovingAverage": True} if method == CalibrationMethod.MinMax else {}
    if args.tensorrt:
        extra.update({"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prep.onnx"
        quant_pre_process(str(args.model), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped), str(args.out), _Reader(files, pre, card.input.name),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if args.tensorrt else QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=method, extra_options=extra,
        )
    q = card.model_copy(update={
        "name": card.name + ("-int8-trt" if args.tensorrt else "-int8"),
        "description": card.description + " Static INT8 (QDQ, per-channel weights"
                       + (", symmetric signed activations and float biases for TensorRT" if args.tensorrt else "")
                       + "), calibrated on "
                       f"{len(files)} images of {args.calib_dir.name} by tools/quantize_onnx.py.",
        "metrics": {},
    })
    save_card(q, args.out)
    mb = args.out.stat().st_size / 2**20
    print(f"wrote {args.out} ({mb:.1f} MiB) and its card; measure it: perception eval --model {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
