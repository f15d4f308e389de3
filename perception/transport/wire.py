"""The wire format: how one processed frame becomes a multipart ZeroMQ message, and back.

Pure encoding/decoding with no sockets, so that it can be tested alone and so that the publisher and
the subscriber agree by construction. ``docs/wire-format.md`` is the normative description for other
languages; this module implements it.

A label message is ``[topic, header, labels, instances?, preview?]``:

* ``topic``  – UTF-8 bytes, e.g. ``b"perception"``;
* ``header`` – a msgpack map (keys in ``docs/wire-format.md``);
* then one frame per entry of ``header["parts"]``, in that order. ``labels`` is always first.

The instance map carries per-message indices: pixel value ``k`` (1..``ninst``) is the mask of this
frame's ``k``-th instance, and ``tracks[j]["idx"]`` names the mask of track ``j`` (0: none this frame).
Track ids never appear in the map, so it cannot overflow however long the run.

A class-table message is ``[topic + "/classes", header]`` with ``kind == "classes"``; an end-of-stream
message is ``[topic + "/end", header]`` with ``kind == "end"``.

Evolution (msgspec's rule): fields are only ever appended, with defaults. Decoders ignore unknown
keys and unknown part names and fill defaults for missing optional keys; ``v`` (the major version)
changes only for a change old decoders cannot survive, and such messages are refused clearly.

Decoding refuses every malformed message with :class:`TransportError` naming the reason, and checks
the sizes a message announces against :class:`DecodeLimits` before it allocates anything.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import numpy as np

from perception.errors import TransportError
from perception.types import Analytics, ClassInfo, FrameMeta, FrameResult, Instance, Track, TrackState

SCHEMA_MAJOR = 1
"""Bumped only for changes an old decoder cannot survive; decoders refuse a newer major."""
SCHEMA_MINOR = 4
"""Bumped when fields are appended (old decoders ignore them). 1.1: end-of-stream message; 1.2: ``t_rec``;
1.3: ``ninst``, and the instance map holds per-message indices (``tracks[j].idx``), as documented."""

CLASSES_SUFFIX = "/classes"
"""Suffix of the topic that carries the class table."""
END_SUFFIX = "/end"
STATUS_SUFFIX = "/status"
"""Suffix of the topic that carries the pipeline's health (schema 1.4), once a second and on changes."""
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

_DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2")}
"""The element types a part may declare: a fixed allow-list (a dtype string from the wire is never handed
to ``np.dtype``)."""
_PART_DTYPES = {"labels": "uint8", "instances": "uint16", "preview": "uint8"}
"""Each known part's element type; parts with other names are ignored (added by a newer minor)."""
MAX_INSTANCES = 65535
"""Most instances one message can index (the instance map is ``uint16``)."""
DEFAULT_MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeLimits:
    """The most a decoder accepts from one message, checked before it allocates anything.

    A message over a limit is refused with :class:`TransportError` (the subscriber stays usable).
    Raise them for larger frames; lower them to bound a receiver's memory more tightly. Worst case per
    message: about ``max_pixels * 3`` bytes for the maps, ``max_preview_pixels * 3`` for the preview,
    and up to ~80 times ``max_header_bytes`` for the decoded header (msgpack objects in Python).
    """

    max_pixels: int = 7680 * 4320
    """Pixels of a label or instance map (``w * h``): 8K UHD by default (33 MB of labels, 66 MB of
    instances). Larger maps are refused before any decompression."""
    max_preview_pixels: int = 3840 * 2160
    """Pixels of a preview JPEG (read from its frame header before decoding): 4K by default, far above
    the publisher's ``preview_max_width`` of 640."""
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    """Bytes of the msgpack header frame: 1 MiB holds ~6 000 tracks."""

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_preview_pixels", "max_header_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TransportError(f"DecodeLimits.{name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------------------------------
# decoded values


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackRecord(Track):
    """A track as carried on the wire (``header["tracks"][i]``): a :class:`~perception.types.Track`
    (same fields, same meaning; ``extra`` is empty) plus the mask statistics the message adds.

    ``instance_index`` is the track's mask in this message's instance map (pixel value, 1..``ninst``),
    0 when the track was not matched this frame (coasting).
    """

    area: int = 0
    """Pixels of its mask in this frame; 0 when it has none (coasting)."""
    centroid: tuple[float, float] = (0.0, 0.0)
    """``(x, y)`` mean mask pixel; the box centre when it has no mask."""


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
    """When the frame entered the pipeline (live: grabbed; paced replay: due; unpaced replay: got its
    slot), on the *publisher's* monotonic clock (only comparable there). Latency counts from here."""
    t_capture_wall_ns: int
    """The same moment as ``t_capture_mono_ns`` on the publisher's wall clock."""
    t_publish_wall_ns: int
    """Publisher's wall clock when the message was encoded for sending (parts compressed, header packed)."""
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
    """``uint16[height, width]``: each pixel the index (1..``n_instances``) of the instance it belongs to,
    0 for none; ``tracks[j].instance_index`` names a track's mask. None when the message has no map."""
    preview: np.ndarray | None
    """``uint8[h, w, 3]`` BGR preview image (downscaled), or None."""
    tracks: tuple[TrackRecord, ...]
    """Tracked objects; ``instance_index`` is in ``0..n_instances``."""
    header: Mapping[str, Any] = field(repr=False, compare=False)
    """The raw decoded header, unknown keys included."""
    t_record_ns: int = 0
    """A recorded drive's own stamp of the frame (schema 1.2, ``t_rec``); 0 when the input has none."""
    n_instances: int = 0
    """``ninst`` (schema 1.3): instance-map values and track ``instance_index`` lie in ``0..n_instances``.
    From a publisher older than 1.3 (no ``ninst``): ``MAX_INSTANCES``, and its map held track ids."""

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


def _track_to_wire(t: Track, det: Instance | None) -> dict[str, Any]:
    """One track as a wire map; area and centroid from its matched instance ``det`` (a decoded
    :class:`TrackRecord` being re-published keeps its own), else 0 and the box centre."""
    x0, y0, x1, y1 = box = [float(v) for v in t.box]
    if not all(math.isfinite(v) for v in box):
        raise TransportError(f"track {t.track_id} has a non-finite box {box}; the tracker produced it")
    if det is not None:
        area, centroid = det.area, det.centroid
    elif isinstance(t, TrackRecord):
        area, centroid = t.area, t.centroid
    else:
        area, centroid = 0, ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    return {
        "id": int(t.track_id),
        "idx": int(t.instance_index),
        "cls": int(t.class_id),
        "score": _finite(t.score),
        "box": box,
        "area": int(area),
        "ctr": [_finite(centroid[0]), _finite(centroid[1])],
        "vel": [_finite(t.velocity[0]), _finite(t.velocity[1])],
        "age": int(t.age),
        "hits": int(t.hits),
        "state": int(t.state),
    }


def instance_count(result: FrameResult) -> int:
    """``ninst`` of a frame's message: instance-map pixels and track ``idx`` lie in ``0..ninst``.

    ``ninst`` is the largest ``Instance.index`` of the frame (the map's largest value when the frame
    has a map but no instance list; 0 when it has neither). Raises :class:`TransportError` when the map,
    the instances and the tracks disagree: an index outside ``1..65535`` or given twice, a map pixel
    above ``ninst`` (e.g. a map relabelled to track ids), a track pointing at no instance of the frame.
    """
    indices = [int(d.index) for d in result.instances]
    imap = result.instance_map
    top = int(imap.max()) if imap is not None and imap.size else 0  # one vectorised pass: ~0.1 ms at 1080p
    if indices:
        if min(indices) < 1 or max(indices) > MAX_INSTANCES or len(set(indices)) != len(indices):
            raise TransportError(
                f"instance indices must be distinct and within 1..{MAX_INSTANCES}, got {sorted(indices)[:16]}"
            )
        n = max(indices)
        if top > n:
            raise TransportError(
                f"the instance map holds index {top} but the frame's instances stop at {n}: its pixels "
                "must be Instance.index values (1..n), not track ids"
            )
    else:
        n = top
    known = set(indices) if indices else None
    for t in result.tracks:
        i = int(t.instance_index)
        if i != 0 and not (0 < i <= n and (known is None or i in known)):
            raise TransportError(
                f"track {t.track_id} points at instance {i}, which this frame does not have (instances 1..{n}); "
                "Track.instance_index must be the Instance.index it was matched to, or 0"
            )
    return n


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
        self, result: FrameResult, *, seq: int, classes_version: str = "", t_publish_wall_ns: int | None = None
    ) -> list[Any]:
        """Encode one frame's result as a label message; returns ``[header, labels, instances?, preview?]``
        (no topic).

        ``result.labels``: ``uint8[H, W]``; ``result.instance_map``: ``uint16[H, W]`` of
        ``Instance.index`` values (0 = none) or None; ``result.frame``: BGR ``uint8[H', W', 3]`` (only
        used when the preview mode is ``jpeg``). ``result.instances`` supply the mask area/centroid of
        matched tracks (``Instance.index == Track.instance_index``). The map, the instances and the
        tracks are checked to agree (:func:`instance_count`).

        ``t_publish_wall_ns``: the ``t_pub_wall`` stamp; None (the default) stamps the wall clock
        after the parts are compressed, just before the header is packed.

        With ``raw`` encoding the returned label/instance entries *are* the given arrays (or
        contiguous copies when they were not contiguous): do not modify them until they are sent.
        """
        meta = result.meta
        frames, parts = self._map_parts(result)
        n_instances = instance_count(result)
        if self.preview == "jpeg" and result.frame is not None:
            jpg, part = self._preview_part(result.frame)
            frames.append(jpg)
            parts.append(part)
        by_index = {d.index: d for d in result.instances}
        tracks = [_track_to_wire(t, by_index.get(t.instance_index) if t.instance_index else None)
                  for t in result.tracks]
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
            "t_pub_wall": int(time.time_ns() if t_publish_wall_ns is None else t_publish_wall_ns),
            "pts": int(meta.pts_ns),
            "t_rec": int(meta.t_rec_ns),
            "w": int(meta.width),
            "h": int(meta.height),
            "parts": parts,
            "lat": {str(k): _finite(v) for k, v in (result.latencies_ms or {}).items()},
            "cv": str(classes_version),
            "ninst": n_instances,
            "tracks": tracks,
        }
        return [msgpack.packb(header | _counts_to_wire(result.analytics), use_bin_type=True), *frames]

    def _map_parts(self, result: FrameResult) -> tuple[list[Any], list[dict[str, Any]]]:
        """The labels and (if any) instance-map frames with their part maps, checked against the meta."""
        meta = result.meta
        labels = np.asarray(result.labels)
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise TransportError(f"labels must be uint8[H, W], got {labels.dtype}{list(labels.shape)}")
        h, w = labels.shape
        if (meta.height, meta.width) != (h, w):
            raise TransportError(
                f"labels are {w}x{h} but the frame meta says {meta.width}x{meta.height}; "
                "publish full-resolution label maps of the captured frame"
            )
        buf = self._compress(np.ascontiguousarray(labels))
        frames: list[Any] = [buf]
        parts = [{"name": "labels", "dtype": "uint8", "shape": [h, w], "enc": self.encoding, "size": _nbytes(buf)}]
        if result.instance_map is not None:
            inst = np.asarray(result.instance_map)
            if inst.shape != (h, w) or inst.dtype != np.uint16:
                raise TransportError(
                    f"instances must be uint16[{h}, {w}] like the labels, got {inst.dtype}{list(inst.shape)}"
                )
            buf = self._compress(np.ascontiguousarray(inst, dtype="<u2"))
            frames.append(buf)
            parts.append({"name": "instances", "dtype": "uint16", "shape": [h, w], "enc": self.encoding,
                          "size": _nbytes(buf)})
        return frames, parts

    def _preview_part(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise TransportError(f"image must be BGR uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
        jpg, shape = self._encode_preview(image)
        return jpg, {"name": "preview", "dtype": "uint8", "shape": [int(s) for s in shape], "enc": "jpeg",
                     "size": int(jpg.nbytes)}

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


    def encode_status(self, body: Mapping[str, Any], *, t_publish_wall_ns: int) -> bytes:
        """The header frame of a status message: ``body`` (docs/wire-format.md, "Status message") with the
        common keys in front (the topic frame is the caller's)."""
        head = {"v": SCHEMA_MAJOR, "vmin": SCHEMA_MINOR, "kind": "status", "sid": self.session,
                "t_pub_wall": int(t_publish_wall_ns)}
        return msgpack.packb({**body, **head}, use_bin_type=True)

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


def _nbytes(buf: Any) -> int:
    return int(buf.nbytes) if isinstance(buf, np.ndarray) else len(buf)


# --------------------------------------------------------------------------------------------------
# decoding


def _short(value: Any) -> str:
    """``repr`` of a value from the wire, cut short for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _buffer(frame: Any) -> memoryview:
    """A flat byte view over a received frame (``zmq.Frame``, bytes, memoryview or ndarray), no copy."""
    buf = getattr(frame, "buffer", frame)  # zmq.Frame exposes .buffer
    try:
        view = memoryview(buf)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except TypeError as exc:
        raise TransportError(f"a message frame of type {type(frame).__name__} is not a contiguous buffer") from exc


def unpack_header(frame: Any, *, max_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> dict[str, Any]:
    """Decode and version-check a header frame of at most ``max_bytes``. Raises :class:`TransportError`
    when malformed."""
    buf = _buffer(frame)
    if buf.nbytes > max_bytes:
        raise TransportError(f"malformed message: header frame is {buf.nbytes} bytes (limit {max_bytes})")
    try:
        # msgpack bounds every declared container/str length by the buffer's length (unpackb's defaults)
        header = msgpack.unpackb(buf, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise TransportError(f"malformed message: header is not valid msgpack ({exc})") from exc
    if not isinstance(header, dict):
        raise TransportError(f"malformed message: header must be a msgpack map, got {type(header).__name__}")
    v = header.get("v")
    if not isinstance(v, int) or isinstance(v, bool):
        raise TransportError(f"malformed message: header has no integer schema version 'v' (got {_short(v)})")
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
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        raise TransportError(
            f"malformed message: key {key!r} should be {getattr(typ, '__name__', typ)}, "
            f"got {type(value).__name__}"
        )
    return value


def _int_in(header: Mapping[str, Any], key: str, lo: int, hi: int, default: Any = ...) -> int:
    value = _get(header, key, int, default)
    if not lo <= value <= hi:
        raise TransportError(f"malformed message: {key!r} must be within {lo}..{hi}, got {value}")
    return value


def _number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TransportError(f"malformed message: {what} should be a number, got {_short(x)}")
    return float(x)


def _floats(value: Any, n: int, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != n:
        raise TransportError(f"malformed message: {what} should be a list of {n} numbers, got {_short(value)}")
    out = tuple(_number(x, what) for x in value)
    if not all(math.isfinite(x) for x in out):
        raise TransportError(f"malformed message: {what} must be finite, got {list(out)}")
    return out


def _decode_track(d: Any, max_index: int) -> TrackRecord:
    if not isinstance(d, dict):
        raise TransportError(f"malformed message: each track must be a map, got {type(d).__name__}")
    box = _floats(_get(d, "box", list), 4, "track box")
    state = _get(d, "state", int, int(TrackState.CONFIRMED))
    if state not in TrackState._value2member_map_:
        raise TransportError(f"malformed message: unknown track state {state} (0..3 are defined)")
    return TrackRecord(
        track_id=_get(d, "id", int),
        instance_index=_int_in(d, "idx", 0, max_index, 0),
        class_id=_int_in(d, "cls", 0, 255),
        score=_get(d, "score", float, 0.0),
        box=box,  # type: ignore[arg-type]
        area=_int_in(d, "area", 0, 1 << 62, 0),
        centroid=_floats(d.get("ctr", [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]), 2, "track ctr"),  # type: ignore[arg-type]
        velocity=_floats(d.get("vel", [0.0, 0.0]), 2, "track vel"),  # type: ignore[arg-type]
        age=_int_in(d, "age", 0, 1 << 62, 1),
        hits=_int_in(d, "hits", 0, 1 << 62, 1),
        state=TrackState(state),
    )


_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RST0-7, SOI: no length field
_JPEG_SOF_ALL = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # every frame header (DHT, JPG, DAC are not)
_JPEG_SOF_SEQUENTIAL = frozenset({0xC0, 0xC1})  # baseline and extended sequential, Huffman coded


def jpeg_size(buf: memoryview) -> tuple[int, int, int]:
    """``(height, width, components)`` from a JPEG's frame header (SOF), read without decoding.

    Walks the marker segments from SOI to the first SOF (a few header segments, not the image data).
    Only sequential Huffman JPEGs (SOF0/SOF1) are accepted: progressive ones can take many scans of
    work for a few bytes. Raises :class:`TransportError` when the header is malformed.
    """
    n = buf.nbytes
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise TransportError("malformed message: preview part is not a JPEG image (no SOI marker)")
    i = 2
    while i + 4 <= n:
        if buf[i] != 0xFF:
            raise TransportError(f"malformed message: preview JPEG has no marker at byte {i}")
        marker = buf[i + 1]
        if marker == 0xFF or marker in _JPEG_STANDALONE:  # fill byte, or a marker without a length
            i += 1 if marker == 0xFF else 2
            continue
        length = (buf[i + 2] << 8) | buf[i + 3]
        if length < 2 or i + 2 + length > n:
            raise TransportError(f"malformed message: preview JPEG segment at byte {i} has a bad length {length}")
        if marker in _JPEG_SOF_ALL:
            if marker not in _JPEG_SOF_SEQUENTIAL:
                raise TransportError(f"malformed message: preview JPEG is not baseline (SOF marker 0x{marker:02X})")
            if length < 8:
                raise TransportError("malformed message: preview JPEG frame header is truncated")
            return (buf[i + 5] << 8) | buf[i + 6], (buf[i + 7] << 8) | buf[i + 8], buf[i + 9]
        if marker in (0xDA, 0xD9):  # SOS or EOI before any frame header
            break
        i += 2 + length
    raise TransportError("malformed message: preview JPEG has no frame header")


class MessageDecoder:
    """Decodes wire frames. Holds decompression contexts (created once, reused). Not thread-safe.

    Every malformed message raises :class:`TransportError` with the reason; sizes a message announces
    (map pixels, zstd/lz4 content sizes, JPEG dimensions, header bytes) are checked against ``limits``
    before anything is allocated for them.
    """

    def __init__(self, *, limits: DecodeLimits | None = None) -> None:
        self.limits = limits if limits is not None else DecodeLimits()
        if not isinstance(self.limits, DecodeLimits):
            raise TransportError(f"limits must be a DecodeLimits, got {type(self.limits).__name__}")
        self._zstd = None
        self._lz4 = None

    def unpack_header(self, frame: Any) -> dict[str, Any]:
        """:func:`unpack_header` under this decoder's header limit."""
        return unpack_header(frame, max_bytes=self.limits.max_header_bytes)

    def _unzstd(self, buf: memoryview, nbytes: int, what: str) -> bytes:
        import zstandard

        if self._zstd is None:
            self._zstd = zstandard.ZstdDecompressor()
        try:
            declared = zstandard.get_frame_parameters(buf).content_size
            if declared != nbytes:  # checked first: a corrupt size must not drive the allocation
                raise TransportError(
                    f"malformed message: {what} is a zstd frame of {declared} bytes, the header implies {nbytes}"
                )
            return self._zstd.decompress(buf, max_output_size=nbytes, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise TransportError(f"malformed message: {what} is not a valid zstd frame ({exc})") from exc

    def _unlz4(self, buf: memoryview, nbytes: int, what: str) -> bytes:
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
        if self._lz4.unused_data:
            raise TransportError(f"malformed message: {what} has data after its lz4 frame")
        return out

    def _decompress(self, buf: memoryview, enc: str, nbytes: int, what: str) -> Any:
        if enc == "raw":
            return buf
        if enc == "zstd":
            return self._unzstd(buf, nbytes, what)
        if enc == "lz4":
            return self._unlz4(buf, nbytes, what)
        raise TransportError(f"malformed message: {what} has unknown encoding {_short(enc)}; allowed: "
                             f"{', '.join(ENCODINGS)}")

    def _decode_jpeg(self, buf: memoryview, shape: list[int]) -> np.ndarray:
        """The preview part: its declared shape and the JPEG's own header checked, then decoded."""
        if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
            raise TransportError(f"malformed message: preview shape must be [h, w, 3], got {_short(shape)}")
        if shape[0] * shape[1] > self.limits.max_preview_pixels:
            raise TransportError(f"malformed message: preview of {shape[1]}x{shape[0]} pixels is over the limit of "
                                 f"{self.limits.max_preview_pixels} (DecodeLimits.max_preview_pixels)")
        h, w, components = jpeg_size(buf)
        if [h, w] != shape[:2] or components not in (1, 3):
            raise TransportError(f"malformed message: preview JPEG is {w}x{h} with {components} component(s), "
                                 f"the header says {shape[1]}x{shape[0]}x3")
        import cv2

        try:
            img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as exc:
            raise TransportError(f"malformed message: preview JPEG cannot be decoded ({exc})") from exc
        if img is None or img.shape != tuple(shape):
            got = "nothing" if img is None else list(img.shape)
            raise TransportError(f"malformed message: preview JPEG decodes to {got}, the header says {shape}")
        return img

    def _decode_part(self, frame: Any, desc: Any, index: int, h: int, w: int) -> tuple[str, np.ndarray | None]:
        if not isinstance(desc, dict):
            raise TransportError(f"malformed message: parts[{index}] must be a map")
        name = _get(desc, "name", str)
        enc = _get(desc, "enc", str)
        buf = _buffer(frame)
        size = _get(desc, "size", int, buf.nbytes)
        if size != buf.nbytes:
            raise TransportError(
                f"malformed message: part {_short(name)} announces {size} bytes but its frame has {buf.nbytes}"
            )
        if name not in _PART_DTYPES:
            return name, None  # a part added by a newer minor version: ignored
        dtype_name = _get(desc, "dtype", str)
        if dtype_name not in _DTYPES:
            raise TransportError(f"malformed message: part {name!r} has unknown dtype {_short(dtype_name)}; "
                                 f"allowed: {', '.join(_DTYPES)}")
        if dtype_name != _PART_DTYPES[name]:
            raise TransportError(f"malformed message: part {name!r} must be {_PART_DTYPES[name]}, got {dtype_name!r}")
        shape = _get(desc, "shape", list)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise TransportError(f"malformed message: part {name!r} has a bad shape {_short(shape)}")
        if name == "preview":
            if enc != "jpeg":
                raise TransportError(f"malformed message: preview encoding must be 'jpeg', got {_short(enc)}")
            return name, self._decode_jpeg(buf, shape)
        if shape != [h, w]:
            raise TransportError(f"malformed message: part {name!r} is {_short(shape)}, header says h={h} w={w}")
        dtype = _DTYPES[dtype_name]
        expected = h * w * dtype.itemsize  # w * h was checked against max_pixels: no overflow, bounded
        data = self._decompress(buf, enc, expected, f"part {name!r}")
        got = data.nbytes if isinstance(data, memoryview) else len(data)
        if got != expected:
            raise TransportError(
                f"malformed message: part {name!r} holds {got} bytes, shape {shape} of {dtype_name} needs {expected}"
            )
        arr = np.frombuffer(data, dtype=dtype).reshape(h, w)
        arr.flags.writeable = False
        return name, arr

    def _decode_parts(self, header: Mapping[str, Any], frames: Sequence[Any]) -> tuple[dict[str, np.ndarray], str]:
        """The known parts, by name, and the labels' encoding."""
        parts = _get(header, "parts", list)
        if len(frames) != 1 + len(parts):
            raise TransportError(
                f"malformed message: header lists {len(parts)} part(s) but {len(frames) - 1} data frame(s) arrived"
            )
        w = _int_in(header, "w", 1, self.limits.max_pixels)
        h = _int_in(header, "h", 1, self.limits.max_pixels)
        if w * h > self.limits.max_pixels:
            raise TransportError(f"malformed message: a {w}x{h} label map is over the limit of "
                                 f"{self.limits.max_pixels} pixels (DecodeLimits.max_pixels)")
        decoded: dict[str, np.ndarray] = {}
        label_enc = ""
        for i, (desc, frame) in enumerate(zip(parts, frames[1:])):
            name, arr = self._decode_part(frame, desc, i, h, w)
            if arr is None:
                continue
            if name in decoded:
                raise TransportError(f"malformed message: part {name!r} appears twice")
            if name == "labels":
                label_enc = desc["enc"]
            decoded[name] = arr
        if "labels" not in decoded:
            raise TransportError("malformed message: it has no 'labels' part")
        return decoded, label_enc

    def decode_labels(self, frames: Sequence[Any], *, t_receive_wall_ns: int = 0,
                      header: Mapping[str, Any] | None = None) -> LabelMessage:
        """``[header, labels, ...]`` (topic already removed) -> :class:`LabelMessage`.

        ``header`` may be passed when the first frame was already unpacked (by :meth:`unpack_header`).
        Raises :class:`TransportError` naming what is wrong when the message is malformed.
        """
        if len(frames) < 2:
            raise TransportError("malformed message: a label message needs a header and a label frame, got "
                                 f"{len(frames)} frame(s)")
        if header is None:
            header = self.unpack_header(frames[0])
        kind = header.get("kind", "labels")
        if kind != "labels":
            raise TransportError(f"malformed message: expected kind 'labels' on the label topic, got {_short(kind)}")
        decoded, label_enc = self._decode_parts(header, frames)
        lat = _get(header, "lat", dict, {})
        latencies = {str(k): _number(v, "a 'lat' value") for k, v in lat.items()}
        n_instances = _int_in(header, "ninst", 0, MAX_INSTANCES, MAX_INSTANCES)
        tracks = tuple(_decode_track(t, n_instances) for t in _get(header, "tracks", list, []))
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
            width=int(header["w"]),
            height=int(header["h"]),
            encoding=label_enc,
            latencies_ms=latencies,
            classes_version=_get(header, "cv", str, ""),
            labels=decoded["labels"],
            instances=decoded.get("instances"),
            preview=decoded.get("preview"),
            tracks=tracks,
            header=header,
            t_record_ns=_get(header, "t_rec", int, 0),
            n_instances=n_instances,
        )

    def decode_end(self, frames: Sequence[Any]) -> StreamEnd:
        """``[header]`` of an end-of-stream message -> :class:`StreamEnd`."""
        header = self._header_of_kind(frames, "end", "end-of-stream")
        return StreamEnd(
            session=_get(header, "sid", int, 0),
            last_seq=_get(header, "last_seq", int),
            published=_get(header, "published", int, 0),
            dropped=_get(header, "dropped", int, 0),
            reason=_get(header, "reason", str, "end"),
            t_publish_wall_ns=_get(header, "t_pub_wall", int, 0),
        )

    def decode_status(self, frames: Sequence[Any]) -> dict[str, Any]:
        """``[header]`` of a status message -> the header as a dict (checked: ``streams`` is a list of maps)."""
        header = self._header_of_kind(frames, "status", "status")
        streams = header.get("streams", [])
        if not isinstance(streams, list) or not all(isinstance(s, dict) for s in streams):
            raise TransportError(f"malformed message: status 'streams' must be a list of maps, got {_short(streams)}")
        return header

    def decode_classes(self, frames: Sequence[Any]) -> ClassTable:
        """``[header]`` of a class-table message -> :class:`ClassTable`."""
        header = self._header_of_kind(frames, "classes", "class-table")
        out = []
        for i, c in enumerate(_get(header, "classes", list)):
            if not isinstance(c, dict):
                raise TransportError(f"malformed message: classes[{i}] must be a map")
            rgb = _get(c, "rgb", list)
            if len(rgb) != 3 or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in rgb):
                raise TransportError(f"malformed message: classes[{i}].rgb must be 3 ints 0..255, got {_short(rgb)}")
            out.append(ClassInfo(id=_int_in(c, "id", 0, 255), name=_get(c, "name", str), color=tuple(rgb),
                                 is_thing=_get(c, "thing", bool, False)))
        classes = tuple(out)
        return ClassTable(
            version=_get(header, "cv", str, classes_version(classes)),
            classes=classes,
            session=_get(header, "sid", int, 0),
            t_publish_wall_ns=_get(header, "t_pub_wall", int, 0),
        )

    def _header_of_kind(self, frames: Sequence[Any], kind: str, what: str) -> dict[str, Any]:
        """The header of a one-frame message on the ``kind`` topic (``kind`` may be omitted, not differ)."""
        if len(frames) < 1:
            raise TransportError(f"malformed message: {what} message has no header frame")
        header = self.unpack_header(frames[0])
        got = header.get("kind", kind)
        if got != kind:
            raise TransportError(f"malformed message: expected kind {kind!r} on the {kind} topic, got {_short(got)}")
        return header
