"""Bounded HTTP load against a server on loopback, shared by the smoke test, the benchmarks and the
reliability tests: urllib3's keep-alive pool under a stdlib thread pool, every run with a deadline."""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import urllib3


def load_burst(url: str, body: bytes, requests: int, concurrency: int, timeout: float = 120) -> dict[str, float]:
    """Exactly `requests` POSTs over `concurrency` keep-alive connections; requests still unsent at
    `timeout` seconds are abandoned and count as failures."""
    pool = urllib3.PoolManager(maxsize=concurrency, block=True, retries=False, timeout=10)
    headers = {"Content-Type": "application/json"}
    deadline = time.monotonic() + timeout

    def one(_index: int) -> tuple[float, bool] | None:
        if time.monotonic() > deadline:
            return None
        started = time.perf_counter()
        try:
            ok = pool.request("POST", url, body=body, headers=headers).status == 200
        except urllib3.exceptions.HTTPError:
            ok = False
        return time.perf_counter() - started, ok

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as executor:
        done = [r for r in executor.map(one, range(requests)) if r is not None]
    seconds = time.perf_counter() - started
    pool.clear()
    ms = np.asarray([latency for latency, _ok in done] or [0.0]) * 1000
    return {
        "load_requests": len(done),
        "load_errors": requests - sum(ok for _latency, ok in done),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests_per_s": len(done) / seconds if seconds else 0.0,
    }


def post(url: str, body: bytes, timeout: float) -> bytes:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def probe_latencies(url: str, body: bytes, seconds: float, interval: float = 0.02) -> tuple[list[float], int]:
    """Single requests one at a time, each on a fresh connection, for `seconds`: how a normal client
    fares while something else loads the server. Returns (latencies in seconds, failures)."""
    latencies, failures = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            post(url, body, timeout=5)
            latencies.append(time.perf_counter() - started)
        except OSError:
            failures += 1
        time.sleep(interval)
    return latencies, failures
