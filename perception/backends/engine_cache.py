"""Self-describing TensorRT engine files and the cache that holds them (pure Python, no GPU needed).

A serialized TensorRT engine only runs on the TensorRT version and the GPU architecture that built
it, and it silently encodes the model, the precision and the input shapes it was built for. So every
engine this package writes carries its metadata **inside the same file**::

    offset 0   8 bytes   magic  b"PRCPTRT1"
    offset 8   8 bytes   JSON length N, unsigned little-endian
    offset 16  N bytes   UTF-8 JSON metadata (see :class:`EngineMetadata`)
    offset 16+N          the serialized engine, exactly ``engine_size`` bytes, sha256 ``engine_sha256``

A header rather than a sidecar JSON because the two can then never be separated or go out of step
(copying one file to a Jetson copies both; a half-written file fails its size/sha256 check), the
same choice Ultralytics made for its ``.engine`` files. The price: ``trtexec --loadEngine`` cannot
read the file directly; :func:`read_engine_file` returns the raw engine bytes if you need them.

The cache key is the sha256 of the canonical JSON of every field of :class:`EngineRequest` that
changes the engine: the model card, the ONNX file's sha256, the TensorRT version, the GPU name and
compute capability, the precision, the shape profiles and the build options. Anything else (file
paths, the timing-cache file, the creation time) is recorded but is not part of the key.

:meth:`EngineCache.load_checked` never returns an engine whose metadata differs from what was asked
for: it raises :class:`~perception.errors.EngineError` naming every differing field and the command
that rebuilds it. Truncated or corrupt files raise ``EngineError`` too.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perception.errors import EngineError

MAGIC = b"PRCPTRT1"
"""First 8 bytes of every engine file written by this package (format version 1)."""

FORMAT_VERSION = 1

_HEADER = struct.Struct("<8sQ")

MAX_METADATA_BYTES = 16 * 1024 * 1024
"""Largest JSON header accepted. Real headers are a few kB (the model card dominates); a bigger
length field means a corrupt or foreign file, and refusing it avoids reading gigabytes of garbage."""

ENGINE_SUFFIX = ".engine"

CACHE_ENV_VAR = "PERCEPTION_ENGINE_CACHE"
DEFAULT_CACHE_SUBDIR = Path("perception") / "engines"
"""Under the user's cache folder (XDG): see :func:`default_cache_dir`."""

KEY_FIELDS: tuple[str, ...] = (
    "card",
    "onnx_sha256",
    "tensorrt_version",
    "gpu_name",
    "compute_capability",
    "precision",
    "profiles",
    "build_options",
)
"""Fields of :class:`EngineRequest` that enter the cache key, in the order errors list them."""

ENVIRONMENT_FIELDS: tuple[str, ...] = (
    "card",
    "onnx_sha256",
    "tensorrt_version",
    "gpu_name",
    "compute_capability",
)
"""The fields an engine must match even when the caller names the engine file explicitly (and so
accepts whatever precision, shapes and options it was built with)."""


def default_cache_dir() -> Path:
    """``$PERCEPTION_ENGINE_CACHE`` if set and non-empty, else ``$XDG_CACHE_HOME/perception/engines``
    (``~/.cache/perception/engines`` when ``XDG_CACHE_HOME`` is unset): the same folder whatever the
    working directory, so a run started elsewhere finds the engines built before."""
    env = os.environ.get(CACHE_ENV_VAR, "").strip()
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / DEFAULT_CACHE_SUBDIR


@dataclass(frozen=True, slots=True, kw_only=True)
class ShapeProfile:
    """An optimisation profile for one input tensor: the smallest, typical and largest shape.

    Shapes are full tensor shapes in the network's axis order (``NCHW`` here), all positive ints.
    A fixed shape has ``min == opt == max``.
    """

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        shapes = (self.min, self.opt, self.max)
        if len({len(s) for s in shapes}) != 1:
            raise EngineError(f"profile {self.name!r}: min/opt/max have different ranks: {shapes}")
        for lo, mid, hi in zip(*shapes):
            if not (0 < lo <= mid <= hi):
                raise EngineError(
                    f"profile {self.name!r}: need 0 < min <= opt <= max on every axis, got "
                    f"min={self.min} opt={self.opt} max={self.max}"
                )

    @property
    def is_fixed(self) -> bool:
        return self.min == self.opt == self.max

    def describe(self) -> str:
        if self.is_fixed:
            return f"{self.name}{list(self.opt)}"
        return f"{self.name}[min {list(self.min)} opt {list(self.opt)} max {list(self.max)}]"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShapeProfile:
        return cls(
            name=str(data["name"]),
            min=tuple(int(v) for v in data["min"]),
            opt=tuple(int(v) for v in data["opt"]),
            max=tuple(int(v) for v in data["max"]),
        )


@dataclass(frozen=True, kw_only=True)
class EngineRequest:
    """Everything that determines a built engine; what a caller asks the cache for.

    ``card`` is the model card as its JSON dict (``ModelCard.model_dump(mode="json")``);
    ``compute_capability`` is ``"major.minor"`` (e.g. ``"8.7"`` for Orin); ``build_options`` holds
    only JSON scalars/lists (workspace, DLA core, GPU fallback, calibration fingerprint, ...).
    ``onnx_path`` is informational (used in rebuild hints) and not part of the key.
    """

    card: Mapping[str, Any]
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: tuple[ShapeProfile, ...]
    build_options: Mapping[str, Any] = field(default_factory=dict)
    onnx_path: str = field(default="", compare=False)

    @property
    def model_name(self) -> str:
        return str(self.card.get("name", "model"))

    def key_json(self) -> dict[str, Any]:
        """The JSON-able dict of the key fields (canonical input of :meth:`key`)."""
        return {
            "card": plain_json(self.card),
            "onnx_sha256": self.onnx_sha256,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "profiles": [p.to_json() for p in self.profiles],
            "build_options": plain_json(self.build_options),
        }

    def key(self) -> str:
        """20 hex characters of the sha256 of the canonical key JSON; equal requests, equal keys."""
        canonical = json.dumps(self.key_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:20]

    def to_json(self) -> dict[str, Any]:
        data = self.key_json()
        data["onnx_path"] = self.onnx_path
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EngineRequest:
        return cls(
            card=dict(data["card"]),
            onnx_sha256=str(data["onnx_sha256"]),
            tensorrt_version=str(data["tensorrt_version"]),
            gpu_name=str(data["gpu_name"]),
            compute_capability=str(data["compute_capability"]),
            precision=str(data["precision"]),
            profiles=tuple(ShapeProfile.from_json(p) for p in data["profiles"]),
            build_options=dict(data.get("build_options", {})),
            onnx_path=str(data.get("onnx_path", "")),
        )

    def rebuild_command(self) -> str:
        """The ``perception build-engine`` command line that builds an engine for this request."""
        parts = ["perception build-engine", self.onnx_path or "MODEL.onnx", f"--precision {self.precision}"]
        for profile in self.profiles:
            if len(profile.opt) == 4:
                if profile.is_fixed:
                    parts.append(f"--batch {profile.opt[0]} --input-size {profile.opt[3]}x{profile.opt[2]}")
                else:
                    parts.append(
                        f"--min-batch {profile.min[0]} --opt-batch {profile.opt[0]} --max-batch {profile.max[0]} "
                        f"--min-size {profile.min[3]}x{profile.min[2]} --opt-size {profile.opt[3]}x{profile.opt[2]} "
                        f"--max-size {profile.max[3]}x{profile.max[2]}"
                    )
        opts = self.build_options
        if opts.get("workspace_mb") is not None:
            parts.append(f"--workspace-mb {opts['workspace_mb']}")
        if opts.get("dla_core") is not None:
            parts.append(f"--dla {opts['dla_core']}")
            parts.append("--gpu-fallback" if opts.get("gpu_fallback", True) else "--no-gpu-fallback")
        if self.precision == "int8":
            parts.append("--calib-dir DIR")
        return " ".join(parts)


@dataclass(frozen=True, kw_only=True)
class EngineMetadata:
    """What an engine file says about itself: the request it answers plus provenance."""

    request: EngineRequest
    created_utc: str
    """ISO 8601 UTC time the engine was built, e.g. ``"2026-11-22T03:10:00Z"``."""
    engine_size: int
    engine_sha256: str
    format_version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Free-form provenance (tool version, build seconds, timing-cache path ...); not compared."""

    @property
    def key(self) -> str:
        return self.request.key()

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "key": self.key,
            "created_utc": self.created_utc,
            "engine_size": self.engine_size,
            "engine_sha256": self.engine_sha256,
            "request": self.request.to_json(),
            "extra": plain_json(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EngineMetadata:
        return cls(
            request=EngineRequest.from_json(data["request"]),
            created_utc=str(data["created_utc"]),
            engine_size=int(data["engine_size"]),
            engine_sha256=str(data["engine_sha256"]),
            format_version=int(data["format_version"]),
            extra=dict(data.get("extra", {})),
        )


# --- file format ------------------------------------------------------------------------------


def encode_engine_file(metadata: EngineMetadata, engine: bytes | bytearray | memoryview) -> bytes:
    """The bytes of an engine file: header, metadata JSON, engine. Pure."""
    payload = json.dumps(metadata.to_json(), sort_keys=True, indent=1).encode("utf-8")
    return _HEADER.pack(MAGIC, len(payload)) + payload + bytes(engine)


def make_metadata(
    request: EngineRequest,
    engine: bytes | bytearray | memoryview,
    *,
    created_utc: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> EngineMetadata:
    """Metadata for ``engine`` built for ``request`` (size and sha256 computed here)."""
    data = bytes(engine)
    return EngineMetadata(
        request=request,
        created_utc=created_utc or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        engine_size=len(data),
        engine_sha256=hashlib.sha256(data).hexdigest(),
        extra=dict(extra or {}),
    )


def write_engine_file(
    path: str | Path,
    request: EngineRequest,
    engine: bytes | bytearray | memoryview,
    *,
    extra: Mapping[str, Any] | None = None,
) -> EngineMetadata:
    """Write a self-describing engine file atomically (temporary file + rename); returns its metadata."""
    target = Path(path)
    metadata = make_metadata(request, engine, extra=extra)
    blob = encode_engine_file(metadata, engine)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EngineError(f"cannot write engine file {target}: {exc}") from exc
    return metadata


def _read_header(fh, path: Path, file_size: int) -> EngineMetadata:
    head = fh.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EngineError(f"{path} is not a perception engine file: only {file_size} bytes (truncated?)")
    magic, length = _HEADER.unpack(head)
    if magic != MAGIC:
        raise EngineError(
            f"{path} is not a perception engine file (magic {magic!r}, expected {MAGIC!r}); "
            "engines must be built with `perception build-engine` so that they carry their metadata"
        )
    if length > MAX_METADATA_BYTES or _HEADER.size + length > file_size:
        raise EngineError(f"{path} is corrupt or truncated: metadata length {length} but file has {file_size} bytes")
    payload = fh.read(length)
    try:
        data = json.loads(payload.decode("utf-8"))
        metadata = EngineMetadata.from_json(data)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, EngineError) as exc:
        raise EngineError(f"{path} has corrupt metadata ({type(exc).__name__}: {exc}); delete it and rebuild") from exc
    if metadata.format_version != FORMAT_VERSION:
        raise EngineError(
            f"{path} uses engine file format {metadata.format_version}, this version reads {FORMAT_VERSION}; rebuild it"
        )
    return metadata


def read_metadata(path: str | Path) -> EngineMetadata:
    """Read only the header of an engine file (cheap: does not read or verify the engine bytes)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return _read_header(fh, p, os.fstat(fh.fileno()).st_size)
    except FileNotFoundError as exc:
        raise EngineError(f"engine file not found: {p}") from exc
    except OSError as exc:
        raise EngineError(f"cannot read engine file {p}: {exc}") from exc


def read_engine_file(path: str | Path) -> tuple[EngineMetadata, bytes]:
    """Read and verify an engine file: header, metadata, engine size and sha256.

    Raises :class:`EngineError` for a missing, foreign, truncated or corrupt file.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            metadata = _read_header(fh, p, size)
            engine = fh.read()
    except FileNotFoundError as exc:
        raise EngineError(f"engine file not found: {p}") from exc
    except OSError as exc:
        raise EngineError(f"cannot read engine file {p}: {exc}") from exc
    if len(engine) != metadata.engine_size:
        raise EngineError(
            f"{p} is truncated or corrupt: header says {metadata.engine_size} engine bytes, file holds {len(engine)}; "
            "delete it and rebuild"
        )
    if hashlib.sha256(engine).hexdigest() != metadata.engine_sha256:
        raise EngineError(f"{p} is corrupt: the engine's sha256 does not match its header; delete it and rebuild")
    return metadata, engine


# --- comparison -------------------------------------------------------------------------------


def describe_differences(
    built: EngineRequest, expected: EngineRequest, *, fields: Sequence[str] = KEY_FIELDS
) -> list[str]:
    """One human sentence per field of ``fields`` where ``built`` (the engine) differs from ``expected``.

    Empty list when they match. Pure.
    """
    out: list[str] = []
    built_json, expected_json = built.key_json(), expected.key_json()
    for name in fields:
        if name not in KEY_FIELDS:
            raise EngineError(f"unknown engine field {name!r}; known: {KEY_FIELDS}")
        a = built_json[name]
        b = expected_json[name]
        if a == b:
            continue
        if name == "tensorrt_version":
            out.append(f"tensorrt_version: engine built for TensorRT {a} but {b} is installed")
        elif name == "gpu_name":
            out.append(f"gpu_name: engine built on a {a!r} but this GPU is a {b!r}")
        elif name == "compute_capability":
            out.append(f"compute_capability: engine built for compute capability {a} but this GPU has {b}")
        elif name == "onnx_sha256":
            out.append(
                f"onnx_sha256: engine built from an ONNX file with sha256 {a[:12]}… but "
                f"{expected.onnx_path or 'the model'} has {b[:12]}…"
            )
        elif name == "card":
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            out.append(f"card: engine built with a different model card (differs in: {', '.join(keys)})")
        elif name == "precision":
            out.append(f"precision: engine built at {a} but {b} was asked for")
        elif name == "profiles":
            shapes_a = ", ".join(p.describe() for p in built.profiles) or "(none)"
            shapes_b = ", ".join(p.describe() for p in expected.profiles) or "(none)"
            out.append(f"profiles: engine built for input shapes {shapes_a} but {shapes_b} was asked for")
        else:  # build_options
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            diffs = ", ".join(f"{k}={a.get(k)!r} (asked {b.get(k)!r})" for k in keys)
            out.append(f"build_options: engine built with {diffs}")
    return out


# --- the cache --------------------------------------------------------------------------------


class EngineCache:
    """A directory of self-describing engine files named ``<model>_<precision>_<key>.engine``.

    ``lookup`` finds the file for a request by its key; ``load_checked`` reads it and refuses it
    unless its metadata matches; ``store`` writes atomically, so concurrent builders never leave a
    half-written file under the final name. The directory is created on first ``store``.
    """

    def __init__(self, *, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path_for(self, request: EngineRequest) -> Path:
        return self.directory / f"{_safe(request.model_name)}_{request.precision}_{request.key()}{ENGINE_SUFFIX}"

    def lookup(self, request: EngineRequest) -> Path | None:
        """The cached engine file for ``request``, or ``None`` when none was built yet."""
        path = self.path_for(request)
        return path if path.is_file() else None

    def store(
        self,
        request: EngineRequest,
        engine: bytes | bytearray | memoryview,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``engine`` (the raw serialized TensorRT engine) for ``request``; returns its path."""
        path = self.path_for(request)
        write_engine_file(path, request, engine, extra=extra)
        return path

    def load_checked(
        self,
        path: str | Path,
        expected: EngineRequest,
        *,
        fields: Sequence[str] = KEY_FIELDS,
    ) -> tuple[EngineMetadata, bytes]:
        """Read ``path`` and return ``(metadata, engine_bytes)`` only if it matches ``expected``.

        ``fields`` selects what must match (all key fields by default; :data:`ENVIRONMENT_FIELDS`
        for an engine file the user named explicitly). Raises :class:`EngineError` naming each
        differing field and the command that rebuilds the engine; also for corrupt files.
        """
        return load_checked(path, expected, fields=fields)

    def explain_miss(self, request: EngineRequest) -> list[str]:
        """Why no cached engine fits: for each other engine of the same model, what differs.

        For log lines such as "rebuilding: cached engine X was built for TensorRT 10.3 ...".
        Unreadable files are reported, not raised.
        """
        lines: list[str] = []
        for path in self.entries(model_name=request.model_name):
            try:
                metadata = read_metadata(path)
            except EngineError as exc:
                lines.append(f"{path.name}: unreadable ({exc})")
                continue
            diffs = describe_differences(metadata.request, request)
            if diffs:
                lines.append(f"{path.name}: " + "; ".join(diffs))
        return lines

    def find_matching(
        self, request: EngineRequest, *, ignore_build_options: Sequence[str] = ()
    ) -> list[tuple[Path, EngineMetadata]]:
        """Cached engines that match ``request`` in every key field except the named
        ``build_options`` entries, newest first. Unreadable files are skipped.

        Used to find an INT8 engine built offline (``perception build-engine --calib-dir ...``)
        when the runtime itself has no calibration data: the calibration fingerprint is the one
        option it cannot know.
        """
        ignored = set(ignore_build_options)

        def trimmed(req: EngineRequest) -> EngineRequest:
            opts = {k: v for k, v in req.build_options.items() if k not in ignored}
            return EngineRequest(**{**{f: getattr(req, f) for f in KEY_FIELDS}, "build_options": opts})

        want = trimmed(request)
        found: list[tuple[Path, EngineMetadata]] = []
        for path in self.entries(model_name=request.model_name):
            try:
                metadata = read_metadata(path)
            except EngineError:
                continue
            if not describe_differences(trimmed(metadata.request), want):
                found.append((path, metadata))
        return sorted(found, key=lambda item: item[1].created_utc, reverse=True)

    def entries(self, *, model_name: str | None = None) -> list[Path]:
        """Engine files in the cache (optionally only those of one model), sorted by name."""
        if not self.directory.is_dir():
            return []
        pattern = f"{_safe(model_name)}_*{ENGINE_SUFFIX}" if model_name else f"*{ENGINE_SUFFIX}"
        return sorted(p for p in self.directory.glob(pattern) if p.is_file())


def load_checked(
    path: str | Path, expected: EngineRequest, *, fields: Sequence[str] = KEY_FIELDS
) -> tuple[EngineMetadata, bytes]:
    """Module-level form of :meth:`EngineCache.load_checked` (for engine files outside a cache)."""
    metadata, engine = read_engine_file(path)
    diffs = describe_differences(metadata.request, expected, fields=fields)
    if diffs:
        raise EngineError(
            f"engine {path} does not match this setup:\n  - "
            + "\n  - ".join(diffs)
            + f"\nrebuild with: {expected.rebuild_command()}"
        )
    return metadata, engine


# --- helpers ----------------------------------------------------------------------------------


def file_sha256(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's contents, read in chunks (models can be large)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(chunk_bytes), b""):
                h.update(chunk)
    except OSError as exc:
        raise EngineError(f"cannot read {path} to hash it: {exc}") from exc
    return h.hexdigest()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def plain_json(value: Any) -> Any:
    """Recursively turn mappings/sequences into plain JSON types (tuples -> lists) for hashing."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_json(dataclasses.asdict(value))
    return value


__all__ = [
    "CACHE_ENV_VAR",
    "DEFAULT_CACHE_SUBDIR",
    "ENVIRONMENT_FIELDS",
    "KEY_FIELDS",
    "MAGIC",
    "EngineCache",
    "EngineMetadata",
    "EngineRequest",
    "ShapeProfile",
    "default_cache_dir",
    "describe_differences",
    "encode_engine_file",
    "file_sha256",
    "load_checked",
    "make_metadata",
    "plain_json",
    "read_engine_file",
    "read_metadata",
    "write_engine_file",
]
