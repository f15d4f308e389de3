"""Processes by pid: whether one still runs (the shared-memory janitor, the stop tools, the tests), and
killing a pipeline started in a session of its own, every process of it (the tools and the tests)."""

from __future__ import annotations

import os
import signal
import subprocess


def running(pid: int) -> bool:
    """True while ``pid`` exists and has not exited: a zombie (exited, not yet reaped) is not running; a
    process of another user that we may not signal is."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group that ``proc`` leads (started with ``start_new_session=True``) if
    ``proc`` still runs, then reap ``proc`` (waits up to 5 s)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
