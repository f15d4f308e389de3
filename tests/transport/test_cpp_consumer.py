"""The C++ consumer of ``docs/wire-format.md``, built with g++ and run against a real pipeline.

The program in the document (kept identical to ``docs/examples/consumer.cpp``) is compiled with libzmq,
msgpack-c, zstd and lz4; the test skips when the compiler or those libraries are missing (Debian:
``apt-get install g++ libzmq3-dev libmsgpack-dev libzstd-dev liblz4-dev``). It then reads a pipeline
run (the bundled model on a generated scene) next to the Python subscriber, and both must see the same
messages, the same tracks, and every matched track's ``idx`` must find a mask of its ``area`` pixels.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from perception.transport.subscriber import Subscriber
from tests.runtime.helpers import REPO, free_port, kill_tree

SOURCE = REPO / "docs" / "examples" / "consumer.cpp"
DOC = REPO / "docs" / "wire-format.md"
FRAMES = 24


def _cpp_block(doc: str) -> str:
    """The C++ program of the document: the ```cpp block that follows the marker comment."""
    m = re.search(r"<!-- docs/examples/consumer\.cpp -->\s*```cpp\n(.*?)```", doc, re.S)
    assert m, "docs/wire-format.md has no complete C++ example (marker <!-- docs/examples/consumer.cpp -->)"
    return m.group(1)


def test_document_shows_the_example_program_verbatim():
    assert _cpp_block(DOC.read_text()) == SOURCE.read_text()


def _msgpack_libs() -> list[str]:
    for name in ("msgpack-c", "msgpack"):  # msgpack-c >= 6 renamed its library and .pc file
        if shutil.which("pkg-config"):
            got = subprocess.run(["pkg-config", "--libs", name], capture_output=True, text=True)
            if got.returncode == 0 and got.stdout.strip():
                return got.stdout.split()
    return ["-lmsgpackc"]


@pytest.fixture(scope="module")
def consumer(tmp_path_factory) -> Path:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    exe = tmp_path_factory.mktemp("cpp") / "consumer"
    cmd = ["g++", "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", str(SOURCE), "-o", str(exe),
           "-lzmq", *_msgpack_libs(), "-lzstd", "-llz4"]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if built.returncode != 0:
        missing = re.search(r"fatal error: (\S+): No such file|cannot find -l(\S+)", built.stderr)
        if missing:
            pytest.skip(f"C++ libraries missing ({missing.group(0)}): apt-get install libzmq3-dev "
                        "libmsgpack-dev libzstd-dev liblz4-dev")
        pytest.fail(f"the document's C++ example does not compile:\n{built.stderr}")
    return exe


_LABELS = re.compile(r"^labels seq=(\d+) session=(\d+) cam=(\S*) fseq=(\d+) size=(\d+)x(\d+) enc=(\w+) "
                     r"instances=(\w+) ninst=(\d+) tracks=(\d+) preview=(\S+)")
_TRACK = re.compile(r"^  track id=(\d+) idx=(\d+) cls=(\d+) state=(\d+) box=\[.*\] area=(\d+) mask_pixels=(\d+) (\w+)$")


def _parse(out: str) -> dict[int, dict]:
    msgs: dict[int, dict] = {}
    current = None
    for line in out.splitlines():
        if m := _LABELS.match(line):
            current = msgs[int(m.group(1))] = {
                "session": int(m.group(2)), "cam": m.group(3), "fseq": int(m.group(4)),
                "size": (int(m.group(5)), int(m.group(6))), "enc": m.group(7), "ninst": int(m.group(9)),
                "n_tracks": int(m.group(10)), "preview": m.group(11), "tracks": []}
        elif m := _TRACK.match(line):
            current["tracks"].append((int(m.group(1)), int(m.group(2)), int(m.group(5)), int(m.group(6)), m.group(7)))
    return msgs


@pytest.mark.slow
@pytest.mark.parametrize("encoding, preview", [("raw", "none"), ("zstd", "jpeg"), ("lz4", "jpeg")])
def test_cpp_consumer_reads_a_real_pipeline(consumer, encoding, preview):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    cpp = subprocess.Popen([str(consumer), address, "perception", "0", "120"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    pipeline = None
    try:
        with Subscriber(address=address, rcvhwm=1000) as sub:
            pipeline = subprocess.Popen(
                [sys.executable, "-m", "perception.cli", "run", "--source", f"synthetic:num_frames={FRAMES},seed=0",
                 "--publish", address, "--speed", "0", "--set", f"publish.encoding={encoding}",
                 "--set", f"publish.preview={preview}", "--set", "publish.hwm=1000",
                 "--set", "publish.wait_for_subscribers=2", "--set", "runtime.progress=false",
                 "--set", "tracking.high_score=0.1"],  # the bundled model scores generated scenes low (v2: 9 matched)
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            py = {}
            while (msg := sub.recv(timeout_s=120)) is not None:
                py[msg.seq] = msg
                assert msg.n_instances >= int(msg.instances.max())
            _, err = pipeline.communicate(timeout=60)
            assert pipeline.returncode == 0, err
        out, cerr = cpp.communicate(timeout=60)
    finally:
        kill_tree(cpp)
        if pipeline is not None:
            kill_tree(pipeline)
    assert cpp.returncode == 0, f"consumer exited {cpp.returncode}:\n{out}\n{cerr}"
    assert "malformed" not in out and "MISMATCH" not in out, out
    assert re.search(r"^classes cv=\w+ n=11 0:Sky ", out, re.M), out
    end = re.search(r"^end reason=end last_seq=(\d+) received=(\d+) gaps=0 lost_at_tail=0 ignored=0$", out, re.M)
    assert end and int(end.group(2)) == FRAMES, out
    cmsgs = _parse(out)
    assert sorted(cmsgs) == sorted(py) == list(range(FRAMES))
    matched = 0
    for seq, m in py.items():
        c = cmsgs[seq]
        assert (c["session"], c["cam"], c["fseq"], c["size"], c["enc"], c["ninst"]) == (
            m.session, m.camera_id, m.frame_seq, (m.width, m.height), encoding, m.n_instances)
        assert c["preview"] == ("none" if m.preview is None else f"{m.preview.shape[1]}x{m.preview.shape[0]}")
        assert c["n_tracks"] == len(c["tracks"]) == len(m.tracks)
        for (tid, idx, area, pixels, verdict), t in zip(c["tracks"], m.tracks):
            assert (tid, idx, area) == (t.track_id, t.instance_index, t.area)
            assert verdict == ("ok" if idx else "coasting") and (pixels == area or not idx)
            matched += bool(idx)
    assert matched >= 5, "too few matched tracks to check the instance map against"
