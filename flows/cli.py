"""What the flows' console scripts share: run the flow locally, print its result or why it failed, and
leave nothing running behind when the process is stopped or killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

# Run as a separate process: when the CLI dies without cleaning up (SIGKILL, OOM killer), its children
# (Prefect's temporary API server, Dask workers) would run on forever. This watches the CLI through a
# pipe, remembers its descendants, and stops them once the pipe closes. Nothing in Prefect or the
# standard library does this (PR_SET_PDEATHSIG can only be set by the child itself).
REAPER = """
import sys, time, psutil
parent = psutil.Process(int(sys.argv[1]))
me = psutil.Process()
known = {}
import select
while True:
    readable, _, _ = select.select([sys.stdin], [], [], 1.0)
    if readable and not sys.stdin.buffer.read1(1):
        break  # the parent is gone (its end of the pipe closed)
    try:
        known.update({c.pid: c for c in parent.children(recursive=True) if c.pid != me.pid})
    except psutil.NoSuchProcess:
        break
alive = [p for p in known.values() if p.is_running()]
for process in alive:
    try:
        process.terminate()
    except psutil.NoSuchProcess:
        pass
gone, alive = psutil.wait_procs(alive, timeout=5)
for process in alive:
    process.kill()
"""


def start_orphan_reaper() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", REAPER, str(os.getpid())], stdin=subprocess.PIPE, start_new_session=True
    )


def _exit_on_signal(signum: int, _frame: Any) -> None:
    """A normal exit, so atexit handlers (Prefect stops its temporary server there) run."""
    raise SystemExit(128 + signum)


def run_and_report(flow: Any, **parameters: Any) -> int:
    """Exit status 0 with the result as JSON on stdout, or 1 with the failure message on stderr.

    SIGTERM ends the process like Ctrl-C does: the flow run ends Crashed, the MLflow run KILLED and
    Prefect's temporary server is stopped. Prefect swaps in its own handler while the flow runs and
    hands the signal back to this one afterwards."""
    start_orphan_reaper()  # its pipe closes when this process exits, however it exits
    signal.signal(signal.SIGTERM, _exit_on_signal)
    state = flow(**parameters, return_state=True)
    if state.is_failed():
        print(f"{flow.name} failed: {state.message}", file=sys.stderr)
        return 1
    print(json.dumps(state.result(), indent=2, default=str))
    return 0
