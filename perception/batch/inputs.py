"""What a batch is made of: the drives (paths, globs, list files), where each one's outputs go, and the
content hashes that tell a rerun which drives are already done.

Nothing here imports Ray: the driver and the drive tasks share it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from perception.errors import ConfigError

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20
_GLOB_CHARS = re.compile(r"[*?\[]")


def expand_inputs(items: Iterable[str], list_files: Iterable[str] = ()) -> list[str]:
    """The drives named on the command line, in order, each once.

    An item is a path (a file or folder: bag, MCAP, ROS 2 bag folder, video, image folder), a glob
    (``drives/**/*.bag``; ``**`` recurses) or ``@FILE``: a list file with one drive or glob per line
    (blank lines and ``#`` comments skipped; relative entries are taken from the list file's folder).
    A path that does not exist is kept (it is reported as a failed input); a glob that matches nothing
    and an unreadable list file are usage errors (:class:`ConfigError`).
    """
    out: list[str] = []
    queue = [(item, None) for item in items] + [("@" + f, None) for f in list_files]
    for item, base in queue:
        if item.startswith("@"):
            out.extend(expand_inputs(_read_list(Path(item[1:]))))
            continue
        text = str(Path(base) / item) if base and not os.path.isabs(item) else item
        if _GLOB_CHARS.search(text):
            found = sorted(glob.glob(text, recursive=True))
            if not found:
                raise ConfigError(f"{item!r} matches no file")
            out.extend(found)
        else:
            out.append(text)
    seen: set[str] = set()
    unique = []
    for p in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the list file {str(path)!r}: {exc.strerror or exc}") from exc
    items = [ln.strip() for ln in lines]
    return [it if os.path.isabs(it) else str(path.parent / it) for it in items if it and not it.startswith("#")]


def output_name(drive: str) -> str:
    """The folder of a drive's outputs under ``--out``: its name and a short hash of its absolute path
    (two drives called ``front.bag`` in different folders do not collide; the same drive always maps to
    the same folder, which is what lets a rerun find its earlier outputs)."""
    p = Path(drive)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", p.name.removesuffix(p.suffix) or p.name or "drive")[:60]
    digest = hashlib.sha256(os.path.abspath(drive).encode()).hexdigest()[:8]
    return f"{stem}-{digest}"


# ------------------------------------------------------------------------------------- hashes
def hash_path(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and contents, in sorted order)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0")
            _feed(h, f)
    else:
        _feed(h, p)
    return h.hexdigest()


def _feed(h, path: Path) -> None:
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)


def hash_json(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What a drive's outputs were made from: the input's content, the configuration and the model."""

    input_sha256: str
    config_sha256: str
    model_sha256: str

    def as_dict(self) -> dict:
        return {"input_sha256": self.input_sha256, "config_sha256": self.config_sha256,
                "model_sha256": self.model_sha256}


def output_files(folder: Path) -> dict[str, str]:
    """Every file under a drive's output folder but the manifest, relative name -> sha256."""
    return {str(f.relative_to(folder)): hash_path(f) for f in sorted(folder.rglob("*"))
            if f.is_file() and f.name != MANIFEST and ".partial" not in f.relative_to(folder).parts}


def write_manifest(folder: Path, fingerprint: Fingerprint, *, frames: int) -> None:
    """Written last, once every output is complete: its presence (with matching hashes) is what marks
    the drive as done."""
    data = {"version": MANIFEST_VERSION, **fingerprint.as_dict(), "frames": frames,
            "outputs": output_files(folder)}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder / MANIFEST)


def completed(folder: Path, fingerprint: Fingerprint) -> dict | None:
    """The manifest when the folder holds complete outputs made from the same input, configuration and
    model (every output present with the hash it was written with), else None."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
        return None
    if any(data.get(k) != v for k, v in fingerprint.as_dict().items()):
        return None
    outputs = data.get("outputs")
    if not isinstance(outputs, dict) or not outputs or output_files(folder) != outputs:
        return None
    return data
