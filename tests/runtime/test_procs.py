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


def test_kill_group_kills_the_whole_session_and_reaps_its_leader() -> None:
    from perception.runtime.procs import kill_group

    leader = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
                               "print(c.pid, flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    members = [leader.pid, int(leader.stdout.readline())]  # the leader and the child it started
    assert all(running(p) for p in members)
    kill_group(leader)
    assert leader.returncode == -9
    deadline = time.monotonic() + 5
    while any(running(p) for p in members) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(running(p) for p in members)
    kill_group(leader)  # already gone: nothing to do
    leader.stdout.close()
