"""The stack's image registry: Debian's `docker-registry` (the CNCF distribution registry) over TLS from
the stack's CA, with htpasswd users. Releases push the smoke-tested image here and every node pulls it
by digest. Its files live in `<state dir>/registry/`: config, certificates, users and the blobs."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import yaml

from ops.credentials import Credentials, htpasswd, write_private
from ops.tls import CERT, KEY, ensure_certificates

DOCKER_CERTS = Path("/etc/docker/certs.d")  # where every Docker engine of a machine looks for a registry's CA


def config(directory: Path, address: str) -> dict:
    """The distribution registry's configuration (version 0.1 schema): TLS, htpasswd, blobs on disk."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(directory / "data")}, "delete": {"enabled": True}},
        "http": {"addr": address, "tls": {"certificate": str(directory / CERT), "key": str(directory / KEY)}},
        "auth": {"htpasswd": {"realm": "clothes-mlops registry", "path": str(directory / "htpasswd")}},
    }


def prepare(directory: Path, host: str, port: int, credentials: Credentials) -> Path:
    """Certificates for `host` (and loopback), the users file and the config; returns the config's path."""
    ensure_certificates(directory, [host, "127.0.0.1", "localhost"])
    write_private(directory / "htpasswd", htpasswd(credentials))
    path = directory / "config.yml"
    path.write_text(yaml.safe_dump(config(directory, f"{host}:{port}"), sort_keys=False))
    return path


def command(config_path: Path) -> list[str]:
    return [binary(), "serve", str(config_path)]


def binary() -> str:
    """Debian's `docker-registry`, installed on first use where this user may (root with apt-get)."""
    found = shutil.which("docker-registry")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise RuntimeError("the registry needs Debian's docker-registry package (the distribution registry)")
    print("registry: installing Debian's docker-registry", flush=True)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "docker-registry"], check=True, capture_output=True, env=env)
    return shutil.which("docker-registry") or "/usr/bin/docker-registry"


def trust(address: str, ca_cert: Path, certs_root: Path = DOCKER_CERTS) -> Path | None:
    """Make this machine's Docker engines trust the registry's CA; None where this user may not (say how)."""
    target = certs_root / address / "ca.crt"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca_cert, target)
    except PermissionError:
        return None
    return target


def untrust(address: str, certs_root: Path = DOCKER_CERTS) -> None:
    shutil.rmtree(certs_root / address, ignore_errors=True)


def tag_digest(address: str, repository: str, tag: str, credentials: Credentials, ca_cert: Path) -> str:
    """The digest the registry's `repository:tag` names (its Docker-Content-Digest): what a pull gets."""
    login = base64.b64encode(f"{credentials.username}:{credentials.registry_password}".encode()).decode()
    request = urllib.request.Request(
        f"https://{address}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json", "Authorization": f"Basic {login}"},
    )
    context = ssl.create_default_context(cafile=ca_cert)
    with urllib.request.urlopen(request, timeout=20, context=context) as response:
        return response.headers["Docker-Content-Digest"]
