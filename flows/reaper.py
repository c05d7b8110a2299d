"""`python -m flows.reaper <pid>`: stop a process's children once it is gone without cleaning up.

A console script killed outright (SIGKILL, the OOM killer) runs no clean-up, and its children
(Prefect's temporary API server, Dask workers) would run on forever. This runs beside it, reads a
pipe whose other end only that process holds, remembers its descendants while it lives, and stops
them once the pipe closes. Nothing in Prefect or the standard library does this: PR_SET_PDEATHSIG
can only be set by the child itself, and these children are started by libraries.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys

import psutil


def watch(parent_pid: int, poll_seconds: float = 1.0) -> None:
    parent, me = psutil.Process(parent_pid), psutil.Process()
    known: dict[int, psutil.Process] = {}
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], poll_seconds)
        if readable and not os.read(sys.stdin.fileno(), 1):
            break  # the parent's end of the pipe closed: it is gone
        try:
            known.update({c.pid: c for c in parent.children(recursive=True) if c.pid != me.pid})
        except psutil.NoSuchProcess:
            break
    alive = [p for p in known.values() if p.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _gone, alive = psutil.wait_procs(alive, timeout=5)
    for process in alive:
        process.kill()


if __name__ == "__main__":
    watch(int(sys.argv[1]))
