"""What the pipeline, the stack's tools, the tests and the benchmarks need of the network: a free
loopback port, and HTTP probes of a server: ready yet, and does it refuse these credentials.
Standard library only."""

from __future__ import annotations

import base64
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable


class NotReady(RuntimeError):
    """A server did not answer ready in time, or its process died first; the message says which."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the caller binds it next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(
    base_url: str, timeout: float = 60.0, is_alive: Callable[[], bool] | None = None, path: str = "/health/ready"
) -> float:
    """Poll `path` (a server without health routes: any GET route) until it answers 200; return the
    seconds it took. `is_alive` lets a caller fail fast when the server process (or container) died."""
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{base_url.rstrip('/')}{path}", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if is_alive is not None and not is_alive():
            raise NotReady(f"server behind {base_url} exited before it was ready")
        if time.monotonic() - started > timeout:
            raise NotReady(f"{base_url} not ready after {timeout:.0f} s")
        time.sleep(0.1)


def refused_login(url: str, login: str | None, statuses: tuple[int, ...] = (401,)) -> int | None:
    """The status a server answers a GET of `url` with, when it is one of `statuses` (a missing or wrong
    HTTP basic `login`, "user:password"); None for any other answer or none at all. What the tools check
    before they start work on a server with users (the team stack's MLflow and Prefect)."""
    request = urllib.request.Request(url)
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as exc:
        return exc.code if exc.code in statuses else None
    except OSError:
        return None
    return None
