"""`clothes-stack up|down|status|mlflow-ui|screenshots`: the stack users run, on 127.0.0.1.

up: Prefect server (SQLite under the state directory), the `clothes-process` work pool, every
deployment of prefect.yaml (`prefect deploy --all`), a process worker, and an MLflow tracking
server/UI on the same store as `make run`, serving the artifacts too (flows the worker runs log
through it over HTTP, so workers on other machines need no shared directory). down: stops exactly
the processes `up` started (pid files).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ops.screenshots import ScreenshotError, take_screenshots
from tasks.release.docker_engine import docker_client, retire
from tasks.release.targets.docker import production_containers
from tasks.release.targets.swarm import production_service, swarm_manager
from tasks.settings import PROJECT_DIR, Settings

WORK_POOL = "clothes-process"


@dataclass(frozen=True)
class Stack:
    state_dir: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000
    host: str = "127.0.0.1"
    # Built once: the stores, the database and the production deployment the stack works with.
    settings: Settings = field(default_factory=Settings, compare=False)

    @property
    def prefect_api(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    def env(self) -> dict[str, str]:
        """What every stack process (and the flows the worker runs) sees."""
        state = self.state_dir.resolve()
        return {
            **os.environ,
            "PREFECT_HOME": str(state / "prefect"),
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": self.prefect_api,
            # `prefect deployment run --watch` shows a run's logs (e.g. which gate failed) only when the
            # server streams them; Prefect ships with both off.
            "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
            "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
            "CLOTHES_PROJECT_DIR": str(PROJECT_DIR),
            # Flows the worker runs log through the MLflow server, as workers on other machines do.
            "MLOPS_TRACKING_URI": self.mlflow_url,
            "KERAS_HOME": os.environ.get("KERAS_HOME", str(state / "keras")),
            "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR", str(state / "matplotlib")),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            # The UI needs no GenAI job runner (it starts half a dozen consumer processes).
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
            **(
                {"PREFECT_API_DATABASE_CONNECTION_URL": database}
                if (database := self.settings.tracking.prefect_database_url)
                else {}
            ),
        }

    def commands(self) -> dict[str, tuple[list[str], str | None]]:
        """name -> (command, health URL); the worker has no URL, its pid tells."""
        settings = self.settings  # the store `make run` writes
        python = sys.executable
        return {
            "prefect-server": (
                [python, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.prefect_port)],
                f"{self.prefect_api}/health",
            ),
            "mlflow": (
                [
                    python,
                    "-m",
                    "mlflow",
                    "server",
                    "--host",
                    self.host,
                    "--port",
                    str(self.mlflow_port),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    settings.tracking.backend_store_uri,
                    "--serve-artifacts",  # clients upload and download artifacts through the server
                    "--artifacts-destination",
                    settings.tracking.artifacts_dir.as_uri(),
                ],
                f"{self.mlflow_url}/health",
            ),
            "worker": ([python, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process"], None),
        }

    def pid_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"

    def running_pid(self, name: str) -> int | None:
        try:
            pid = int(self.pid_file(name).read_text())
        except (OSError, ValueError):
            return None
        with contextlib.suppress(ChildProcessError):  # reap it if this process started it (a zombie is not running)
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(url: str, name: str, stack: Stack, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(url):
            return
        if stack.running_pid(name) is None:
            raise RuntimeError(f"{name} exited; see {stack.state_dir / (name + '.log')}")
        time.sleep(0.5)
    raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s")


def start(stack: Stack, name: str) -> None:
    command, url = stack.commands()[name]
    if stack.running_pid(name):
        print(f"{name}: already running (pid {stack.running_pid(name)})")
        return
    print(f"{name}: starting" + (f", waiting for {url}" if url else ""), flush=True)
    started = time.monotonic()
    log = (stack.state_dir / f"{name}.log").open("ab")
    process = subprocess.Popen(
        command, env=stack.env(), cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: `down` stops it and its children, nothing else
    )  # fmt: skip
    stack.pid_file(name).write_text(str(process.pid))
    if url:
        wait_for(url, name, stack)
    print(f"{name}: started in {time.monotonic() - started:.0f} s (pid {process.pid})", flush=True)


def prefect_cli(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args], env=stack.env(), cwd=PROJECT_DIR, capture_output=True, text=True,
        check=check, timeout=300,
    )  # fmt: skip


def deploy(stack: Stack) -> None:
    """Work pool if missing, then every deployment of prefect.yaml (idempotent: schedules have slugs)."""
    print(f"deployments: work pool {WORK_POOL}, then `prefect deploy --all` of prefect.yaml", flush=True)
    if prefect_cli(stack, "work-pool", "inspect", WORK_POOL, check=False).returncode != 0:
        prefect_cli(stack, "work-pool", "create", WORK_POOL, "--type", "process")
    result = prefect_cli(stack, "--no-prompt", "deploy", "--all", check=False)
    if result.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    print("deployments: registered", flush=True)


def up(stack: Stack) -> None:
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    settings = stack.settings
    if settings.tracking.stack_db == "postgres":  # MLflow's and Prefect's databases, on a running cluster
        prefix = settings.tracking.postgres_prefix
        print(f"postgres: databases {prefix}mlflow and {prefix}prefect", flush=True)
        subprocess.run([str(PROJECT_DIR / "scripts" / "postgres.sh"), "up", prefix], check=True)
    start(stack, "prefect-server")
    start(stack, "mlflow")
    deploy(stack)
    start(stack, "worker")
    print(f"Prefect UI   {stack.prefect_api.removesuffix('/api')}\nMLflow UI    {stack.mlflow_url}")
    print(f"Use it:      export PREFECT_API_URL={stack.prefect_api}")


def down(stack: Stack, serving: bool = False) -> None:
    """Stop what `up` started. The production container is not part of the stack (the pipeline deployed
    it, and users' traffic may depend on it): it is stopped only with `serving`, else named as left running."""
    for name in reversed(list(stack.commands())):
        pid = stack.running_pid(name)
        if pid is None:
            stack.pid_file(name).unlink(missing_ok=True)
            continue
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while stack.running_pid(name) and time.monotonic() < deadline:
            time.sleep(0.2)
        if stack.running_pid(name):
            os.killpg(pid, signal.SIGKILL)
        stack.pid_file(name).unlink(missing_ok=True)
        print(f"{name}: stopped (pid {pid})")
    leave_or_stop_production(stack.settings, stop=serving)


def leave_or_stop_production(settings: Settings, stop: bool) -> None:
    """The production container (docker target) or service (swarm target): named as left running, or
    stopped with `stop`."""
    client = docker_client()
    if client is None:
        return
    where = f"http://{settings.deploy.host}:{settings.deploy.port}"
    running = [
        (f"production container {c.name}", lambda c=c: retire([c]))
        for c in production_containers(client, settings.deploy.name)
    ]
    service = production_service(client, settings.deploy.name) if swarm_manager(client) else None
    if service is not None:
        running.append((f"production service {service.name}", service.remove))
    for what, stop_it in running:
        if stop:
            stop_it()
            print(f"{what}: stopped ({where}); the next train-and-deploy deploys again")
        else:
            print(f"left running: {what} on {where}; `clothes-stack down --serving` stops it too")


def status(stack: Stack) -> bool:
    """False only for a stack that is half up or not answering; a stopped stack is a state, not an error."""
    pids = {name: stack.running_pid(name) for name in stack.commands()}
    if not any(pids.values()):
        print(f"stack stopped (no process of {stack.state_dir} runs); `make up` starts it")
        return True
    healthy = True
    for name, (_command, url) in stack.commands().items():
        pid = pids[name]
        state = "running" if pid else "stopped"
        if pid and url:
            answering = answers(url)
            state += ", answering" if answering else ", NOT answering"
            healthy &= answering
        healthy &= bool(pid)
        print(f"{name:<15}{state:<25}{'pid ' + str(pid) if pid else ''}  {url or ''}")
    return healthy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clothes-stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("action", choices=["up", "down", "status", "mlflow-ui", "screenshots"])
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("CLOTHES_STACK_DIR", PROJECT_DIR / ".stack"))
    )
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--serving", action="store_true", help="down: stop the production container or service too")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "docs" / "screenshots", help="screenshots: where")
    args = parser.parse_args(argv)
    stack = Stack(args.state_dir, args.prefect_port, args.mlflow_port)
    if args.action == "up":
        up(stack)
    elif args.action == "mlflow-ui":  # in the foreground, until Ctrl-C
        command = stack.commands()["mlflow"][0]
        os.execve(command[0], command, stack.env())
    elif args.action == "down":
        down(stack, serving=args.serving)
    elif args.action == "screenshots":
        try:
            tracking = stack.settings.tracking
            paths = take_screenshots(stack.mlflow_url, stack.prefect_api, args.out, tracking.experiment_name,
                                     tracking.model_name)  # fmt: skip
        except ScreenshotError as exc:
            print(f"screenshots: {exc}", file=sys.stderr)
            return 1
        print("\n".join(str(path) for path in paths))
    else:
        return 0 if status(stack) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
