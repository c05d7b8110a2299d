"""The stack's credentials: made on the first `up` that needs them, kept in one 0600 file of the state
directory, never written to a log, a tag or an artifact. Each server gets its own password, so one
leaked (say, a registry login on a build machine) does not open the others."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import bcrypt

FILE = "credentials.json"
USERNAME = "admin"


@dataclass(frozen=True)
class Credentials:
    username: str
    mlflow_password: str
    prefect_password: str
    registry_password: str
    mlflow_secret_key: str  # MLflow's CSRF key: the same in every worker process of its server
    store_access_key: str = ""  # the object store's S3 identity (files from before 0.5.0 lack it: made then)
    store_secret_key: str = ""

    @property
    def prefect_auth_string(self) -> str:
        """What Prefect's server compares a client's HTTP basic credentials with."""
        return f"{self.username}:{self.prefect_password}"

    @classmethod
    def generate(cls) -> Credentials:
        access_key, secret_key = store_identity()
        mlflow, prefect, registry, csrf = (secrets.token_urlsafe(24) for _ in range(4))
        return cls(USERNAME, mlflow, prefect, registry, csrf, access_key, secret_key)


def store_identity() -> tuple[str, str]:
    """An S3 access key id (20 upper-case characters, as AWS makes them) and its secret."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "".join(secrets.choice(alphabet) for _ in range(20)), secrets.token_urlsafe(30)


def load_or_create(state_dir: Path) -> tuple[Credentials, bool]:
    """(credentials, made now): the first caller makes the file, mode 0600 from its creation on."""
    path = state_dir / FILE
    try:
        found = Credentials(**json.loads(path.read_text()))
    except FileNotFoundError:
        pass
    else:
        if found.store_access_key:
            return found, False
        found = replace(found, **dict(zip(("store_access_key", "store_secret_key"), store_identity(), strict=True)))
        write_private(path, json.dumps(asdict(found)))  # a stack from before the object store: its identity now
        return found, False
    credentials = Credentials.generate()
    state_dir.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(asdict(credentials)))
    return credentials, True


def write_private(path: Path, data: str | bytes) -> None:
    """A file only its owner reads, mode 0600 from the start (no moment with a wider mode)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def mlflow_auth_config(credentials: Credentials, database: Path) -> str:
    """MLflow's basic-auth app config: the admin user it creates on first start, its own user database.
    New users MLflow's admin adds may read every experiment and change only what they are granted."""
    return (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{database}\n"
        f"admin_username = {credentials.username}\n"
        f"admin_password = {credentials.mlflow_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )


def htpasswd(credentials: Credentials) -> str:
    """The registry's user file: bcrypt, the only hash the distribution registry accepts."""
    digest = bcrypt.hashpw(credentials.registry_password.encode(), bcrypt.gensalt()).decode()
    return f"{credentials.username}:{digest}\n"
