"""``docs/wire-format.md`` is the contract: its version, its key tables and its example agree with
what the encoder sends and the decoder accepts."""

from __future__ import annotations

import json
import re

import cv2
import msgpack
import numpy as np

from perception.transport.wire import SCHEMA_MAJOR, SCHEMA_MINOR, MessageDecoder, MessageEncoder
from perception.types import Analytics, FrameResult, Instance, Track, TrackState
from tests.runtime.helpers import REPO
from tests.transport.helpers import CLASSES, make_labels, make_meta

DOC = (REPO / "docs" / "wire-format.md").read_text()


def _section(title: str) -> str:
    m = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ )", DOC, re.M | re.S)
    assert m, f"docs/wire-format.md has no section {title!r}"
    return m.group(1)


def _table_keys(title: str) -> set[str]:
    """The keys in the first column of the section's table (`` `key` `` or `` `a`, `b` ``)."""
    keys = set()
    for row in re.findall(r"^\| (`[^|]*`) +\|", _section(title), re.M):
        keys |= set(re.findall(r"`([^`]+)`", row))
    return keys


def _real_message() -> list:
    w, h = 64, 48
    labels = make_labels(0, w, h)
    imap = np.zeros((h, w), np.uint16)
    imap[labels == 2] = 1
    inst = Instance(index=1, class_id=2, score=0.9, box=(0, 0, 1, 1), area=int((imap == 1).sum()), centroid=(1, 1))
    track = Track(track_id=12, instance_index=1, class_id=2, score=0.9, box=(0, 0, 1, 1), velocity=(0, 0), age=2,
                  hits=2, state=TrackState.CONFIRMED)
    enc = MessageEncoder(encoding="zstd", preview="jpeg")
    return enc.encode_labels(FrameResult(meta=make_meta(0, w, h), labels=labels, instance_map=imap, instances=(inst,),
                                         tracks=(track,), frame=np.zeros((h, w, 3), np.uint8),
                                         analytics=Analytics()), seq=0)  # counts: only when counting


def test_document_states_the_current_version():
    assert f"# Wire format (schema version {SCHEMA_MAJOR}.{SCHEMA_MINOR})" in DOC
    assert f"This document describes **{SCHEMA_MAJOR}.{SCHEMA_MINOR}**" in DOC


def test_documented_keys_are_the_keys_sent():
    header = msgpack.unpackb(_real_message()[0])
    assert _table_keys("Header keys") == set(header)
    assert _table_keys("Part map (`parts[i]`, describes data frame `i + 2`)") == set(header["parts"][0])
    assert _table_keys("Track map (`tracks[j]`)") == set(header["tracks"][0])
    classes = msgpack.unpackb(MessageEncoder().encode_classes(CLASSES, t_publish_wall_ns=0))
    assert _table_keys("Class-table message") == set(classes)
    end = msgpack.unpackb(MessageEncoder().encode_end(last_seq=0, published=1, dropped=0, reason="end",
                                                      t_publish_wall_ns=0))
    assert _table_keys("End-of-stream message (since 1.1)") == set(end)


def _example() -> dict:
    m = re.search(r"```json\n(.*?)```", _section("Example header (msgpack shown as JSON)"), re.S)
    assert m, "the document has no example header"
    return json.loads(m.group(1))


def test_document_example_is_a_current_message_that_decodes():
    """Re-attach data frames of the shapes and encodings the example header announces: it decodes, and
    each of its tracks finds a mask of its area under its idx."""
    header = _example()
    assert (header["v"], header["vmin"]) == (SCHEMA_MAJOR, SCHEMA_MINOR)
    assert any(t["idx"] and t["idx"] != t["id"] for t in header["tracks"])  # it shows idx is not the id
    enc = {e: MessageEncoder(encoding=e) for e in ("raw", "zstd", "lz4")}
    h, w = header["h"], header["w"]
    imap = np.zeros((h, w), np.uint16)
    flat, start = imap.reshape(-1), 0
    for t in header["tracks"]:
        if t["idx"]:  # each matched track's mask: `area` pixels of value idx
            flat[start:start + t["area"]] = t["idx"]
            start += t["area"]
    frames = []
    for part in header["parts"]:
        if part["name"] == "preview":
            data = cv2.imencode(".jpg", np.zeros(part["shape"], np.uint8))[1].tobytes()
        else:
            arr = np.zeros((h, w), np.uint8) if part["name"] == "labels" else imap
            data = bytes(memoryview(enc[part["enc"]]._compress(np.ascontiguousarray(arr))).cast("B"))
        part["size"] = len(data)
        frames.append(data)
    msg = MessageDecoder().decode_labels([msgpack.packb(header), *frames])
    assert msg.n_instances == header["ninst"] and msg.instances.shape == (h, w)
    for t in msg.tracks:
        assert 0 <= t.instance_index <= msg.n_instances
        if t.instance_index:
            assert int((msg.instances == t.instance_index).sum()) == t.area
