"""Steady classification traffic against a production port while a deployment changes under it: what the
deploy tests (blue/green, swarm) count their failures and served versions with."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


class Traffic:
    """`clients` threads classifying on the port, a new connection per request (as most clients do);
    records every failure and how often each model version answered. Use as a context manager."""

    def __init__(
        self,
        port: int | str,
        clients: int = 1,
        host: str = "127.0.0.1",
        images: np.ndarray | None = None,
        seconds: float = 300,
        files: tuple[Path, ...] = (),
    ) -> None:
        """`images`: (N, 28, 28) sent in turn, one per request as JSON; unset: a blank image every time.
        `files`: image files sent as they are (raw body), every other request. The clients stop by
        themselves after `seconds`."""
        self.seconds = seconds
        self.url = f"http://{host}:{port}/models/clothes/latest"
        images = np.zeros((1, 28, 28), np.uint8) if images is None else images
        bodies = [(orjson.dumps({"image": image.tolist()}), "application/json") for image in images]
        photos = [(path.read_bytes(), CONTENT_TYPES[path.suffix.lower()]) for path in files]
        if photos:  # alternate: a JSON image, a file
            bodies = [body for pair in zip(bodies, itertools.cycle(photos)) for body in pair]
        self.bodies = itertools.cycle(bodies)
        self.stop = threading.Event()
        self.ok, self.failures, self.versions = 0, [], Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            with self.lock:
                body, content_type = next(self.bodies)
            request = urllib.request.Request(self.url, body, {"Content-Type": content_type})
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
