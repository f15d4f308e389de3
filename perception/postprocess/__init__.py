"""Post-processing: pure functions from network outputs to full-resolution labels and instances.

Semantic: :func:`argmax_labels`, :func:`upsample_nearest`, :func:`upsample_bilinear`,
:func:`refine_labels`, and :class:`Upsampler` (preallocated buffers for the hot path).
Panoptic: :class:`PanopticGrouper` and the functions in :mod:`perception.postprocess.panoptic`.
"""

from perception.postprocess.labels import argmax_labels
from perception.postprocess.panoptic import PanopticGrouper
from perception.postprocess.refine import refine_labels
from perception.postprocess.upsample import (
    METHODS,
    Upsampler,
    make_upsampler,
    upsample_bilinear,
    upsample_nearest,
)

__all__ = [
    "METHODS",
    "PanopticGrouper",
    "Upsampler",
    "argmax_labels",
    "make_upsampler",
    "refine_labels",
    "upsample_bilinear",
    "upsample_nearest",
]
