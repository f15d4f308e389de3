"""Shared-memory slots: named numpy arrays that several processes see without copies or pickling.

One :class:`SharedSlots` is a single POSIX shared-memory segment holding ``slots`` copies of a fixed
layout of arrays (e.g. the full-resolution frame and the network outputs of one frame). A slot index
is all that crosses a process boundary; which process may touch which slot is decided by the runtime's
slot protocol (a free-slot queue), not here.

Lifetimes: the creating process owns the segment. Once every process that needs it has attached, the
owner calls :meth:`unlink`: the name disappears from ``/dev/shm`` while the memory stays mapped until
the last process exits, so nothing can leak even if every process is killed with SIGKILL. Until then,
:meth:`close` unlinks it (also on a crash, through ``with``), and Python's resource tracker removes it
if the owner dies.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from perception.errors import TransportError
from perception.runtime.procs import running

_ALIGN = 64


@dataclass(frozen=True, slots=True)
class ArraySpec:
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class SlotsDescriptor:
    """Everything a process needs to attach (small and picklable)."""

    name: str
    slots: int
    layout: tuple[tuple[str, ArraySpec], ...]


def _layout_offsets(layout: tuple[tuple[str, ArraySpec], ...], slots: int) -> tuple[dict[str, int], int, int]:
    offsets, pos = {}, 0
    for key, spec in layout:
        offsets[key] = pos
        nbytes = int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
        pos += (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
    return offsets, pos, pos * slots


class SharedSlots:
    """``slots`` copies of a layout of arrays in one shared-memory segment."""

    def __init__(self, descriptor: SlotsDescriptor, shm: shared_memory.SharedMemory, *, owner: bool) -> None:
        self.descriptor = descriptor
        self._shm = shm
        self._owner = owner
        self._unlinked = False
        offsets, stride, _ = _layout_offsets(descriptor.layout, descriptor.slots)
        self._views: dict[str, list[np.ndarray]] = {}
        for key, spec in descriptor.layout:
            self._views[key] = [
                np.ndarray(spec.shape, dtype=spec.dtype, buffer=shm.buf, offset=i * stride + offsets[key])
                for i in range(descriptor.slots)
            ]

    @classmethod
    def create(
        cls, *, layout: Mapping[str, tuple[tuple[int, ...], str]], slots: int, prefix: str = "perception"
    ) -> SharedSlots:
        if slots < 1:
            raise TransportError(f"shared memory needs at least one slot, got {slots}")
        lay = tuple(
            (k, ArraySpec(tuple(int(d) for d in shape), np.dtype(dtype).name)) for k, (shape, dtype) in layout.items()
        )
        _, _, total = _layout_offsets(lay, slots)
        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(6)}"
        try:
            shm = shared_memory.SharedMemory(name=name, create=True, size=max(total, 1))
        except OSError as exc:
            raise TransportError(
                f"cannot create {total / 2**20:.1f} MiB of shared memory ({exc}); free /dev/shm or use fewer slots"
            ) from exc
        return cls(SlotsDescriptor(name=name, slots=slots, layout=lay), shm, owner=True)

    @classmethod
    def attach(cls, descriptor: SlotsDescriptor) -> SharedSlots:
        try:
            shm = shared_memory.SharedMemory(name=descriptor.name, create=False)
        except FileNotFoundError as exc:
            raise TransportError(f"shared memory {descriptor.name!r} is gone (did its owner exit?)") from exc
        return cls(descriptor, shm, owner=False)

    @property
    def slots(self) -> int:
        return self.descriptor.slots

    @property
    def name(self) -> str:
        return self.descriptor.name

    def array(self, key: str, slot: int) -> np.ndarray:
        """The array ``key`` of slot ``slot`` (a view into shared memory, no copy)."""
        return self._views[key][slot]

    def unlink(self) -> None:
        """Owner only: remove the segment's name now; the mapped memory lives on until every process
        has unmapped it. Later :meth:`attach` calls fail. Idempotent."""
        if not self._owner:
            raise TransportError("only the process that created shared memory may unlink it")
        if self._unlinked or self._shm is None:
            return
        self._unlinked = True
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Drop this process's mapping; the owner also removes the segment (if not unlinked yet)."""
        if self._shm is None:
            return
        if self._owner:
            self.unlink()
        self._views.clear()
        shm, self._shm = self._shm, None
        try:
            shm.close()
        except BufferError:  # a caller still holds a view; the mapping goes with the process
            pass

    def __enter__(self) -> SharedSlots:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_OURS = re.compile(r"perception_(\d+)_[0-9a-f]{12}")


def remove_orphans(folder: str = "/dev/shm") -> list[str]:
    """Remove the segments of pipelines that died before unlinking them; returns their names.

    A segment's name carries the pid of the supervisor that made it (``perception_<pid>_<hex>``). Only
    names of exactly that form whose process no longer exists are removed: nothing another program
    made, and nothing of a pipeline still running. (Once every stage has attached, a running pipeline
    unlinks its names at once, so only a kill during start-up can leave one.)
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _OURS.fullmatch(name)
        if m is None or running(int(m.group(1))):
            continue
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(name)
        except OSError:
            continue
    return removed
