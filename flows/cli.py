"""What the flows' console scripts share: run the flow locally, print its result or why it failed, and
leave nothing running behind when the process is stopped or killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any


def start_orphan_reaper() -> subprocess.Popen:
    """`flows.reaper` stops this process's children if it dies without cleaning up (SIGKILL)."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.reaper", str(os.getpid())], stdin=subprocess.PIPE, start_new_session=True
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
