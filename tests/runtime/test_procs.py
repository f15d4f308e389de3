"""perception.runtime.procs.running: live, exited-but-unreaped (zombie) and reaped processes."""

from __future__ import annotations

import subprocess
import sys
import time

from perception.runtime.procs import running


def test_running_tells_live_zombie_and_gone_apart() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert running(proc.pid)
    finally:
        proc.kill()
    deadline = time.monotonic() + 5
    while running(proc.pid) and time.monotonic() < deadline:  # killed, not yet reaped: a zombie
        time.sleep(0.01)
    assert not running(proc.pid)
    proc.wait()
    assert not running(proc.pid)
    assert running(1)  # init: another user's process may not be signalled, but it runs
