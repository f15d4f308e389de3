"""Start and kill a real RTSP server (:mod:`tests.sources.rtsp_server_main`) on 127.0.0.1 for live tests.

The server runs under the system Python with Debian's GStreamer RTSP server; where that is not
installed, :func:`rtsp_server_missing` says why and the tests skip. ``.ci/run`` installs it with::

    apt-get install -y --no-install-recommends gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \\
        gstreamer1.0-plugins-good python3-gi
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from pathlib import Path

SYSTEM_PYTHON = os.environ.get("PERCEPTION_TEST_SYSTEM_PYTHON", "/usr/bin/python3")
SCRIPT = Path(__file__).with_name("rtsp_server_main.py")


@functools.cache
def rtsp_server_missing() -> str | None:
    """None when the RTSP server can run here, else why not (a skip reason)."""
    if not shutil.which(SYSTEM_PYTHON):
        return f"no system Python at {SYSTEM_PYTHON}"
    try:
        out = subprocess.run([SYSTEM_PYTHON, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run the RTSP server: {exc}"
    if out.returncode != 0:
        return f"GStreamer RTSP server not installed ({(out.stdout + out.stderr).strip()[-200:]})"
    return None


class RtspServer:
    """A GStreamer RTSP server process serving ``rtsp://127.0.0.1:PORT/test``; ``kill()`` and ``start()``
    make it go away and come back on the same port."""

    def __init__(self, port: int, *, path: str = "test") -> None:
        self.port = port
        self.url = f"rtsp://127.0.0.1:{port}/{path}"
        self._path = path
        self._proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self, timeout_s: float = 20.0) -> None:
        self._proc = subprocess.Popen([SYSTEM_PYTHON, str(SCRIPT), str(self.port), self._path],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + timeout_s
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if line.strip() != "ready" or time.monotonic() > deadline:
            self.kill()
            raise RuntimeError(f"RTSP server did not start on port {self.port}: {line.strip()!r}")

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc is not None and proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
