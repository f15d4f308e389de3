"""Whether a process is still running, for the supervisor, the shared-memory janitor and the stop tools."""

from __future__ import annotations

import os


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
