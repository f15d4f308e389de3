"""Seeded fuzzing of the wire decoder: thousands of mutated real messages and random bytes; each one
decodes or raises ``TransportError``, and memory stays bounded (``tools/fuzz_wire.py`` runs 10^5)."""

from __future__ import annotations

import collections
import importlib.util
import tracemalloc

import pytest

from tests.runtime.helpers import REPO

CASES = 10_000
PEAK_LIMIT = 48 << 20
"""Traced memory one case may add. The compression bombs and JPEGs declare up to 400 MB and 1.2 GB;
the largest legitimate allocation here is a 96x64 map. 48 MiB leaves room for msgpack's object
overhead on a mutated header without letting any announced size through."""


@pytest.fixture(scope="module")
def fuzz_wire():
    spec = importlib.util.spec_from_file_location("fuzz_wire", REPO / "tools" / "fuzz_wire.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_mutated_message_decodes_or_raises_transport_error(fuzz_wire):
    fuzzer = fuzz_wire.Fuzzer(seed=20)
    outcomes: collections.Counter = collections.Counter()
    mutations: collections.Counter = collections.Counter()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        worst = (0, -1)
        for n in range(CASES):
            tracemalloc.reset_peak()
            names, outcome, exc = fuzzer.run(n)
            if exc is not None:
                kind, names, frames = fuzzer.case(n)
                pytest.fail(f"case {n} [{names}] ({kind}, {[len(f) for f in frames]} bytes) raised {exc!r}; "
                            f"reproduce: python tools/fuzz_wire.py --seed 20 --start {n} --count 1")
            outcomes[outcome] += 1
            mutations.update(names.split("+"))
            worst = max(worst, (tracemalloc.get_traced_memory()[1] - base, n))
    finally:
        tracemalloc.stop()
    assert worst[0] < PEAK_LIMIT, f"case {worst[1]} allocated {worst[0] / 2**20:.1f} MiB"
    assert set(outcomes) <= {"ok", "TransportError"}
    assert outcomes["TransportError"] > CASES // 2 and outcomes["ok"] > 0  # both paths exercised
    assert set(mutations) == set(fuzz_wire.MUTATIONS)  # every kind of mutation was tried
    assert min(mutations.values()) > 50
