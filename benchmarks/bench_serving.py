"""Serving benchmark: the course's reference server vs this server under gunicorn, same model, same load.

Load comes from wrk (Debian package `wrk`) on 127.0.0.1 at a fixed concurrency for a fixed time, so
every run is bounded. The last line is machine-readable:
serving: single=<req/s> p99_ms=<ms> baseline=<req/s> ratio=<x> batch_images_per_s=<n>
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from serving.client import wait_until_ready
from tasks.docker_engine import free_port
from tasks.load import post

REPO = Path(__file__).resolve().parents[1]
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * UNITS[unit]


def run_wrk(url: str, body_file: Path, connections: int, seconds: int, threads: int) -> LoadResult:
    script = body_file.with_suffix(".lua")
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
    )
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.MULTILINE))  # "1.14s " has a trailing space
    if "99" not in percentiles:
        raise RuntimeError(f"no latency distribution in wrk's output for {url}:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return LoadResult(
        requests_per_s=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),
        errors=(int(errors.group(1)) if errors else 0)
        + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    )


def prepare_model(workdir: Path, data_dir: Path | None) -> tuple[Path, Path, list]:
    """A LeNet-5 trained briefly on real data, saved as .keras (baseline) and exported (our server)."""
    from tasks.export import build_metadata, export_model
    from tasks.params import TrainParams
    from tasks.settings import Settings
    from tasks.sources import load_fashion_mnist
    from tasks.train import train_model

    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(data_dir)).subset(10_000, 1_000)
    model = train_model(dataset, TrainParams(epochs=1)).model
    keras_file = workdir / "model.keras"
    model.save(keras_file)
    model_root = workdir / "models"
    export_model(model, model_root, build_metadata(model, "clothes", 1, dataset.class_names, None, {}))
    return keras_file, model_root, dataset.x_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="load duration per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server variant")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/bench_serving.py needs wrk: apt-get install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="clothes-bench-"))
    keras_file, model_root, x_test = prepare_model(workdir, args.data_dir)
    single, batch = workdir / "single.json", workdir / "batch.json"
    single.write_text(json.dumps({"image": x_test[0].tolist()}))
    batch.write_text(json.dumps({"images": x_test[: args.batch].tolist()}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    port = free_port()
    reference = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "reference_server.py"), "--model", str(keras_file),
         "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/models/clothes/v1"
        wait_until_ready(url, 120, lambda: reference.poll() is None, path="")  # no health route: the model page
        post(url, single.read_bytes(), timeout=120)  # warm-up: the first predict() builds TF's graph
        run_wrk(url, single, args.connections, 2, args.wrk_threads)
        baseline = run_wrk(url, single, args.connections, args.seconds, args.wrk_threads)
    finally:
        stop(reference)

    def start_ours(workers: int, extra_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
        port = free_port()
        server_env = {**env, "MLOPS_SERVE_HOST": "127.0.0.1", "MLOPS_SERVE_PORT": str(port),
                      "MLOPS_SERVE_WORKERS": str(workers), "MLOPS_SERVE_MODEL_ROOT": str(model_root),
                      **extra_env}  # fmt: skip
        server = subprocess.Popen(
            [sys.executable, "-m", "serving"], env=server_env, cwd=REPO, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until_ready(f"http://127.0.0.1:{port}", 120, lambda: server.poll() is None)
        return server, f"http://127.0.0.1:{port}/models/clothes/v1"

    def median(results: list[LoadResult]) -> LoadResult:
        return sorted(results, key=lambda r: r.requests_per_s)[len(results) // 2]

    def measure(servers: dict[str, tuple[str, Path]], workers: int) -> dict[str, LoadResult]:
        """Servers up side by side (idle costs nothing), measured alternately `--rounds` times so drift in
        the machine's speed hits all alike; the median round counts."""
        started = {name: start_ours(workers, extra) for name, (_body, extra) in servers.items()}
        results: dict[str, list[LoadResult]] = {name: [] for name in servers}
        try:
            for _server, url in started.values():
                run_wrk(url, single, args.connections, 2, args.wrk_threads)
            for _ in range(args.rounds):
                for name, (body, _extra) in servers.items():
                    results[name].append(run_wrk(started[name][1], body, args.connections, args.seconds,
                                                 args.wrk_threads))  # fmt: skip
        finally:
            for server, _url in started.values():
                stop(server)
        return {name: median(r) for name, r in results.items()}

    main = measure({"single": (single, {}), "batch": (batch, {})}, args.workers)
    ours, batched = main["single"], main["batch"]
    # The prediction log's cost, per request: one worker each, so connection balance cannot blur it.
    log_env = {"MLOPS_SERVE_PREDICTION_LOG_DIR": str(workdir / "prediction-log")}
    cost = measure({"plain": (single, {}), "logged": (single, log_env), "plain_batch": (batch, {}),
                    "logged_batch": (batch, log_env)}, 1)  # fmt: skip
    shutil.rmtree(workdir, ignore_errors=True)

    print(f"{'server':<34}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}{'errors':>8}")
    for name, result in (("reference (model.predict)", baseline), ("gunicorn + LiteRT", ours),
                         (f"gunicorn + LiteRT, batch {args.batch}", batched),
                         ("1 worker", cost["plain"]), ("1 worker + prediction log", cost["logged"]),
                         (f"1 worker, batch {args.batch}", cost["plain_batch"]),
                         (f"1 worker + log, batch {args.batch}", cost["logged_batch"])):  # fmt: skip
        print(f"{name:<34}{result.requests_per_s:>10.1f}{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}"
              f"{result.requests:>10}{result.errors:>8}")  # fmt: skip
    images_per_s = batched.requests_per_s * args.batch
    print(f"concurrency {args.connections}, {args.seconds} s per run, median of {args.rounds} alternating rounds, "
          f"{os.cpu_count()} cores, workers {args.workers}")  # fmt: skip
    errors = sum(r.errors for r in (baseline, ours, batched, *cost.values()))
    if errors:
        print(f"WARNING: {errors} failed requests", file=sys.stderr)
    single_cost = 100 * (1 - cost["logged"].requests_per_s / cost["plain"].requests_per_s)
    batch_cost = 100 * (1 - cost["logged_batch"].requests_per_s / cost["plain_batch"].requests_per_s)
    print(f"prediction log cost: single {single_cost:.1f}% batch {batch_cost:.1f}% throughput (1 worker)")  # fmt: skip
    print(
        f"serving: single={ours.requests_per_s:.0f} p99_ms={ours.p99_ms:.1f} baseline={baseline.requests_per_s:.0f} "
        f"ratio={ours.requests_per_s / baseline.requests_per_s:.1f} batch_images_per_s={images_per_s:.0f}"
    )


if __name__ == "__main__":
    main()
