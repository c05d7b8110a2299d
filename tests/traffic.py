"""Steady classification traffic against a production port while a deployment changes under it: what the
deploy tests (blue/green, swarm) count their failures and served versions with."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.request
from collections import Counter

import orjson


class Traffic:
    """`clients` threads classifying on the port, a new connection per request (as most clients do);
    records every failure and how often each model version answered. Use as a context manager."""

    def __init__(self, port: int | str, clients: int = 1, host: str = "127.0.0.1") -> None:
        self.url = f"http://{host}:{port}/models/clothes/latest"
        self.body = orjson.dumps({"image": [[0] * 28] * 28})
        self.stop = threading.Event()
        self.ok, self.failures, self.versions = 0, [], Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            request = urllib.request.Request(self.url, self.body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    version = orjson.loads(response.read())["model"]["version"]
                with self.lock:
                    self.ok += 1
                    self.versions[version] += 1
            except (OSError, http.client.HTTPException, ValueError) as exc:  # every way a request can fail
                with self.lock:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {exc!r}")

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc_info) -> None:
        time.sleep(0.5)
        self.stop.set()
        for thread in self.threads:
            thread.join()


def served_version(port: int | str, host: str = "127.0.0.1") -> int:
    with urllib.request.urlopen(f"http://{host}:{port}/models/clothes/latest", timeout=5) as response:
        return orjson.loads(response.read())["version"]
