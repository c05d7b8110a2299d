"""The flows' console scripts: a command line generated from each flow's own signature (cyclopts,
the CLI library Prefect itself is built on, reads pydantic models into dotted options such as
`--train.epochs 5` or whole JSON such as `--train '{"epochs": 5}'`), so a parameter is declared
once, in the flow. The command runs the flow locally, prints its result or why it failed, and leaves
nothing running behind when the process is stopped or killed."""

from __future__ import annotations

import functools
import inspect
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import cyclopts

from tasks.network import refused_login


def start_orphan_reaper() -> subprocess.Popen:
    """`flows.reaper` stops this process's children if it dies without cleaning up (SIGKILL)."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.reaper", str(os.getpid())], stdin=subprocess.PIPE, start_new_session=True
    )


def _exit_on_signal(signum: int, _frame: Any) -> None:
    """A normal exit, so atexit handlers (Prefect stops its temporary server there) run."""
    raise SystemExit(128 + signum)


def prefect_refusal(api_url: str | None, auth_string: str | None) -> str | None:
    """Why the Prefect server at `api_url` refuses this client (401: a missing or wrong
    PREFECT_API_AUTH_STRING), or None. Said in one line before the flow starts, instead of the stack
    trace Prefect's client ends with at its first call."""
    if not api_url or refused_login(f"{api_url.rstrip('/')}/admin/version", auth_string) is None:
        return None  # also when unreachable: Prefect's own client says so, with its retries
    given = "the credentials in PREFECT_API_AUTH_STRING were refused" if auth_string else "no credentials"
    return (
        f"the Prefect server at {api_url} answered 401 ({given}): set PREFECT_API_AUTH_STRING "
        "(`clothes-stack env` on the stack's machine prints it)"
    )


def run_and_report(flow: Any, *args: Any, **parameters: Any) -> int:
    """Exit status 0 with the result as JSON on stdout, or 1 with the failure message on stderr.

    SIGTERM ends the process like Ctrl-C does: the flow run ends Crashed, the MLflow run KILLED and
    Prefect's temporary server is stopped. Prefect swaps in its own handler while the flow runs and
    hands the signal back to this one afterwards."""
    refused = prefect_refusal(os.environ.get("PREFECT_API_URL"), os.environ.get("PREFECT_API_AUTH_STRING"))
    if refused:
        print(f"{flow.name}: {refused}", file=sys.stderr)
        return 2
    start_orphan_reaper()  # its pipe closes when this process exits, however it exits
    signal.signal(signal.SIGTERM, _exit_on_signal)
    state = flow(*args, **parameters, return_state=True)
    if state.is_failed():
        print(f"{flow.name} failed: {state.message}", file=sys.stderr)
        return 1
    print(json.dumps(state.result(), indent=2, default=str))
    return 0


def flow_app(flow: Any, prog: str, run: Callable[..., int] | None = None) -> cyclopts.App:
    """`prog`'s command line: the parameters of `flow`'s function, documented by their pydantic
    descriptions. `run(flow, *args, **kwargs)` replaces `run_and_report` (e.g. to pick a task runner)."""
    app = cyclopts.App(name=prog, help=flow.description, result_action="return_value", version_flags=[])

    @functools.wraps(flow.fn)
    def command(*args: Any, **kwargs: Any) -> int:
        return (run or run_and_report)(flow, *args, **kwargs)

    # Options only: a stray word (`--container.enabled false`, where the flag takes no value) is refused
    # as unused instead of being read as the first parameter's value.
    signature = inspect.signature(flow.fn)
    command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()]
    )

    app.default(command)
    return app


def console_script(app: cyclopts.App) -> Callable[..., int]:
    def main(argv: list[str] | None = None) -> int:
        result = app(sys.argv[1:] if argv is None else argv)
        return result if isinstance(result, int) else 0

    return main
