"""What production needs to ship its traffic to the object store (`serving.log.capture`): the store's URL
(MLOPS_CAPTURE_URL) and the endpoint, region and credentials this process has (the AWS_* variables
`clothes-stack env` prints). The `docker` target hands them to its container as its environment; the
`swarm` target as a secret file (AWS's shared-credentials format) that only the server's user reads,
so they appear in no service spec, log or MLflow run."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from serving.log.object_store import ObjectStore, region
from tasks.settings import Settings

CREDENTIALS_FILE = "capture-credentials"


def capture_store(settings: Settings) -> ObjectStore | None:
    """Where every replica's traffic is captured (MLOPS_CAPTURE_URL), for the processes that read it
    back (the shadow analysis, the monitor); None: this machine's log only."""
    return ObjectStore(settings.monitor.capture_url) if settings.monitor.capture_url else None


@dataclass(frozen=True)
class CaptureTarget:
    url: str
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None

    @classmethod
    def configured(cls, settings: Settings) -> CaptureTarget | None:
        """The store production ships to; None when MLOPS_CAPTURE_URL is unset (the log stays local)."""
        if not settings.monitor.capture_url:
            return None
        env = os.environ
        return cls(
            settings.monitor.capture_url,
            env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            region(env),
            env.get("AWS_ACCESS_KEY_ID"),
            env.get("AWS_SECRET_ACCESS_KEY"),
        )

    def settings_env(self) -> dict[str, str]:
        """Everything but the credentials."""
        return {
            "MLOPS_SERVE_CAPTURE_URL": self.url,
            "AWS_DEFAULT_REGION": self.region,
            **({"AWS_ENDPOINT_URL_S3": self.endpoint} if self.endpoint else {}),
        }

    def environment(self) -> dict[str, str]:
        """The settings and the credentials, as one container's environment."""
        credentials = {}
        if self.access_key and self.secret_key:
            credentials = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        return {**self.settings_env(), **credentials}

    def credentials_file(self) -> str | None:
        """The credentials in the shared-credentials format boto3 reads (AWS_SHARED_CREDENTIALS_FILE)."""
        if not (self.access_key and self.secret_key):
            return None  # an instance role or another source of the node's own
        return f"[default]\naws_access_key_id = {self.access_key}\naws_secret_access_key = {self.secret_key}\n"

    def secret_name(self, deploy_name: str) -> str:
        """Swarm secrets cannot change: a new name whenever the credentials do."""
        digest = hashlib.sha256((self.credentials_file() or "").encode()).hexdigest()[:12]
        return f"{deploy_name}-capture-{digest}"
