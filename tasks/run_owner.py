"""Who owns a RUNNING MLflow run, how it ends when its process is stopped, and who ends it when its
process was killed outright.

A run records the host, pid and start time of the process that owns it. SIGTERM/SIGINT end it
KILLED (the flow raises through it); SIGKILL leaves it RUNNING, so each pipeline run first looks for
RUNNING runs owned by a process of this host that no longer exists and ends them FAILED (tag
`ended_by`), with their Prefect flow run set to Crashed. Runs owned by other hosts are left alone:
only their own host can tell whether they are still alive.
"""

from __future__ import annotations

import logging
import os
import socket
from uuid import UUID

import psutil
from mlflow import MlflowClient
from prefect.exceptions import TerminationSignal

log = logging.getLogger(__name__)
HOST, PID, STARTED = "owner.host", "owner.pid", "owner.started"


def owner_tags() -> dict[str, str]:
    """This process, identified so that a reused pid is not mistaken for it."""
    return {HOST: socket.gethostname(), PID: str(os.getpid()), STARTED: f"{psutil.Process().create_time():.2f}"}


def owner_alive(tags: dict[str, str]) -> bool | None:
    """None when the owner is unknown or on another host."""
    if tags.get(HOST) != socket.gethostname() or PID not in tags:
        return None
    try:
        process = psutil.Process(int(tags[PID]))
        return f"{process.create_time():.2f}" == tags.get(STARTED)
    except (psutil.NoSuchProcess, ValueError):
        return False


def end_status(exc: BaseException) -> str:
    """KILLED when someone stopped the run (Ctrl-C, SIGTERM, a cancelled deployment), else FAILED."""
    return "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit | TerminationSignal) else "FAILED"


def end_orphaned_runs(experiment_ids: list[str]) -> list[str]:
    """End RUNNING runs whose owning process on this host is gone; return their ids."""
    client = MlflowClient()
    ended = []
    for run in client.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=500):
        tags = run.data.tags
        if owner_alive(tags) is not False:
            continue
        reason = f"process {tags[PID]} on {tags[HOST]} ended without closing the run (killed)"
        client.set_tag(run.info.run_id, "ended_by", f"next pipeline run: {reason}")
        client.set_terminated(run.info.run_id, "FAILED")
        crash_flow_run(tags.get("prefect.flow_run_id"), reason)
        log.warning("ended orphaned MLflow run %s: %s", run.info.run_id, reason)
        ended.append(run.info.run_id)
    return ended


def crash_flow_run(flow_run_id: str | None, reason: str) -> None:
    """Best effort: the Prefect record of a killed run says Crashed instead of Running forever."""
    if not flow_run_id:
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(flow_run_id, Crashed(message=reason), force=True)
    except Exception as exc:  # an unknown id (another Prefect database) is not this run's problem
        log.info("could not mark flow run %s crashed: %s", flow_run_id, exc)
