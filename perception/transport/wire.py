"""The wire format: how one processed frame becomes a multipart ZeroMQ message, and back.

Pure encoding/decoding with no sockets, so that it can be tested alone and so that the publisher and
the subscriber agree by construction. ``docs/wire-format.md`` is the normative description for other
languages; this module implements it.

A label message is ``[topic, header, labels, instances?, preview?]``:

* ``topic``  – UTF-8 bytes, e.g. ``b"perception"``;
* ``header`` – a msgpack map (keys below, :data:`LABEL_KEYS`);
* then one frame per entry of ``header["parts"]``, in that order. ``labels`` is always first.

A class-table message is ``[topic + "/classes", header]`` with ``kind == "classes"``.

Evolution (msgspec's rule): fields are only ever appended, with defaults. Decoders ignore unknown
keys and unknown part names and fill defaults for missing optional keys; ``v`` (the major version)
changes only for a change old decoders cannot survive, and such messages are refused clearly.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import numpy as np

from perception.errors import TransportError
from perception.types import Analytics, ClassInfo, FrameMeta, FrameResult, Instance, Track, TrackState

SCHEMA_MAJOR = 1
"""Bumped only for changes an old decoder cannot survive; decoders refuse a newer major."""
SCHEMA_MINOR = 2
"""Bumped when fields are appended (old decoders ignore them)."""

CLASSES_SUFFIX = "/classes"
"""Suffix of the topic that carries the class table."""
END_SUFFIX = "/end"
"""Suffix of the topic that carries the end-of-stream message (schema 1.1)."""

Encoding = Literal["raw", "zstd", "lz4"]
PreviewMode = Literal["none", "jpeg"]
ENCODINGS: tuple[str, ...] = ("raw", "zstd", "lz4")
PART_ENCODINGS: tuple[str, ...] = ("raw", "zstd", "lz4", "jpeg")

DEFAULT_ZSTD_LEVEL = 1
"""zstd level 1: label maps (large constant regions) already shrink ~30-100x; higher levels gain a
few per cent of size for several times the CPU, which a real-time publisher cannot spare."""
DEFAULT_LZ4_LEVEL = 0
"""lz4 level 0 (fast mode): the point of lz4 is speed; high-compression levels are slower than zstd."""

_PART_DTYPES = {"labels": np.dtype("<u1"), "instances": np.dtype("<u2"), "preview": np.dtype("<u1")}
_MAX_HEADER_BYTES = 16 * 1024 * 1024
"""Refuse headers bigger than this (a corrupt frame would otherwise make msgpack allocate wildly)."""


# --------------------------------------------------------------------------------------------------
# decoded values


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackRecord:
    """One tracked object as carried on the wire (``header["tracks"][i]``)."""

    track_id: int
    instance_index: int
    """Id of its mask in the instance map of this message; 0 when the track was not matched (coasting)."""
    class_id: int
    score: float
    box: tuple[float, float, float, float]
    """``(x0, y0, x1, y1)`` full-resolution pixels, ``x1``/``y1`` exclusive."""
    area: int
    """Pixels of its mask in this frame; 0 when unknown (coasting, or no instance data was given)."""
    centroid: tuple[float, float]
    """``(x, y)`` mean mask pixel; the box centre when the mask is unknown."""
    velocity: tuple[float, float]
    """``(vx, vy)`` full-resolution pixels per second."""
    age: int
    hits: int
    state: TrackState


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassTable:
    """A decoded class-table message."""

    version: str
    classes: tuple[ClassInfo, ...]
    session: int
    t_publish_wall_ns: int


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """A decoded end-of-stream message: the publisher's last word on a stream that ended."""

    session: int
    last_seq: int
    """``seq`` of the last label message the publisher tried to send (-1: none)."""
    published: int
    """Label messages the publisher sent (accepted by its socket)."""
    dropped: int
    """Label messages it dropped because a subscriber's queue was full."""
    reason: str
    """``"end"`` (the input ended) or ``"stopped"`` (Ctrl-C, SIGTERM, a failed stage)."""
    t_publish_wall_ns: int


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class LabelMessage:
    """One decoded label message. Arrays are read-only views over the received buffers when the part
    was ``raw`` (no copy), fresh arrays when it was decompressed or JPEG-decoded."""

    schema_version: tuple[int, int]
    """``(major, minor)`` of the sender."""
    session: int
    """Random id of the publisher instance; a new value means the publisher restarted."""
    seq: int
    """Per-publisher message counter (+1 per publish attempt, dropped ones included)."""
    camera_id: str
    frame_seq: int
    frame_index: int
    t_capture_mono_ns: int
    """Monotonic capture time on the *publisher's* host (only comparable there)."""
    t_capture_wall_ns: int
    """The same moment as ``t_capture_mono_ns`` on the wall clock."""
    t_publish_wall_ns: int
    t_receive_wall_ns: int
    """Wall-clock time this process received the message (set by the subscriber; 0 if unknown)."""
    pts_ns: int
    width: int
    height: int
    encoding: str
    """Encoding of the ``labels`` part on the wire."""
    latencies_ms: Mapping[str, float]
    classes_version: str
    labels: np.ndarray
    """``uint8[height, width]`` class ids."""
    instances: np.ndarray | None
    """``uint16[height, width]`` instance ids (0 = none), or None."""
    preview: np.ndarray | None
    """``uint8[h, w, 3]`` BGR preview image (downscaled), or None."""
    tracks: tuple[TrackRecord, ...]
    header: Mapping[str, Any] = field(repr=False, compare=False)
    """The raw decoded header, unknown keys included."""
    t_record_ns: int = 0
    """A recorded drive's own stamp of the frame (schema 1.2, ``t_rec``); 0 when the input has none."""

    @property
    def counts(self) -> Analytics | None:
        """Zone occupancy and cumulative line crossings (header ``counts``); None when the publisher counts
        nothing. Raises :class:`TransportError` when the key is malformed."""
        from perception.analytics.counting import counts_from_header

        return counts_from_header(self.header)

    @property
    def stamp_ns(self) -> int:
        """The frame's time for recordings: the drive's stamp when it has one, else the capture time."""
        return self.t_record_ns or self.t_capture_wall_ns

    def frame_meta(self) -> FrameMeta:
        """The capture metadata as a :class:`FrameMeta`."""
        return FrameMeta(
            seq=self.frame_seq,
            camera_id=self.camera_id,
            frame_index=self.frame_index,
            t_mono_ns=self.t_capture_mono_ns,
            t_wall_ns=self.t_capture_wall_ns,
            pts_ns=self.pts_ns,
            width=self.width,
            height=self.height,
            t_rec_ns=self.t_record_ns,
        )


# --------------------------------------------------------------------------------------------------
# helpers


def classes_version(classes: Sequence[ClassInfo]) -> str:
    """Identifier of a class table: first 16 hex digits of the SHA-256 of its canonical msgpack form.

    Opaque to decoders: they compare it with the ``version`` of the last class-table message.
    """
    return hashlib.sha256(msgpack.packb(_classes_to_wire(classes), use_bin_type=True)).hexdigest()[:16]


def _classes_to_wire(classes: Sequence[ClassInfo]) -> list[dict[str, Any]]:
    return [
        {"id": int(c.id), "name": str(c.name), "rgb": [int(v) for v in c.color], "thing": bool(c.is_thing)}
        for c in classes
    ]


def new_session_id() -> int:
    """A random non-zero 63-bit publisher session id."""
    return int.from_bytes(os.urandom(8), "little") >> 1 or 1


def _finite(x: float) -> float:
    x = float(x)
    return x if math.isfinite(x) else 0.0


def _track_to_wire(t: Track | TrackRecord, det: Instance | None) -> dict[str, Any]:
    x0, y0, x1, y1 = (float(v) for v in t.box)
    if isinstance(t, TrackRecord):
        area, centroid = t.area, t.centroid
    elif det is not None:
        area, centroid = det.area, det.centroid
    else:
        extra = t.extra or {}
        area = int(extra.get("area", 0))
        centroid = tuple(extra.get("centroid", ((x0 + x1) / 2.0, (y0 + y1) / 2.0)))
    return {
        "id": int(t.track_id),
        "idx": int(t.instance_index),
        "cls": int(t.class_id),
        "score": _finite(t.score),
        "box": [x0, y0, x1, y1],
        "area": int(area),
        "ctr": [float(centroid[0]), float(centroid[1])],
        "vel": [_finite(t.velocity[0]), _finite(t.velocity[1])],
        "age": int(t.age),
        "hits": int(t.hits),
        "state": int(t.state),
    }


def _counts_to_wire(analytics: Analytics | None) -> dict[str, Any]:
    """``{"counts": ...}`` (zone occupancy and line crossings: docs/wire-format.md), or ``{}`` when not counting."""
    if analytics is None:
        return {}
    from perception.analytics.counting import counts_to_header

    return {"counts": counts_to_header(analytics)}


# --------------------------------------------------------------------------------------------------
# encoding


class MessageEncoder:
    """Turns frames into wire frames. Holds the compression contexts (created once, reused).

    Not thread-safe: one encoder per publishing thread.
    """

    def __init__(
        self,
        *,
        encoding: Encoding = "raw",
        level: int | None = None,
        preview: PreviewMode = "none",
        preview_quality: int = 80,
        preview_max_width: int = 640,
        session: int | None = None,
    ) -> None:
        if encoding not in ENCODINGS:
            raise TransportError(f"unknown encoding {encoding!r}; allowed: {', '.join(ENCODINGS)}")
        if preview not in ("none", "jpeg"):
            raise TransportError(f"unknown preview mode {preview!r}; allowed: none, jpeg")
        if not 1 <= int(preview_quality) <= 100:
            raise TransportError(f"preview_quality must be 1..100, got {preview_quality}")
        if int(preview_max_width) < 16:
            raise TransportError(f"preview_max_width must be >= 16, got {preview_max_width}")
        self.encoding: Encoding = encoding
        self.preview: PreviewMode = preview
        self.preview_quality = int(preview_quality)
        self.preview_max_width = int(preview_max_width)
        self.session = int(session) if session is not None else new_session_id()
        self._zstd = None
        self._lz4 = None
        if encoding == "zstd":
            import zstandard

            self._zstd = zstandard.ZstdCompressor(
                level=DEFAULT_ZSTD_LEVEL if level is None else int(level), write_content_size=True
            )
        elif encoding == "lz4":
            import lz4.frame

            self._lz4 = lz4.frame.LZ4FrameCompressor(
                compression_level=DEFAULT_LZ4_LEVEL if level is None else int(level),
                content_checksum=False,
                auto_flush=True,
            )
        self._preview_buf: np.ndarray | None = None  # reused downscale target
        self._jpeg_params = None

    # --- parts ------------------------------------------------------------------------------
    def _compress(self, arr: np.ndarray) -> Any:
        """``arr`` (C-contiguous, little-endian) -> a buffer in this encoder's encoding."""
        if self.encoding == "raw":
            return arr  # sent as is: zero copy
        view = memoryview(arr).cast("B")
        if self._zstd is not None:
            return self._zstd.compress(view)
        lz = self._lz4
        return b"".join((lz.begin(source_size=arr.nbytes), lz.compress(view), lz.flush()))

    def _encode_preview(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        import cv2

        h, w = image.shape[:2]
        if w > self.preview_max_width:
            pw = self.preview_max_width
            ph = max(1, round(h * pw / w))
            if self._preview_buf is None or self._preview_buf.shape[:2] != (ph, pw):
                self._preview_buf = np.empty((ph, pw, 3), np.uint8)
            small = cv2.resize(image, (pw, ph), dst=self._preview_buf, interpolation=cv2.INTER_AREA)
        else:
            small = image
        if self._jpeg_params is None:
            self._jpeg_params = [int(cv2.IMWRITE_JPEG_QUALITY), self.preview_quality]
        ok, jpg = cv2.imencode(".jpg", small, self._jpeg_params)
        if not ok:
            raise TransportError(f"JPEG encoding of a {w}x{h} preview failed")
        return jpg.reshape(-1), small.shape

    # --- messages ---------------------------------------------------------------------------
    def encode_labels(
        self, result: FrameResult, *, seq: int, classes_version: str = "", t_publish_wall_ns: int
    ) -> list[Any]:
        """Encode one frame's result as a label message; returns ``[header, labels, instances?, preview?]``
        (no topic).

        ``result.labels``: ``uint8[H, W]``; ``result.instance_map``: ``uint16[H, W]`` or None;
        ``result.frame``: BGR ``uint8[H', W', 3]`` (only used when the preview mode is ``jpeg``).
        ``result.instances`` supply the mask area/centroid of matched tracks (by ``Instance.index ==
        Track.instance_index``).

        With ``raw`` encoding the returned label/instance entries *are* the given arrays (or
        contiguous copies when they were not contiguous): do not modify them until they are sent.
        """
        meta, labels, instances, image = result.meta, result.labels, result.instance_map, result.frame
        latencies_ms, tracks, detections = result.latencies_ms, result.tracks, result.instances
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise TransportError(f"labels must be uint8[H, W], got {labels.dtype}{list(labels.shape)}")
        h, w = labels.shape
        if (meta.height, meta.width) != (h, w):
            raise TransportError(
                f"labels are {w}x{h} but the frame meta says {meta.width}x{meta.height}; "
                "publish full-resolution label maps of the captured frame"
            )
        frames: list[Any] = [None]
        parts: list[dict[str, Any]] = []

        arr = np.ascontiguousarray(labels)
        buf = self._compress(arr)
        frames.append(buf)
        parts.append({"name": "labels", "dtype": "uint8", "shape": [h, w], "enc": self.encoding,
                      "size": _nbytes(buf)})

        if instances is not None:
            inst = np.asarray(instances)
            if inst.shape != (h, w) or inst.dtype != np.uint16:
                raise TransportError(
                    f"instances must be uint16[{h}, {w}] like the labels, got {inst.dtype}{list(inst.shape)}"
                )
            inst = np.ascontiguousarray(inst, dtype="<u2")
            buf = self._compress(inst)
            frames.append(buf)
            parts.append({"name": "instances", "dtype": "uint16", "shape": [h, w], "enc": self.encoding,
                          "size": _nbytes(buf)})

        if self.preview == "jpeg" and image is not None:
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise TransportError(f"image must be BGR uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
            jpg, shape = self._encode_preview(image)
            frames.append(jpg)
            parts.append({"name": "preview", "dtype": "uint8", "shape": [int(s) for s in shape], "enc": "jpeg",
                          "size": int(jpg.nbytes)})

        by_index = {d.index: d for d in detections}
        header = {
            "v": SCHEMA_MAJOR,
            "vmin": SCHEMA_MINOR,
            "kind": "labels",
            "sid": self.session,
            "seq": int(seq),
            "cam": str(meta.camera_id),
            "fseq": int(meta.seq),
            "fidx": int(meta.frame_index),
            "t_cap_mono": int(meta.t_mono_ns),
            "t_cap_wall": int(meta.t_wall_ns),
            "t_pub_wall": int(t_publish_wall_ns),
            "pts": int(meta.pts_ns),
            "t_rec": int(meta.t_rec_ns),
            "w": int(w),
            "h": int(h),
            "parts": parts,
            "lat": {str(k): _finite(v) for k, v in (latencies_ms or {}).items()},
            "cv": str(classes_version),
            "tracks": [_track_to_wire(t, by_index.get(t.instance_index) if t.instance_index else None)
                       for t in tracks],
        }
        frames[0] = msgpack.packb(header | _counts_to_wire(result.analytics), use_bin_type=True)
        return frames

    def encode_classes(self, classes: Sequence[ClassInfo], *, t_publish_wall_ns: int) -> bytes:
        """The header frame of a class-table message (the topic frame is the caller's)."""
        return msgpack.packb(
            {
                "v": SCHEMA_MAJOR,
                "vmin": SCHEMA_MINOR,
                "kind": "classes",
                "sid": self.session,
                "t_pub_wall": int(t_publish_wall_ns),
                "cv": classes_version(classes),
                "classes": _classes_to_wire(classes),
            },
            use_bin_type=True,
        )


    def encode_end(
        self, *, last_seq: int, published: int, dropped: int, reason: str, t_publish_wall_ns: int
    ) -> bytes:
        """The header frame of an end-of-stream message (the topic frame is the caller's)."""
        return msgpack.packb(
            {
                "v": SCHEMA_MAJOR,
                "vmin": SCHEMA_MINOR,
                "kind": "end",
                "sid": self.session,
                "t_pub_wall": int(t_publish_wall_ns),
                "last_seq": int(last_seq),
                "published": int(published),
                "dropped": int(dropped),
                "reason": str(reason),
            },
            use_bin_type=True,
        )


def _header_of_kind(frames: Sequence[Any], kind: str, what: str) -> dict[str, Any]:
    """The header of a one-frame message on the ``kind`` topic (``kind`` may be omitted, not differ)."""
    if len(frames) < 1:
        raise TransportError(f"malformed message: {what} message has no header frame")
    header = unpack_header(frames[0])
    got = header.get("kind", kind)
    if got != kind:
        raise TransportError(f"malformed message: expected kind {kind!r} on the {kind} topic, got {got!r}")
    return header


def _nbytes(buf: Any) -> int:
    return int(buf.nbytes) if isinstance(buf, np.ndarray) else len(buf)


# --------------------------------------------------------------------------------------------------
# decoding


def _buffer(frame: Any) -> memoryview:
    """A memoryview over a received frame (``zmq.Frame``, bytes, memoryview or ndarray), no copy."""
    buf = getattr(frame, "buffer", frame)  # zmq.Frame exposes .buffer
    try:
        return memoryview(buf)
    except TypeError as exc:
        raise TransportError(f"a message frame of type {type(frame).__name__} is not a buffer") from exc


def unpack_header(frame: Any) -> dict[str, Any]:
    """Decode and version-check a header frame. Raises :class:`TransportError` when malformed."""
    buf = _buffer(frame)
    if buf.nbytes > _MAX_HEADER_BYTES:
        raise TransportError(f"malformed message: header frame is {buf.nbytes} bytes (limit {_MAX_HEADER_BYTES})")
    try:
        header = msgpack.unpackb(buf, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise TransportError(f"malformed message: header is not valid msgpack ({exc})") from exc
    if not isinstance(header, dict):
        raise TransportError(f"malformed message: header must be a msgpack map, got {type(header).__name__}")
    v = header.get("v")
    if not isinstance(v, int):
        raise TransportError(f"malformed message: header has no integer schema version 'v' (got {v!r})")
    if v > SCHEMA_MAJOR:
        raise TransportError(
            f"message uses wire schema major version {v}, this decoder understands up to {SCHEMA_MAJOR}; "
            "upgrade the perception package on the receiving side"
        )
    if v < 1:
        raise TransportError(f"malformed message: schema version {v} is not valid (must be >= 1)")
    return header


def _get(header: Mapping[str, Any], key: str, typ: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in header:
        if default is ...:
            raise TransportError(f"malformed message: missing required key {key!r}")
        return default
    value = header[key]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
        raise TransportError(
            f"malformed message: key {key!r} should be {getattr(typ, '__name__', typ)}, "
            f"got {type(value).__name__}"
        )
    return value


def _floats(value: Any, n: int, what: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise TransportError(f"malformed message: {what} should be a list of {n} numbers, got {value!r}")
    try:
        return tuple(float(x) for x in value)
    except (TypeError, ValueError) as exc:
        raise TransportError(f"malformed message: {what} should be numbers, got {value!r}") from exc


def _decode_track(d: Any) -> TrackRecord:
    if not isinstance(d, dict):
        raise TransportError(f"malformed message: each track must be a map, got {type(d).__name__}")
    box = _floats(_get(d, "box", list), 4, "track box")
    state = _get(d, "state", int, int(TrackState.CONFIRMED))
    try:
        st = TrackState(state)
    except ValueError as exc:
        raise TransportError(f"malformed message: unknown track state {state!r} (0..3 are defined)") from exc
    return TrackRecord(
        track_id=_get(d, "id", int),
        instance_index=_get(d, "idx", int, 0),
        class_id=_get(d, "cls", int),
        score=_get(d, "score", float, 0.0),
        box=box,  # type: ignore[arg-type]
        area=_get(d, "area", int, 0),
        centroid=_floats(d.get("ctr", [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]), 2, "track ctr"),  # type: ignore[arg-type]
        velocity=_floats(d.get("vel", [0.0, 0.0]), 2, "track vel"),  # type: ignore[arg-type]
        age=_get(d, "age", int, 1),
        hits=_get(d, "hits", int, 1),
        state=st,
    )


class MessageDecoder:
    """Decodes wire frames. Holds decompression contexts (created once, reused). Not thread-safe."""

    def __init__(self) -> None:
        self._zstd = None
        self._lz4 = None

    def _decompress(self, buf: memoryview, enc: str, nbytes: int, what: str) -> Any:
        if enc == "raw":
            return buf
        if enc == "zstd":
            import zstandard

            if self._zstd is None:
                self._zstd = zstandard.ZstdDecompressor()
            try:
                declared = zstandard.frame_content_size(buf)
                if declared != nbytes:  # checked first: a corrupt size must not drive the allocation
                    raise TransportError(
                        f"malformed message: {what} is a zstd frame of {declared} bytes, the header implies {nbytes}"
                    )
                return self._zstd.decompress(buf, max_output_size=nbytes)
            except zstandard.ZstdError as exc:
                raise TransportError(f"malformed message: {what} is not a valid zstd frame ({exc})") from exc
        if enc == "lz4":
            import lz4.frame

            if self._lz4 is None:
                self._lz4 = lz4.frame.LZ4FrameDecompressor()
            self._lz4.reset()
            try:
                declared = lz4.frame.get_frame_info(buf)["content_size"]
                if declared != nbytes:
                    raise TransportError(
                        f"malformed message: {what} is an lz4 frame of {declared} bytes, the header implies {nbytes}"
                    )
                out = self._lz4.decompress(buf, max_length=nbytes)
            except RuntimeError as exc:
                raise TransportError(f"malformed message: {what} is not a valid lz4 frame ({exc})") from exc
            if not self._lz4.eof:
                raise TransportError(f"malformed message: {what} is a truncated lz4 frame")
            return out
        raise TransportError(f"malformed message: {what} has unknown encoding {enc!r}; allowed: "
                             f"{', '.join(PART_ENCODINGS)}")

    def _decode_part(self, frame: Any, desc: Any, index: int) -> tuple[str, np.ndarray | None]:
        if not isinstance(desc, dict):
            raise TransportError(f"malformed message: parts[{index}] must be a map")
        name = _get(desc, "name", str)
        enc = _get(desc, "enc", str)
        buf = _buffer(frame)
        size = _get(desc, "size", int, buf.nbytes)
        if size != buf.nbytes:
            raise TransportError(
                f"malformed message: part {name!r} announces {size} bytes but its frame has {buf.nbytes}"
            )
        if name not in _PART_DTYPES:
            return name, None  # a part added by a newer minor version: ignored
        dtype_name = _get(desc, "dtype", str)
        try:
            dtype = np.dtype(dtype_name).newbyteorder("<")
        except TypeError as exc:
            raise TransportError(f"malformed message: part {name!r} has unknown dtype {dtype_name!r}") from exc
        if dtype != _PART_DTYPES[name]:
            raise TransportError(
                f"malformed message: part {name!r} must be {_PART_DTYPES[name].name}, got {dtype_name!r}"
            )
        shape_v = _get(desc, "shape", list)
        if not all(isinstance(s, int) and s >= 0 for s in shape_v):
            raise TransportError(f"malformed message: part {name!r} has a bad shape {shape_v!r}")
        shape = tuple(shape_v)
        if name == "preview":
            if enc != "jpeg":
                raise TransportError(f"malformed message: preview encoding must be 'jpeg', got {enc!r}")
            import cv2

            img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise TransportError("malformed message: preview part is not a decodable JPEG image")
            if len(shape) == 3 and img.shape != shape:
                raise TransportError(f"malformed message: preview decodes to {img.shape}, header says {shape}")
            return name, img
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        data = self._decompress(buf, enc, expected, f"part {name!r}")
        got = data.nbytes if isinstance(data, memoryview) else len(data)
        if got != expected:
            raise TransportError(
                f"malformed message: part {name!r} holds {got} bytes, shape {list(shape)} of {dtype.name} "
                f"needs {expected}"
            )
        arr = np.frombuffer(data, dtype=dtype).reshape(shape)
        arr.flags.writeable = False
        return name, arr

    def decode_labels(self, frames: Sequence[Any], *, t_receive_wall_ns: int = 0,
                      header: Mapping[str, Any] | None = None) -> LabelMessage:
        """``[header, labels, ...]`` (topic already removed) -> :class:`LabelMessage`.

        ``header`` may be passed when the first frame was already unpacked. Raises
        :class:`TransportError` naming what is wrong when the message is malformed.
        """
        if len(frames) < 2:
            raise TransportError("malformed message: a label message needs a header and a label frame, got "
                                 f"{len(frames)} frame(s)")
        if header is None:
            header = unpack_header(frames[0])
        kind = header.get("kind", "labels")
        if kind != "labels":
            raise TransportError(f"malformed message: expected kind 'labels' on the label topic, got {kind!r}")
        parts = _get(header, "parts", list)
        if len(frames) != 1 + len(parts):
            raise TransportError(
                f"malformed message: header lists {len(parts)} part(s) but {len(frames) - 1} data frame(s) arrived"
            )
        w = _get(header, "w", int)
        h = _get(header, "h", int)
        decoded: dict[str, np.ndarray] = {}
        label_enc = ""
        for i, (desc, frame) in enumerate(zip(parts, frames[1:])):
            name, arr = self._decode_part(frame, desc, i)
            if arr is None:
                continue
            if name in decoded:
                raise TransportError(f"malformed message: part {name!r} appears twice")
            if name != "preview" and arr.shape != (h, w):
                raise TransportError(f"malformed message: part {name!r} is {list(arr.shape)}, header says h={h} w={w}")
            if name == "labels":
                label_enc = desc["enc"]
            decoded[name] = arr
        if "labels" not in decoded:
            raise TransportError("malformed message: it has no 'labels' part")
        lat = _get(header, "lat", dict, {})
        try:
            latencies = {str(k): float(v) for k, v in lat.items()}
        except (TypeError, ValueError) as exc:
            raise TransportError(f"malformed message: 'lat' must map stage names to numbers, got {lat!r}") from exc
        tracks = tuple(_decode_track(t) for t in _get(header, "tracks", list, []))
        return LabelMessage(
            schema_version=(int(header["v"]), _get(header, "vmin", int, 0)),
            session=_get(header, "sid", int, 0),
            seq=_get(header, "seq", int),
            camera_id=_get(header, "cam", str, ""),
            frame_seq=_get(header, "fseq", int, 0),
            frame_index=_get(header, "fidx", int, 0),
            t_capture_mono_ns=_get(header, "t_cap_mono", int, 0),
            t_capture_wall_ns=_get(header, "t_cap_wall", int, 0),
            t_publish_wall_ns=_get(header, "t_pub_wall", int, 0),
            t_receive_wall_ns=int(t_receive_wall_ns),
            pts_ns=_get(header, "pts", int, 0),
            width=w,
            height=h,
            encoding=label_enc,
            latencies_ms=latencies,
            classes_version=_get(header, "cv", str, ""),
            labels=decoded["labels"],
            instances=decoded.get("instances"),
            preview=decoded.get("preview"),
            tracks=tracks,
            header=header,
            t_record_ns=_get(header, "t_rec", int, 0),
        )

    def decode_end(self, frames: Sequence[Any]) -> StreamEnd:
        """``[header]`` of an end-of-stream message -> :class:`StreamEnd`."""
        header = _header_of_kind(frames, "end", "end-of-stream")
        return StreamEnd(
            session=_get(header, "sid", int, 0),
            last_seq=_get(header, "last_seq", int),
            published=_get(header, "published", int, 0),
            dropped=_get(header, "dropped", int, 0),
            reason=_get(header, "reason", str, "end"),
            t_publish_wall_ns=_get(header, "t_pub_wall", int, 0),
        )

    def decode_classes(self, frames: Sequence[Any]) -> ClassTable:
        """``[header]`` of a class-table message -> :class:`ClassTable`."""
        header = _header_of_kind(frames, "classes", "class-table")
        out = []
        for i, c in enumerate(_get(header, "classes", list)):
            if not isinstance(c, dict):
                raise TransportError(f"malformed message: classes[{i}] must be a map")
            rgb = _get(c, "rgb", list)
            if len(rgb) != 3 or not all(isinstance(x, int) and 0 <= x <= 255 for x in rgb):
                raise TransportError(f"malformed message: classes[{i}].rgb must be 3 ints 0..255, got {rgb!r}")
            out.append(ClassInfo(id=_get(c, "id", int), name=_get(c, "name", str), color=tuple(rgb),
                                 is_thing=_get(c, "thing", bool, False)))
        classes = tuple(out)
        return ClassTable(
            version=_get(header, "cv", str, classes_version(classes)),
            classes=classes,
            session=_get(header, "sid", int, 0),
            t_publish_wall_ns=_get(header, "t_pub_wall", int, 0),
        )
