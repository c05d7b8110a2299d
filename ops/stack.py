"""`clothes-stack up|down|status|env|mlflow-ui|screenshots`: the stack a team shares.

up: Prefect server (SQLite under the state directory, or PostgreSQL), an S3-compatible object store
(SeaweedFS: production's captured traffic from every replica, feedback claims, and in team mode MLflow's
artifacts), the `clothes-process` work pool, every deployment of prefect.yaml (`prefect deploy --all`), a
process worker, an MLflow tracking server/UI on the same store as `make run` serving the artifacts too
(flows log through it over HTTP, so workers on other machines need no shared directory), and an image
registry. On loopback (the default) it is one person's stack, without logins but the object store's; on
any other address or name (MLOPS_STACK_HOST) every server asks for credentials, made on the first `up`
and kept in `<state dir>/credentials.json` (0600). down: stops exactly the processes `up` started (pid
files).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path

from ops import registry
from ops.credentials import Credentials, load_or_create, mlflow_auth_config, write_private
from ops.screenshots import ScreenshotError, take_screenshots
from ops.seaweedfs import BUCKET, SeaweedFS
from ops.tls import CA_CERT
from serving.log.object_store import ObjectStore
from tasks.release.docker_engine import docker_client, retire
from tasks.release.targets.docker import production_containers
from tasks.release.targets.swarm import production_service, swarm_manager
from tasks.settings import PROJECT_DIR, Settings, runtime_defaults

WORK_POOL = "clothes-process"
RECORD = "stack.json"  # how the last `up` configured the stack: `env`, `status` and `down` follow it
PROCESSES = ("prefect-server", "store", "mlflow", "registry", "worker")  # start order; `down` stops in reverse
CAPTURE_PREFIX = "capture"  # s3://<bucket>/capture: production's traffic (`serving.log.capture`)
ARTIFACTS_PREFIX = "mlflow-artifacts"  # s3://<bucket>/mlflow-artifacts: MLflow's artifacts in team mode


class StackRefused(RuntimeError):
    """`up` would expose the stack without credentials; nothing was started."""


def ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `host` is (localhost: 127.0.0.1); None for a name, which is checked as it is written."""
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    return None


def private_address(host: str) -> bool:
    """A loopback or private address, which MLflow's Host check accepts by default."""
    address = ip_address(host)
    return address is not None and address.is_private


def loopback(host: str) -> bool:
    address = ip_address(host)
    return address is not None and address.is_loopback


@dataclass(frozen=True)
class Stack:
    state_dir: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000
    host: str = "127.0.0.1"
    auth: bool = False
    registry: bool = False
    registry_port: int = 5443
    store: bool = True
    store_port: int = 8333
    store_artifacts: bool | None = None  # MLflow's artifacts in the store; None: in team mode
    # Built once: the stores, the database and the production deployment the stack works with.
    settings: Settings = field(default_factory=Settings, compare=False)

    @classmethod
    def configured(cls, state_dir: Path, prefect_port: int, mlflow_port: int, settings: Settings) -> Stack:
        """The stack MLOPS_STACK_* asks for: credentials and a registry unless it listens on loopback only."""
        stack = settings.stack
        team = not loopback(stack.host)
        return cls(
            state_dir,
            prefect_port,
            mlflow_port,
            stack.host,
            auth=team if stack.auth is None else stack.auth,
            registry=team if stack.registry is None else stack.registry,
            registry_port=stack.registry_port,
            store=stack.store,
            store_port=stack.store_port,
            store_artifacts=stack.store_artifacts,
            settings=settings,
        )

    @classmethod
    def running(cls, state_dir: Path, settings: Settings) -> Stack | None:
        """The stack the last `up` in `state_dir` started, as it was configured then (env, status, down)."""
        try:
            recorded = json.loads((state_dir / RECORD).read_text())
        except (OSError, ValueError):
            return None
        return cls(state_dir, **recorded, settings=settings)

    def record(self) -> None:
        recorded = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("state_dir", "settings")}
        (self.state_dir / RECORD).write_text(json.dumps(recorded))

    @property
    def prefect_api(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def registry_address(self) -> str:
        return f"{self.host}:{self.registry_port}"

    @property
    def registry_dir(self) -> Path:
        return self.state_dir.resolve() / "registry"

    @property
    def object_store(self) -> SeaweedFS:
        return SeaweedFS(self.state_dir.resolve() / "seaweedfs", self.host, self.store_port)

    @property
    def artifacts_on_store(self) -> bool:
        """Team mode keeps MLflow's artifacts in the object store; one person's stack, beside `make run`'s
        (unless MLOPS_STACK_STORE_ARTIFACTS says otherwise)."""
        if not self.store:
            return False
        return not loopback(self.host) if self.store_artifacts is None else self.store_artifacts

    def store_env(self) -> dict[str, str]:
        """What a client of the object store needs: endpoint, region and the S3 identity."""
        credentials = self.credentials()
        return self.object_store.client_env(credentials) if credentials and self.store else {}

    @property
    def needs_credentials(self) -> bool:
        return self.auth or self.registry or self.store

    def credentials(self) -> Credentials | None:
        """The stack's credentials (made on first use) when any server asks for them, else None."""
        return load_or_create(self.state_dir)[0] if self.needs_credentials else None

    def client_env(self) -> dict[str, str]:
        """What a colleague's shell, `make run` or a worker on another machine needs: URLs and credentials."""
        env = {
            "PREFECT_API_URL": self.prefect_api,
            "MLOPS_TRACKING_URI": self.mlflow_url,
            "MLOPS_MLFLOW_UI_URL": self.mlflow_url,
        }
        credentials = self.credentials()
        if credentials and self.auth:
            env |= {
                "PREFECT_API_AUTH_STRING": credentials.prefect_auth_string,
                "MLFLOW_TRACKING_USERNAME": credentials.username,
                "MLFLOW_TRACKING_PASSWORD": credentials.mlflow_password,
            }
        if credentials and self.registry:
            env |= {
                "MLOPS_REGISTRY": self.registry_address,
                "MLOPS_REGISTRY_USERNAME": credentials.username,
                "MLOPS_REGISTRY_PASSWORD": credentials.registry_password,
            }
        if self.store:
            env |= {"MLOPS_CAPTURE_URL": f"s3://{BUCKET}/{CAPTURE_PREFIX}", **self.store_env()}
        return env

    def env(self) -> dict[str, str]:
        """What every stack process (and the flows the worker runs) sees."""
        state = self.state_dir.resolve()
        credentials = self.credentials() if self.auth else None
        defaults = runtime_defaults(state)
        return {
            **defaults,
            **os.environ,
            **self.client_env(),
            "PREFECT_HOME": defaults["PREFECT_HOME"],  # the stack's server and worker share one database
            "PREFECT_UI_API_URL": self.prefect_api,
            # `prefect deployment run --watch` shows a run's logs (e.g. which gate failed) only when the
            # server streams them; Prefect ships with both off.
            "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
            "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
            "CLOTHES_PROJECT_DIR": str(PROJECT_DIR),
            # The UI needs no GenAI job runner (it starts half a dozen consumer processes).
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
            **({"MLFLOW_S3_ENDPOINT_URL": self.object_store.endpoint} if self.artifacts_on_store else {}),
            **(
                {"PREFECT_API_DATABASE_CONNECTION_URL": database}
                if (database := self.settings.tracking.prefect_database_url)
                else {}
            ),
            **(
                {
                    "PREFECT_SERVER_API_AUTH_STRING": credentials.prefect_auth_string,
                    "MLFLOW_AUTH_CONFIG_PATH": str(state / "mlflow-auth.ini"),
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": credentials.mlflow_secret_key,
                }
                if credentials
                else {}
            ),
        }

    def mlflow_workers(self) -> int:
        """One process on SQLite (one writer at a time anyway), several on PostgreSQL."""
        configured = self.settings.stack.mlflow_workers
        return configured or (4 if self.settings.tracking.stack_db == "postgres" else 1)

    def commands(self) -> dict[str, tuple[list[str], str | None]]:
        """name -> (command, health URL); the worker has no URL, its pid tells."""
        settings = self.settings  # the store `make run` writes
        python = sys.executable
        mlflow = [
            python,
            "-m",
            "mlflow",
            "server",
            *(["--app-name", "basic-auth"] if self.auth else []),
            "--host",
            self.host,
            "--port",
            str(self.mlflow_port),
            "--workers",
            str(self.mlflow_workers()),
            "--backend-store-uri",
            settings.tracking.backend_store_uri,
            "--serve-artifacts",  # clients upload and download artifacts through the server
            "--artifacts-destination",
            self.artifacts_destination(),
            *(["--allowed-hosts", ",".join(hosts)] if (hosts := self.mlflow_hosts()) else []),
        ]
        prefect = [python, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.prefect_port)]
        commands: dict[str, tuple[list[str], str | None]] = {"prefect-server": (prefect, f"{self.prefect_api}/health")}
        if self.store:
            commands["store"] = (self.object_store.command(), f"{self.object_store.endpoint}/healthz")
        commands["mlflow"] = (mlflow, f"{self.mlflow_url}/health")
        if self.registry:
            config = self.registry_dir / "config.yml"
            commands["registry"] = (registry.command(config), f"https://{self.registry_address}/")
        worker = [python, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process"]
        commands["worker"] = (worker, None)
        return commands

    def artifacts_destination(self) -> str:
        if self.artifacts_on_store:
            return f"s3://{BUCKET}/{ARTIFACTS_PREFIX}"
        return self.settings.tracking.artifacts_dir.as_uri()

    def mlflow_hosts(self) -> list[str]:
        """The Host headers MLflow accepts besides its default (localhost and private addresses, its guard
        against DNS rebinding): the name or public address the team reaches the stack by, with and
        without the port, and loopback for this machine's own clients. Empty when the default covers it."""
        if private_address(self.host):
            return []
        names = (self.host, "localhost", "127.0.0.1")
        return [f"{name}{port}" for name in names for port in ("", f":{self.mlflow_port}")]

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


def answers(url: str, stack: Stack) -> bool:
    """The health URL answers 200 (over TLS from the stack's CA for the registry)."""
    context = ssl.create_default_context(cafile=stack.registry_dir / CA_CERT) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(url: str, name: str, stack: Stack, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(url, stack):
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
        command,
        env=stack.env(),
        cwd=PROJECT_DIR,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: `down` stops it and its children, nothing else
    )
    stack.pid_file(name).write_text(str(process.pid))
    if url:
        wait_for(url, name, stack)
    print(f"{name}: started in {time.monotonic() - started:.0f} s (pid {process.pid})", flush=True)


def prefect_cli(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=stack.env(),
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=check,
        timeout=300,
    )


def deploy(stack: Stack) -> None:
    """Work pool if missing, then every deployment of prefect.yaml (idempotent: schedules have slugs)."""
    print(f"deployments: work pool {WORK_POOL}, then `prefect deploy --all` of prefect.yaml", flush=True)
    if prefect_cli(stack, "work-pool", "inspect", WORK_POOL, check=False).returncode != 0:
        prefect_cli(stack, "work-pool", "create", WORK_POOL, "--type", "process")
    result = prefect_cli(stack, "--no-prompt", "deploy", "--all", check=False)
    if result.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    print("deployments: registered", flush=True)


def notify(stack: Stack) -> None:
    """Prefect automations posting the lifecycle's events to MLOPS_NOTIFY_WEBHOOK (when it is set)."""
    command = [sys.executable, "-m", "ops.notifications"]
    result = subprocess.run(command, env=stack.env(), cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"notifications failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    print(result.stdout.strip(), flush=True)


def start_registry(stack: Stack, credentials: Credentials) -> None:
    """Certificates, users and config, this machine's engines trusting the CA, then the registry."""
    registry.prepare(stack.registry_dir, stack.host, stack.registry_port, credentials)
    trusted = registry.trust(stack.registry_address, stack.registry_dir / CA_CERT)
    print(
        f"registry: this machine's Docker engines trust its CA ({trusted})"
        if trusted
        else f"registry: copy {stack.registry_dir / CA_CERT} to {registry.DOCKER_CERTS}/{stack.registry_address}/"
        "ca.crt as root, or Docker will not pull from it",
        flush=True,
    )
    start(stack, "registry")


def start_store(stack: Stack, credentials: Credentials) -> None:
    """Its identity, the process, the bucket; in team mode, artifacts `make run` kept locally copied in."""
    stack.object_store.prepare(credentials)
    start(stack, "store")
    store = ObjectStore(f"s3://{BUCKET}", env=stack.store_env())
    SeaweedFS.wait_writable(store)
    if stack.artifacts_on_store:
        copied = copy_artifacts(stack.settings.tracking.artifacts_dir, store, ARTIFACTS_PREFIX)
        if copied:
            print(f"store: copied {copied} artifact files of {stack.settings.tracking.artifacts_dir} in", flush=True)


def copy_artifacts(directory: Path, store: ObjectStore, prefix: str) -> int:
    """Every file under `directory` the store lacks, under `prefix` (idempotent): runs logged before the
    artifacts moved to the store keep theirs, since the server maps `mlflow-artifacts:/<path>` to
    `<destination>/<path>` either way."""
    if not directory.is_dir():
        return 0
    present = set(store.keys(store.key(prefix) + "/"))
    copied = 0
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        key = store.key(prefix, path.relative_to(directory).as_posix())
        if key not in present:
            store.upload(path, key)
            copied += 1
    return copied


def up(stack: Stack) -> None:
    if not loopback(stack.host) and not stack.auth:
        raise StackRefused(
            f"refusing to listen on {stack.host} without credentials: anyone who reaches it could "
            "register models, move aliases and start deployments (unset MLOPS_STACK_AUTH)"
        )
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    if stack.auth:  # its databases and logs are the team's: only this user reads them
        stack.state_dir.chmod(0o700)
    settings = stack.settings
    credentials, made = load_or_create(stack.state_dir) if stack.needs_credentials else (None, False)
    if settings.tracking.stack_db == "postgres":  # MLflow's and Prefect's databases, on a running cluster
        prefix = settings.tracking.postgres_prefix
        print(f"postgres: databases {prefix}mlflow and {prefix}prefect", flush=True)
        subprocess.run([str(PROJECT_DIR / "scripts" / "postgres.sh"), "up", prefix], check=True)
    if credentials and stack.auth:  # MLflow makes its admin user from this on its first start
        write_private(
            stack.state_dir / "mlflow-auth.ini",
            mlflow_auth_config(credentials, stack.state_dir.resolve() / "mlflow-auth.db"),
        )
    stack.record()
    start(stack, "prefect-server")
    if credentials and stack.store:
        start_store(stack, credentials)
    start(stack, "mlflow")
    if credentials and stack.registry:
        start_registry(stack, credentials)
    deploy(stack)
    notify(stack)
    start(stack, "worker")
    print(f"Prefect UI   {stack.prefect_api.removesuffix('/api')}\nMLflow UI    {stack.mlflow_url}")
    if stack.store:
        print(f"Store        {stack.object_store.endpoint} (S3; bucket {BUCKET})")
    if stack.registry:
        print(f"Registry     {stack.registry_address} (CA {stack.registry_dir / CA_CERT})")
    if made and stack.auth:  # the only time the passwords are printed; `clothes-stack env` prints them again
        print(
            f"\nCredentials, made now and kept in {stack.state_dir / 'credentials.json'} (0600). Both UIs "
            "ask for them (user admin). A colleague's shell or a worker on another machine needs:"
        )
    elif stack.auth:
        print("\nCredentials: `clothes-stack env` prints what a colleague's shell or worker needs.")
        return
    print("\n".join(f"  export {key}={shlex.quote(value)}" for key, value in stack.client_env().items()))


def stop_process(stack: Stack, name: str) -> None:
    """Stop one of the stack's processes and its children (SIGTERM, then SIGKILL after 30 s)."""
    pid = stack.running_pid(name)
    if pid is None:
        stack.pid_file(name).unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while stack.running_pid(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    if stack.running_pid(name):
        os.killpg(pid, signal.SIGKILL)
    stack.pid_file(name).unlink(missing_ok=True)
    print(f"{name}: stopped (pid {pid})")


def down(stack: Stack, serving: bool = False) -> None:
    """Stop what `up` started. The production container is not part of the stack (the pipeline deployed
    it, and users' traffic may depend on it): it is stopped only with `serving`, else named as left running."""
    for name in reversed(PROCESSES):  # also one an earlier `up` started with other settings
        stop_process(stack, name)
    if (stack.object_store.directory / "ports.json").exists():
        stack.object_store.remove_sockets()
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
            answering = answers(url, stack)
            state += ", answering" if answering else ", NOT answering"
            healthy &= answering
        healthy &= bool(pid)
        print(f"{name:<15}{state:<25}{'pid ' + str(pid) if pid else ''}  {url or ''}")
    return healthy


def argument_parser() -> argparse.ArgumentParser:
    """The command line, apart from running it: the docs' commands are checked against it."""
    parser = argparse.ArgumentParser(
        prog="clothes-stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "env", "mlflow-ui", "screenshots"],
        help="env: the export lines a shell, `make run` or a remote worker needs",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("CLOTHES_STACK_DIR", PROJECT_DIR / ".stack"))
    )
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--serving", action="store_true", help="down: stop the production container or service too")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "docs" / "screenshots", help="screenshots: where")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser()
    args = parser.parse_args(argv)
    settings = Settings()
    stack = Stack.configured(args.state_dir, args.prefect_port, args.mlflow_port, settings)
    if args.action != "up":  # the stack as `up` started it, whatever this shell's MLOPS_STACK_* say
        stack = Stack.running(args.state_dir, settings) or stack
    if args.action == "up":
        try:
            up(stack)
        except StackRefused as exc:
            print(f"clothes-stack: {exc}", file=sys.stderr)
            return 2
    elif args.action == "env":
        print("\n".join(f"export {key}={shlex.quote(value)}" for key, value in stack.client_env().items()))
    elif args.action == "mlflow-ui":  # in the foreground, until Ctrl-C
        command = stack.commands()["mlflow"][0]
        os.execve(command[0], command, stack.env())
    elif args.action == "down":
        down(stack, serving=args.serving)
    elif args.action == "screenshots":
        try:
            tracking = stack.settings.tracking
            paths = take_screenshots(
                stack.mlflow_url, stack.prefect_api, args.out, tracking.experiment_name, tracking.model_name
            )
        except ScreenshotError as exc:
            print(f"screenshots: {exc}", file=sys.stderr)
            return 1
        print("\n".join(str(path) for path in paths))
    else:
        return 0 if status(stack) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
