"""What the control endpoint's requests do to a running pipeline (see :mod:`perception.runtime.control`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from perception.config import STREAM_ID, SourceConfig, resolve_stream
from perception.runtime.streams import describe

if TYPE_CHECKING:
    from perception.runtime.supervisor import _Run


def handle_request(run: _Run, envelope: list[bytes], req: dict) -> dict | None:
    """The reply to ``req``, or None when it comes later (an ``add``, once its source has opened)."""
    cmd = req.get("cmd")
    if cmd == "list":
        return {"ok": True, "streams": [describe(s, run.counters) for s in run.streams]}
    if cmd == "add":
        return _add(run, envelope, req.get("source"))
    if cmd == "remove":
        return _remove(run, req.get("id"))
    return {"ok": False, "error": f"unknown cmd {cmd!r}: use list, add or remove"}


def _add(run: _Run, envelope: list[bytes], source) -> dict | None:
    if not isinstance(source, dict) or not source.get("uri"):
        return {"ok": False, "error": "add needs a 'source' object with at least a 'uri'"}
    try:
        cfg = SourceConfig.model_validate(source)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return {"ok": False, "error": f"bad source: {errs}"}
    cfg = resolve_stream(cfg, index=0, mode=run.cfg.mode)
    if source.get("camera_id") is None:
        cfg = cfg.model_copy(update={"camera_id": run.streams.next_id()})
    if not STREAM_ID.fullmatch(cfg.camera_id):
        return {"ok": False, "error": f"stream id {cfg.camera_id!r}: use letters, digits, '-' and '_' only"}
    try:
        stream = run.add_stream(cfg)
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    run.pending_adds[stream.number] = envelope
    return None


def _remove(run: _Run, camera_id) -> dict:
    stream = run.streams.by_id(camera_id) if isinstance(camera_id, str) else None
    if stream is None:
        running = ", ".join(s.camera_id for s in run.streams.active()) or "none"
        return {"ok": False, "error": f"no running stream {camera_id!r} (running: {running})"}
    run.remove_stream(stream, "removed")
    return {"ok": True}
