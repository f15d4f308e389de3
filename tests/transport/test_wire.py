"""The wire format alone (no sockets): encode -> decode round trips, evolution rules, malformed input."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest

from perception.errors import TransportError
from perception.transport.wire import (
    SCHEMA_MAJOR,
    DecodeLimits,
    MessageDecoder,
    MessageEncoder,
    TrackRecord,
    classes_version,
    jpeg_size,
)
from perception.types import FrameResult, Instance, Track, TrackState
from tests.transport.helpers import CLASSES, make_instances, make_labels, make_meta, make_tracks

W, H = 64, 48


def _encode(enc: MessageEncoder, i: int = 0, **kw):
    labels = make_labels(i, W, H)
    return labels, enc.encode_labels(FrameResult(
        meta=make_meta(i, W, H), labels=labels, **kw), seq=i, t_publish_wall_ns=123)


@pytest.mark.parametrize("encoding", ["raw", "zstd", "lz4"])
def test_round_trip_every_encoding(encoding):
    enc = MessageEncoder(encoding=encoding)
    dec = MessageDecoder()
    for i in range(3):  # contexts are reused across messages
        labels = make_labels(i, W, H)
        inst = make_instances(labels)
        meta = make_meta(i, W, H)
        frames = enc.encode_labels(FrameResult(
            meta=meta, labels=labels, instance_map=inst, latencies_ms={"infer": 12.5, "post": 3},
            tracks=make_tracks()), seq=i, classes_version=classes_version(CLASSES), t_publish_wall_ns=99)
        msg = dec.decode_labels(frames, t_receive_wall_ns=1000)
        assert np.array_equal(msg.labels, labels) and msg.labels.dtype == np.uint8
        assert np.array_equal(msg.instances, inst) and msg.instances.dtype == np.uint16
        assert msg.encoding == encoding
        assert msg.frame_meta() == meta
        assert (msg.seq, msg.t_publish_wall_ns, msg.t_receive_wall_ns) == (i, 99, 1000)
        assert msg.latencies_ms == {"infer": 12.5, "post": 3.0}
        assert msg.classes_version == classes_version(CLASSES)
        assert msg.preview is None
        assert msg.schema_version[0] == SCHEMA_MAJOR
        assert not msg.labels.flags.writeable


def test_compression_shrinks_label_maps():
    labels = make_labels(0, 640, 480)
    raw = MessageEncoder(encoding="raw").encode_labels(FrameResult(
        meta=make_meta(0, 640, 480), labels=labels), seq=0, t_publish_wall_ns=0)
    for encoding in ("zstd", "lz4"):
        frames = MessageEncoder(encoding=encoding).encode_labels(FrameResult(
            meta=make_meta(0, 640, 480), labels=labels), seq=0, t_publish_wall_ns=0)
        assert len(frames[1]) * 10 < raw[1].nbytes


def test_raw_labels_are_not_copied():
    labels = make_labels(0, W, H)
    frames = MessageEncoder().encode_labels(FrameResult(
        meta=make_meta(0, W, H), labels=labels), seq=0, t_publish_wall_ns=0)
    assert frames[1] is labels
    msg = MessageDecoder().decode_labels(frames)
    assert np.shares_memory(msg.labels, labels)  # decoder wraps the buffer it was given


def test_tracks_round_trip_with_area_and_centroid():
    tracks = make_tracks()
    det = Instance(index=1, class_id=2, score=0.9, box=(1, 2, 17, 30), area=321, centroid=(8.5, 15.5))
    _, frames = _encode(MessageEncoder(), tracks=tracks, instances=[det])
    got = MessageDecoder().decode_labels(frames).tracks
    assert [t.track_id for t in got] == [7, 9]
    a, b = got
    assert (a.instance_index, a.class_id, a.area, a.centroid) == (1, 2, 321, (8.5, 15.5))  # from the detection
    assert a.box == (1.0, 2.0, 17.0, 30.0) and a.velocity == (3.5, -1.0)
    assert (a.age, a.hits, a.state, a.score) == (5, 4, TrackState.CONFIRMED, pytest.approx(0.9))
    assert (b.instance_index, b.area, b.centroid, b.state) == (0, 0, (59.5, 20.0), TrackState.LOST)


def test_instance_map_carries_per_message_indices_that_tracks_point_to():
    """Map pixels are Instance.index values 1..ninst; tracks[j].idx names its mask, whatever its id."""
    labels = make_labels(0, W, H)
    imap = np.zeros((H, W), np.uint16)
    imap[labels == 2] = 1
    imap[labels == 3] = 2
    dets = tuple(Instance(index=k, class_id=c, score=0.9, box=(0, 0, 1, 1), area=int((imap == k).sum()),
                          centroid=(0.0, 0.0)) for k, c in ((1, 2), (2, 3)))
    tracks = (Track(track_id=70000, instance_index=2, class_id=3, score=0.8, box=(1, 2, 3, 4), velocity=(0, 0),
                    age=900, hits=800, state=TrackState.CONFIRMED),  # an id above uint16: nothing overflows
              Track(track_id=5, instance_index=0, class_id=2, score=0.3, box=(10, 20, 30, 40), velocity=(0, 0),
                    age=3, hits=1, state=TrackState.LOST))
    frames = MessageEncoder(encoding="zstd").encode_labels(FrameResult(
        meta=make_meta(0, W, H), labels=labels, instance_map=imap, instances=dets, tracks=tracks),
        seq=0, t_publish_wall_ns=1)
    msg = MessageDecoder().decode_labels(frames)
    assert msg.n_instances == 2 and msg.header["ninst"] == 2
    long_lived, coasting = msg.tracks
    assert (long_lived.track_id, long_lived.instance_index) == (70000, 2)
    assert long_lived.area == int((msg.instances == long_lived.instance_index).sum()) == dets[1].area
    assert (coasting.instance_index, coasting.area, coasting.centroid) == (0, 0, (20.0, 30.0))  # box centre


def test_decoded_track_is_a_track():
    """TrackRecord extends types.Track (issue 27): the same fields, plus the mask's area and centroid."""
    _, frames = _encode(MessageEncoder(), tracks=make_tracks(), instance_map=make_instances(make_labels(0, W, H)))
    t = MessageDecoder().decode_labels(frames).tracks[0]
    assert isinstance(t, Track) and isinstance(t, TrackRecord)
    assert {f.name for f in dataclasses.fields(Track)} < {f.name for f in dataclasses.fields(TrackRecord)}
    again = MessageEncoder().encode_labels(FrameResult(  # re-published as decoded: the same track map
        meta=make_meta(0, W, H), labels=make_labels(0, W, H), instance_map=make_instances(make_labels(0, W, H)),
        tracks=(t,)), seq=1, t_publish_wall_ns=1)
    assert msgpack.unpackb(again[0])["tracks"][0] == msgpack.unpackb(frames[0])["tracks"][0]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"tracks": make_tracks()[:1]}, "points at instance 1, which this frame does not have"),  # no map at all
        ({"instance_map": np.full((H, W), 7, np.uint16),
          "instances": (Instance(index=1, class_id=2, score=1, box=(0, 0, 1, 1), area=1, centroid=(0, 0)),)},
         "holds index 7 but the frame's instances stop at 1"),  # a map relabelled to track ids
        ({"instances": (Instance(index=1, class_id=2, score=1, box=(0, 0, 1, 1), area=1, centroid=(0, 0)),) * 2},
         "distinct"),
        ({"instances": (Instance(index=2, class_id=2, score=1, box=(0, 0, 1, 1), area=1, centroid=(0, 0)),),
          "tracks": make_tracks()[:1]}, "points at instance 1"),  # within 1..n but no such instance
        ({"tracks": (dataclasses.replace(make_tracks()[1], box=(0.0, float("nan"), 1.0, 1.0)),)}, "non-finite box"),
    ],
)
def test_encoder_refuses_maps_instances_and_tracks_that_disagree(change, match):
    with pytest.raises(TransportError, match=match):
        MessageEncoder().encode_labels(FrameResult(meta=make_meta(0, W, H), labels=make_labels(0, W, H), **change),
                                       seq=0, t_publish_wall_ns=0)


def test_preview_is_jpeg_downscaled():
    enc = MessageEncoder(preview="jpeg", preview_max_width=32, preview_quality=95)
    image = np.zeros((H, W, 3), np.uint8)
    image[:, :, 2] = 200  # red
    _, frames = _encode(enc, frame=image)
    assert len(frames) == 3
    msg = MessageDecoder().decode_labels(frames)
    assert msg.preview.shape == (24, 32, 3)
    assert np.abs(msg.preview.astype(int) - [0, 0, 200]).max() <= 8


def test_preview_none_ignores_image():
    _, frames = _encode(MessageEncoder(preview="none"), frame=np.zeros((H, W, 3), np.uint8))
    assert len(frames) == 2


def _repack(frames, **changes):
    header = msgpack.unpackb(frames[0])
    for k, v in changes.items():
        if v is None:
            header.pop(k)
        else:
            header[k] = v
    return [msgpack.packb(header), *frames[1:]]


def test_unknown_keys_and_parts_are_ignored():
    labels, frames = _encode(MessageEncoder())
    header = msgpack.unpackb(frames[0])
    header["future_field"] = {"x": [1, 2]}
    header["vmin"] = 7
    header["parts"].append({"name": "depth", "dtype": "float32", "shape": [H, W], "enc": "raw", "size": 4})
    msg = MessageDecoder().decode_labels([msgpack.packb(header), frames[1], b"abcd"])
    assert np.array_equal(msg.labels, labels)
    assert msg.schema_version == (SCHEMA_MAJOR, 7)
    assert msg.header["future_field"] == {"x": [1, 2]}


def test_missing_optional_keys_get_defaults():
    labels, frames = _encode(MessageEncoder())
    minimal = _repack(frames, cam=None, fseq=None, fidx=None, t_cap_mono=None, t_cap_wall=None, t_pub_wall=None,
                      pts=None, lat=None, cv=None, tracks=None, sid=None, vmin=None, kind=None)
    msg = MessageDecoder().decode_labels(minimal)
    assert np.array_equal(msg.labels, labels)
    assert (msg.camera_id, msg.frame_seq, msg.t_capture_wall_ns, msg.latencies_ms, msg.tracks) == ("", 0, 0, {}, ())


def test_newer_major_version_is_rejected_clearly():
    _, frames = _encode(MessageEncoder())
    with pytest.raises(TransportError, match="major version 2"):
        MessageDecoder().decode_labels(_repack(frames, v=SCHEMA_MAJOR + 1))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda f: [b"\xc1garbage", *f[1:]], "not valid msgpack"),
        (lambda f: [msgpack.packb([1, 2]), *f[1:]], "must be a msgpack map"),
        (lambda f: _repack(f, v=None), "schema version"),
        (lambda f: _repack(f, seq=None), "'seq'"),
        (lambda f: _repack(f, w="wide"), "'w' should be int"),
        (lambda f: f[:1], "header and a label frame"),
        (lambda f: [*f, b"extra"], "1 part\\(s\\) but 2 data frame"),
        (lambda f: [f[0], f[1][:-1]], "announces"),
        (lambda f: _repack(f, h=H + 1), "h=49"),
        (lambda f: _repack(f, parts=[{"name": "labels", "dtype": "uint8", "shape": [H, W], "enc": "brotli"}]),
         "unknown encoding 'brotli'"),
        (lambda f: _repack(f, parts=[{"name": "labels", "dtype": "uint16", "shape": [H, W], "enc": "raw"}]),
         "must be uint8"),
        (lambda f: _repack(f, parts=[{"name": "labels", "dtype": "u1,(", "shape": [H, W], "enc": "raw"}]),
         "unknown dtype 'u1,\\('"),
        (lambda f: _repack(f, parts=[{"name": "future", "dtype": "uint8", "shape": [H, W], "enc": "raw"}]),
         "no 'labels' part"),
        (lambda f: _repack(f, tracks=[{"id": 1, "cls": 2, "box": [1, 2, 3]}]), "track box"),
    ],
)
def test_malformed_messages_raise_transport_error(mutate, match):
    _, frames = _encode(MessageEncoder())
    frames = [bytes(memoryview(f).cast("B")) for f in frames]
    with pytest.raises(TransportError, match=match):
        MessageDecoder().decode_labels(mutate(frames))


@pytest.mark.parametrize("encoding", ["zstd", "lz4"])
def test_corrupt_compressed_part_raises(encoding):
    _, frames = _encode(MessageEncoder(encoding=encoding))
    body = bytearray(frames[1])
    body[len(body) // 2:] = b"\x00" * (len(body) - len(body) // 2)
    with pytest.raises(TransportError, match="malformed message"):
        MessageDecoder().decode_labels([frames[0], bytes(body)])


def test_bad_inputs_to_encoder_are_refused():
    enc = MessageEncoder()
    with pytest.raises(TransportError, match="uint8"):
        enc.encode_labels(FrameResult(
            meta=make_meta(0, W, H), labels=np.zeros((H, W), np.int32)), seq=0, t_publish_wall_ns=0)
    with pytest.raises(TransportError, match="frame meta says"):
        enc.encode_labels(FrameResult(
            meta=make_meta(0, W + 1, H), labels=make_labels(0, W, H)), seq=0, t_publish_wall_ns=0)
    with pytest.raises(TransportError, match="instances must be uint16"):
        enc.encode_labels(FrameResult(
            meta=make_meta(0, W, H), labels=make_labels(0, W, H),
            instance_map=np.zeros((H, W), np.int32)), seq=0, t_publish_wall_ns=0)
    with pytest.raises(TransportError, match="unknown encoding"):
        MessageEncoder(encoding="gzip")


def test_classes_message_round_trip_and_version():
    enc = MessageEncoder(session=42)
    table = MessageDecoder().decode_classes([enc.encode_classes(CLASSES, t_publish_wall_ns=5)])
    assert table.classes == CLASSES
    assert table.version == classes_version(CLASSES)
    assert (table.session, table.t_publish_wall_ns) == (42, 5)
    changed = (*CLASSES[:-1], CLASSES[-1].__class__(id=3, name="person", color=(1, 2, 3), is_thing=True))
    assert classes_version(changed) != classes_version(CLASSES)


def test_non_contiguous_labels_are_encoded_correctly():
    big = make_labels(0, W * 2, H)
    view = big[:, ::2]
    frames = MessageEncoder(encoding="raw").encode_labels(FrameResult(
        meta=make_meta(0, W, H), labels=view), seq=0, t_publish_wall_ns=0)
    assert np.array_equal(MessageDecoder().decode_labels(frames).labels, view)


@pytest.mark.parametrize("encoding", ["zstd", "lz4"])
def test_compressed_part_of_the_wrong_size_is_refused_before_decompressing(encoding):
    _, frames = _encode(MessageEncoder(encoding=encoding))
    small = MessageEncoder(encoding=encoding).encode_labels(FrameResult(
        meta=make_meta(0, W // 2, H), labels=make_labels(0, W // 2, H)), seq=0, t_publish_wall_ns=0)
    header = msgpack.unpackb(frames[0])
    header["parts"][0]["size"] = len(small[1])
    with pytest.raises(TransportError, match="header implies"):
        MessageDecoder().decode_labels([msgpack.packb(header), small[1]])


# --- limits: checked before anything is allocated --------------------------------------------------


def _zstd_bomb(nbytes: int) -> bytes:
    """A few kB of zstd that declare and hold ``nbytes`` zeros (streamed: never held in memory)."""
    import zstandard

    cobj = zstandard.ZstdCompressor(level=1, write_content_size=True).compressobj(size=nbytes)
    chunk = bytes(1 << 22)
    body = [cobj.compress(chunk) for _ in range(nbytes // len(chunk))]
    return b"".join([*body, cobj.compress(bytes(nbytes % len(chunk))), cobj.flush()])


def test_compression_bomb_is_refused_before_decompressing():
    import tracemalloc

    side = 20000
    bomb = _zstd_bomb(side * side)  # 400 MB of labels in ~13 kB
    _, frames = _encode(MessageEncoder(encoding="zstd"))
    tracemalloc.start()
    try:
        with pytest.raises(TransportError, match="over the limit"):
            MessageDecoder().decode_labels(_repack([frames[0], bomb], w=side, h=side, parts=[
                {"name": "labels", "dtype": "uint8", "shape": [side, side], "enc": "zstd", "size": len(bomb)}]))
        with pytest.raises(TransportError, match="header implies"):  # a small map that announces a large frame
            MessageDecoder().decode_labels(_repack([frames[0], bomb], parts=[
                {"name": "labels", "dtype": "uint8", "shape": [H, W], "enc": "zstd", "size": len(bomb)}]))
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()


def test_limits_are_configurable():
    _, frames = _encode(MessageEncoder(encoding="lz4"))
    MessageDecoder(limits=DecodeLimits(max_pixels=W * H)).decode_labels(frames)
    with pytest.raises(TransportError, match="over the limit of 3071 pixels"):
        MessageDecoder(limits=DecodeLimits(max_pixels=W * H - 1)).decode_labels(frames)
    with pytest.raises(TransportError, match=r"header frame is .* bytes \(limit 64\)"):
        MessageDecoder(limits=DecodeLimits(max_header_bytes=64)).decode_labels(frames)
    with pytest.raises(TransportError, match="max_pixels must be a positive integer"):
        DecodeLimits(max_pixels=0)


@pytest.mark.parametrize("shape", [[2**62, 2**62], [2**63 - 1, 2], [-1, W], [H, W, 1], [True, W], [40000, 40000]])
def test_shapes_that_overflow_or_disagree_are_refused(shape):
    _, frames = _encode(MessageEncoder())
    with pytest.raises(TransportError, match="malformed message"):
        MessageDecoder().decode_labels(_repack(frames, parts=[
            {"name": "labels", "dtype": "uint8", "shape": shape, "enc": "raw", "size": len(frames[1])}]))
    with pytest.raises(TransportError, match="malformed message"):  # the same in w and h
        MessageDecoder().decode_labels(_repack(frames, w=shape[-1], h=shape[0]))


def _preview_frames(jpg: bytes, shape):
    enc = MessageEncoder(preview="jpeg", preview_max_width=32)
    _, frames = _encode(enc, frame=np.full((H, W, 3), 90, np.uint8))
    header = msgpack.unpackb(frames[0])
    header["parts"][1].update(shape=shape, size=len(jpg))
    return [msgpack.packb(header), frames[1], jpg]


def test_jpeg_dimensions_are_read_before_decoding():
    import cv2

    small = cv2.imencode(".jpg", np.full((24, 32, 3), 90, np.uint8))[1].tobytes()
    assert jpeg_size(memoryview(small)) == (24, 32, 3)
    sof = small.index(b"\xff\xc0")
    huge = bytearray(small)
    huge[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2  # a 700-byte JPEG that declares 20000 x 20000
    with pytest.raises(TransportError, match="is 20000x20000 with 3 component\\(s\\), the header says 32x24x3"):
        MessageDecoder().decode_labels(_preview_frames(bytes(huge), [24, 32, 3]))
    with pytest.raises(TransportError, match="over the limit"):
        MessageDecoder().decode_labels(_preview_frames(bytes(huge), [20000, 20000, 3]))
    progressive = cv2.imencode(".jpg", np.full((24, 32, 3), 90, np.uint8), [int(cv2.IMWRITE_JPEG_PROGRESSIVE), 1])[1]
    with pytest.raises(TransportError, match="not baseline"):
        MessageDecoder().decode_labels(_preview_frames(progressive.tobytes(), [24, 32, 3]))
    png = cv2.imencode(".png", np.full((24, 32, 3), 90, np.uint8))[1].tobytes()
    with pytest.raises(TransportError, match="not a JPEG"):
        MessageDecoder().decode_labels(_preview_frames(png, [24, 32, 3]))
    with pytest.raises(TransportError, match="malformed message: preview"):
        MessageDecoder().decode_labels(_preview_frames(small[: len(small) // 3], [24, 32, 3]))
    assert MessageDecoder().decode_labels(_preview_frames(small, [24, 32, 3])).preview.shape == (24, 32, 3)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"ninst": 1, "tracks": [{"id": 1, "idx": 2, "cls": 2, "box": [0, 0, 1, 1]}]}, "'idx' must be within 0..1"),
        ({"ninst": 70000}, "'ninst' must be within 0..65535"),
        ({"tracks": [{"id": 1, "cls": 256, "box": [0, 0, 1, 1]}]}, "'cls' must be within 0..255"),
        ({"tracks": [{"id": 1, "cls": 2, "box": [0, 0, 1, float("nan")]}]}, "track box must be finite"),
        ({"tracks": [{"id": 1, "cls": 2, "box": ["1", 0, 1, 1]}]}, "track box should be a number"),
        ({"tracks": [{"id": 1, "cls": 2, "box": [0, 0, 1, 1], "state": 9}]}, "unknown track state 9"),
        ({"lat": {"infer": "12"}}, "a 'lat' value should be a number"),
        ({"v": True}, "integer schema version"),
        ({"seq": False}, "'seq' should be int"),
    ],
)
def test_malformed_header_values_raise_transport_error(change, match):
    _, frames = _encode(MessageEncoder())
    with pytest.raises(TransportError, match=match):
        MessageDecoder().decode_labels(_repack(frames, **change))


def test_malformed_class_tables_raise_transport_error():
    enc = MessageEncoder()
    header = msgpack.unpackb(enc.encode_classes(CLASSES, t_publish_wall_ns=0))
    header["classes"][0]["id"] = 300
    with pytest.raises(TransportError, match=r"'id' must be within 0\.\.255"):
        MessageDecoder().decode_classes([msgpack.packb(header)])
    with pytest.raises(TransportError, match="expected kind 'classes'"):
        MessageDecoder().decode_classes([enc.encode_end(last_seq=0, published=1, dropped=0, reason="end",
                                                        t_publish_wall_ns=0)])
