"""Helpers for end-to-end pipeline tests: real processes, real sockets, real files."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from perception.runtime.procs import kill_group as kill_tree  # noqa: F401 (the tests' name)

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_video(path: Path, *, frames: int = 30, size: tuple[int, int] = (160, 120), fps: float = 30.0) -> Path:
    """A small real mp4 whose frames differ (a moving bar over a two-tone 'road' scene)."""
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for i in range(frames):
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 2] = (200, 160, 120)
        img[h // 2 :] = (90, 90, 90)
        x = (i * 5) % w
        img[h // 3 : h // 3 + 20, x : x + 15] = (30, 30, 200)
        vw.write(img)
    vw.release()
    return path


def write_config(path: Path, *, model: Path, source: str, port: int, source_extra: dict | None = None,
                 **sections) -> Path:
    cfg = {
        "source": {"uri": source, **(source_extra or {})},
        "model": {"path": str(model), "threads": 1},
        "postprocess": {"upsample": "bilinear", "panoptic": True},
        "publish": {"address": f"tcp://127.0.0.1:{port}", "preview": "none"},
        "runtime": {"progress": False, "status_interval_s": 0.5},
    }
    for k, v in sections.items():
        cfg.setdefault(k, {})
        if isinstance(v, dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_pipeline(config: Path, *extra: str, verbose: bool = True) -> subprocess.Popen:
    args = [sys.executable, "-m", "perception.cli"] + (["-v"] if verbose else []) + ["run", str(config), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)


def shm_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("perception_*")}


def stage_pids(stderr_text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"started stage (\w+) pid (\d+)", stderr_text)}




class StderrReader:
    """Collects a process's stderr on a thread so tests can wait for a line without blocking."""

    def __init__(self, proc: subprocess.Popen) -> None:
        import threading

        self.lines: list[str] = []
        self._t = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self._t.start()

    def _run(self, proc) -> None:
        for line in proc.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text)
            if m:
                return m
            time.sleep(0.05)
        return None


def receive_all(sub, proc: subprocess.Popen, *, limit: int, timeout_s: float = 90.0) -> list:
    """Messages from ``sub`` until ``limit`` arrived, the pipeline ``proc`` exited (then what is still
    queued is collected), or ``timeout_s``."""
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < limit and time.monotonic() < deadline:
        msg = sub.recv(timeout_s=0.5)
        if msg is not None:
            got.append(msg)
        elif proc.poll() is not None:
            while (msg := sub.recv(timeout_s=0.2)) is not None:
                got.append(msg)
            break
    return got


def shm_name(stderr_text: str) -> str:
    """The shared-memory segment a pipeline created (from its -v log)."""
    m = re.search(r"shared memory (perception_\w+):", stderr_text)
    assert m, stderr_text
    return m.group(1)
