"""Reliability benchmark: the production server (gunicorn, 2 workers) under hostile clients and faults.

Every probe targets 127.0.0.1 only, is bounded in requests and seconds, and stops by itself.
One line per probe, then a machine-readable last line:
reliability: slow_clients_p99_ms=<n> slow_client_failures=<n> log_disk_full_rss_mb=<n> bomb_p99_ms=<n>
bad_version_served=<yes|no>
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import prepare_model, stop
from wrk import Load, parse_report, wrk_command

from tasks.load_generator import probe_latencies
from tasks.network import free_port, wait_until_ready

IMAGE = orjson.dumps({"image": np.random.default_rng(0).integers(0, 256, (28, 28)).tolist()})


@contextlib.contextmanager
def server(model_root: Path, **env: str) -> Iterator[tuple[int, subprocess.Popen]]:
    port = free_port()
    full_env = {
        **os.environ,
        "MLOPS_SERVE_HOST": "127.0.0.1",
        "MLOPS_SERVE_PORT": str(port),
        "MLOPS_SERVE_WORKERS": "2",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model-root", str(model_root)],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", timeout=60, is_alive=lambda: process.poll() is None)
        yield port, process
    finally:
        stop(process)


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}/models/clothes/v1"


def p99_ms(latencies: list[float]) -> float:
    return float(np.percentile(np.asarray(latencies) * 1000, 99)) if latencies else float("nan")


def in_background(targets: list[Callable[[], None]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    return threads


# --- probes ------------------------------------------------------------------------------------------


def slow_clients(model_root: Path, connections: int, hold: float) -> dict:
    """`connections` slow-header plus `connections` slow-body clients, a byte every 0.5 s for `hold` s."""
    closed: list[float] = []

    def trickle(head: bytes, body: bytes) -> None:
        started = time.monotonic()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=hold + 5) as sock:
            if body:
                sock.sendall(head)
            for byte in body or head:
                if time.monotonic() - started > hold:
                    return
                sock.send(bytes([byte]))
                time.sleep(0.5)
            return
        closed.append(time.monotonic() - started)

    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 1000
    body = b'{"image": ' + b"0" * 1000
    body_head = b"POST /models/clothes/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + (
        b"Content-Length: %d\r\n\r\n" % (len(body) + 10)
    )
    with server(model_root) as (port, _process):
        threads = in_background(
            [lambda: trickle(head, b"")] * connections + [lambda: trickle(body_head, body)] * connections
        )
        time.sleep(1)
        latencies, failures = probe_latencies(url(port), IMAGE, hold - 1)
        for thread in threads:
            thread.join(hold + 10)
    result = {
        "p99_ms": p99_ms(latencies),
        "failures": failures,
        "requests": len(latencies),
        "closed": len(closed),
        "closed_after_s": max(closed) if closed else float("nan"),
    }
    print(
        f"slow clients: {connections} slow-header + {connections} slow-body for {hold:g} s: normal requests "
        f"{result['requests']} ok, {failures} failed, p99 {result['p99_ms']:.1f} ms; {len(closed)} of "
        f"{2 * connections} slow connections closed by the server, the last after {result['closed_after_s']:.1f} s"
    )
    return result


def worker_rss_mb(process: subprocess.Popen) -> float:
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    total = 0.0
    for pid in children:
        status = Path(f"/proc/{pid}/status").read_text()
        total = max(total, int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]))
    return total / 1024


def burst(port: int, requests: int, concurrency: int = 4, seconds: float = 120) -> int:
    remaining, errors, lock = [requests], [0], threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            try:
                connection.request("POST", "/models/clothes/v1", IMAGE, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                errors[0] += response.status != 200
            except (OSError, http.client.HTTPException):
                errors[0] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    for thread in in_background([loop] * concurrency):
        thread.join(seconds + 10)
    return errors[0]


def log_disk_full(model_root: Path, requests: int) -> dict:
    """The prediction log on a full 1 MiB tmpfs (needs root for the mount): RSS growth over `requests`."""
    if os.geteuid() != 0:
        print("log disk full: skipped (mounting a small tmpfs needs root)")
        return {"rss_mb": float("nan")}
    mount = Path(tempfile.mkdtemp(prefix="clothes-full-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        with contextlib.suppress(OSError), (mount / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * 65536)
        with server(model_root, MLOPS_SERVE_PREDICTION_LOG_DIR=str(mount)) as (port, process):
            burst(port, 2000)  # warm both workers before measuring
            before = worker_rss_mb(process)
            errors = burst(port, requests)
            grown = worker_rss_mb(process) - before
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as response:
                ready = orjson.loads(response.read())
            (mount / "filler").unlink()  # space is back
            time.sleep(2.5)
            burst(port, 200)
            time.sleep(1)
            resumed = sum(p.stat().st_size for p in mount.glob("predictions-*.jsonl"))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                metrics = response.read().decode()
        dropped = next(
            (
                line.split()[-1]
                for line in metrics.splitlines()
                if line.startswith("clothes_prediction_log_dropped_total")
            ),
            "?",
        )
        print(
            f"log disk full: {requests} requests, {errors} failed, worker RSS +{grown:.1f} MB, readiness "
            f"{ready['status']} ({ready.get('prediction_log')}), {dropped} records dropped; after space returned "
            f"{resumed} bytes written"
        )
        return {"rss_mb": grown, "errors": errors, "resumed_bytes": resumed}
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)


def worst_png(pixels: int) -> bytes:
    side = int(pixels**0.5)
    noise = np.random.default_rng(1).integers(0, 256, (side, side, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise, "RGBA").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def multipart(files: list[bytes]) -> tuple[bytes, str]:
    boundary = "clothes-bench-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def image_bombs(model_root: Path, seconds: float) -> dict:
    """CPU of the costliest single image the budget admits (in-process), then 8 clients sending the
    costliest admissible request in a loop while normal requests are timed."""
    from serving import create_app
    from serving.settings import ServingSettings

    settings = ServingSettings()
    worst = worst_png(settings.max_image_pixels)
    client = create_app(model_root, settings).test_client()
    cpu = []
    for _ in range(5):
        started = time.process_time()
        assert client.post("/models/clothes/v1", data=worst, content_type="image/png").status_code == 200
        cpu.append(time.process_time() - started)
    body, content_type = multipart([worst] * (settings.max_request_pixels // settings.max_image_pixels))
    workdir = Path(tempfile.mkdtemp(prefix="clothes-bombs-"))
    (workdir / "body").write_bytes(body)
    bomb = Load(workdir / "body", content_type)
    with server(model_root) as (port, _process):
        # The attackers are wrk in its own process: 8 connections sending the costliest request back to back.
        attackers = subprocess.Popen(
            wrk_command(f"http://127.0.0.1:{port}/models/clothes/v1", bomb, 8, seconds),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        latencies, failures = probe_latencies(url(port), IMAGE, seconds - 1)
        out, _ = attackers.communicate(timeout=seconds + 30)
    shutil.rmtree(workdir, ignore_errors=True)
    sent = [parse_report(out).requests]
    result = {"cpu_ms": min(cpu) * 1000, "p99_ms": p99_ms(latencies), "failures": failures}
    print(
        f"image bombs: costliest admissible image ({len(worst) / 1e6:.1f} MB RGBA PNG, "
        f"{settings.max_image_pixels:,} px) {result['cpu_ms']:.1f} ms CPU (min of 5); 8 clients sending "
        f"{len(body) / 1e6:.1f} MB multipart requests ({sent[0]} sent): normal p99 {result['p99_ms']:.1f} ms, "
        f"{failures} failed"
    )
    return result


def bad_version(model_root: Path) -> bool:
    root = Path(tempfile.mkdtemp(prefix="clothes-bad-version-"))
    try:
        shutil.copytree(model_root / "clothes" / "1", root / "clothes" / "1")
        shutil.copytree(model_root / "clothes" / "1", root / "clothes" / "2")
        tflite = root / "clothes" / "2" / "model.tflite"
        tflite.write_bytes(tflite.read_bytes()[:4000])
        with server(root) as (port, _process):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=5) as response:
                listing = orjson.loads(response.read())["models"][0]
            served = not probe_latencies(url(port), IMAGE, 0.5)[1]
        print(f"bad version: v2 truncated, server ready, serving {listing['versions']}, failed {listing['failed']}")
        return served and listing["versions"] == [1]
    except Exception as exc:  # the probe's verdict is "no", with the reason
        print(f"bad version: not served ({exc})")
        return False
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow-connections", type=int, default=64, help="slow-header and slow-body, each")
    parser.add_argument("--hold", type=float, default=20, help="seconds the slow clients hold on")
    parser.add_argument("--log-requests", type=int, default=20_000)
    parser.add_argument("--bomb-seconds", type=float, default=10)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    parser.add_argument("--only", choices=["slow", "disk", "bombs", "version"], help="run one probe")
    args = parser.parse_args()
    nan = float("nan")
    workdir = Path(tempfile.mkdtemp(prefix="clothes-bench-reliability-"))
    try:
        _keras, model_root, _images = prepare_model(workdir, args.data_dir)
        wanted = {args.only} if args.only else {"slow", "disk", "bombs", "version"}
        slow = slow_clients(model_root, args.slow_connections, args.hold) if "slow" in wanted else {"p99_ms": nan}
        disk = log_disk_full(model_root, args.log_requests) if "disk" in wanted else {"rss_mb": nan}
        bombs = image_bombs(model_root, args.bomb_seconds) if "bombs" in wanted else {"p99_ms": nan}
        served = bad_version(model_root) if "version" in wanted else False
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"reliability: slow_clients_p99_ms={slow['p99_ms']:.1f} slow_client_failures={slow.get('failures', nan)} "
        f"log_disk_full_rss_mb={disk['rss_mb']:.1f} bomb_p99_ms={bombs['p99_ms']:.1f} "
        f"bad_version_served={'yes' if served else 'no'}"
    )


if __name__ == "__main__":
    main()
