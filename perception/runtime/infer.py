"""The inference stage: runs the model on each slot's frame and writes its outputs into the same slot."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from perception.config import ModelConfig
from perception.runtime import stagekit
from perception.runtime.protocol import EOS, FRAME_KEY, OUTPUT_KEYS, Counter
from perception.runtime.stagekit import StageHandles


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceSettings:
    """The configuration the inference stage reads."""

    model: ModelConfig
    model_path: str
    """``model.path`` resolved (see :meth:`ModelConfig.resolved_path`)."""


def open_segmenter(settings: InferenceSettings):
    """The backend and the :class:`~perception.inference.Segmenter` over it, as configured."""
    from perception.backends.factory import open_backend
    from perception.inference import Segmenter

    m = settings.model
    backend = open_backend(
        settings.model_path, kind=m.backend, threads=m.threads, precision=m.precision,
        input_size=tuple(m.input_size) if m.input_size else None,
    )
    return backend, Segmenter(backend=backend)


def inference_main(handles: StageHandles, settings: InferenceSettings, descriptor) -> None:
    stagekit.setup(handles, "inference")
    code = 0
    slots = backend = None
    try:
        from perception.runtime.shm import SharedSlots

        backend, seg = open_segmenter(settings)
        slots = SharedSlots.attach(descriptor)
        # one warm-up run so the first real frame's latency is not the allocator's
        seg(np.zeros_like(slots.array(FRAME_KEY, 0)))
        handles.ready.set()
        if stagekit.wait(handles.go, handles.stop):
            _loop(handles, slots, seg)
    except BaseException as exc:
        code = stagekit.fail(handles, "inference", exc)
    finally:
        stagekit.close_quietly(backend, "the backend")
        stagekit.close_quietly(slots, "shared memory")
        stagekit.finish_queues(handles, handles.outbox, handles.free)
    sys.exit(code)


def _loop(handles: StageHandles, slots, seg) -> None:
    while True:
        item = stagekit.get(handles.inbox, handles.stop)
        if item is None:
            return
        if item == EOS:
            handles.outbox.put(EOS)
            return
        t0 = time.monotonic_ns()
        out = seg(slots.array(FRAME_KEY, item.slot)[: item.meta.height, : item.meta.width])
        for k in OUTPUT_KEYS:
            v = getattr(out, k)
            if v is not None:
                np.copyto(slots.array(k, item.slot), v)
        t1 = time.monotonic_ns()
        item.timings_ms["queue_inference"] = (t0 - item.t_slot_ns) / 1e6
        item.timings_ms["inference"] = (t1 - t0) / 1e6
        item.t_slot_ns = t1
        handles.outbox.put(item)
        handles.counters[Counter.INFERRED] += 1
