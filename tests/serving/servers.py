"""The production server as the serving tests start it: a real gunicorn on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tasks.network import free_port, wait_until_ready


@dataclass
class RunningServer:
    port: int
    process: subprocess.Popen
    output: str = ""  # what it printed, once stopped

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def running_server(model_root: Path, env: dict[str, str] | None = None, **settings: str) -> Iterator[RunningServer]:
    """`python -m serving` (gunicorn, 2 workers) over `model_root` on a free loopback port, with
    `MLOPS_SERVE_<SETTING>` from `settings`; stopped with SIGTERM as Docker stops it."""
    serve = {"host": "127.0.0.1", "port": str(free_port()), "workers": "2", **settings}
    environment = {**os.environ, **(env or {}), **{f"MLOPS_SERVE_{k.upper()}": v for k, v in serve.items()}}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model-root", str(model_root)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = RunningServer(int(serve["port"]), process)
    try:
        wait_until_ready(running.base, timeout=60, is_alive=lambda: process.poll() is None)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        running.output, _ = process.communicate(timeout=30)
