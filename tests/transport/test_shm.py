"""Shared-memory slots: visible across real processes, released by the owner."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from perception.errors import TransportError
from perception.runtime.shm import SharedSlots


def _child(desc, slot, value, done):
    s = SharedSlots.attach(desc)
    s.array("frame", slot)[:] = value
    s.array("logits", slot)[...] = value / 2
    s.close()
    done.set()


def test_arrays_are_shared_between_processes_and_unlinked():
    with SharedSlots.create(layout={"frame": ((7, 9, 3), "uint8"), "logits": ((3, 2, 2), "float32")}, slots=3) as s:
        name = s.name
        assert Path("/dev/shm", name).exists()
        ctx = mp.get_context("spawn")
        done = ctx.Event()
        p = ctx.Process(target=_child, args=(s.descriptor, 1, 42, done))
        p.start()
        p.join(30)
        assert p.exitcode == 0 and done.is_set()
        assert (s.array("frame", 1) == 42).all() and (s.array("frame", 0) == 0).all()
        assert np.allclose(s.array("logits", 1), 21.0)
        assert s.array("logits", 2).ctypes.data % 64 == 0
    assert not Path("/dev/shm", name).exists()


def test_attach_to_a_gone_segment():
    s = SharedSlots.create(layout={"a": ((2,), "uint8")}, slots=1)
    desc = s.descriptor
    s.close()
    with pytest.raises(TransportError, match="is gone"):
        SharedSlots.attach(desc)
