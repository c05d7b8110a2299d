"""What capture costs production and how fast it ships, on this machine.

1. Single-image throughput (wrk, 8 connections) of two servers side by side (`python -m serving`,
   2 workers each, rounds alternating): one with the prediction log only, one with the log shipped to a
   SeaweedFS store on loopback (`MLOPS_SERVE_CAPTURE_URL`, looked at every second). Both rotate their
   files every 5 s, so the capturing one ships throughout the measurement.
2. Upload throughput of one capture thread: a backlog of rotated, compressed files of single-image
   records (as a server at full rate leaves them: 10 MB before compression each) shipped at once.
3. The monitor's read of a window at the local server's full rate (two nodes of two workers: 240
   minute summaries an hour) from the store, merged, in a fresh process: 15 and 60 minutes.

The line before the last: `monitor: hour_seconds=<s> hour_rss_mb=<MB> quarter_rss_mb=<MB>` (the read's
peak memory above its process's imports: flat in the window's length). Last line:
`capture: single_ratio=<capture/local> upload_records_per_s=<n>`
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_serving import prepare_model, start, stop, write_loads
from wrk import run_wrk

from ops.seaweedfs import running_store
from serving.log.capture import Capture
from serving.log.prediction_log import PredictionLog
from serving.log.summary import TrafficSummary, minute_of
from tasks.network import free_port

VARIANTS = ("local", "capture")


def throughput(args, workdir: Path, model_root: Path, single, store) -> dict[str, float]:
    env = {
        **os.environ,
        **store.env,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MLOPS_SERVE_HOST": "127.0.0.1",
        "MLOPS_SERVE_WORKERS": "2",
        "MLOPS_SERVE_MODEL_ROOT": str(model_root),
        "MLOPS_SERVE_PREDICTION_LOG_ROTATE_SECONDS": "5",
    }
    servers, urls = {}, {}
    try:
        for name in VARIANTS:
            port = free_port()
            server_env = {**env, "MLOPS_SERVE_PORT": str(port), "MLOPS_SERVE_PREDICTION_LOG_DIR": str(workdir / name)}
            if name == "capture":
                server_env |= {"MLOPS_SERVE_CAPTURE_URL": "s3://clothes/bench", "MLOPS_SERVE_CAPTURE_INTERVAL": "1"}
            servers[name] = start([sys.executable, "-m", "serving"], server_env, f"http://127.0.0.1:{port}")
            urls[name] = f"http://127.0.0.1:{port}/models/clothes/v1"
        for name in VARIANTS:
            run_wrk(urls[name], single, args.connections, 2)  # warm-up
        measured: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name in VARIANTS:
                result = run_wrk(urls[name], single, args.connections, args.seconds)
                measured[name].append(result.requests_per_s)
                rate, p99 = result.requests_per_s, result.p99_ms
                print(f"{name:8s} {rate:8.0f} req/s p99 {p99:6.2f} ms errors {result.errors}")
    finally:
        for process in servers.values():
            stop(process)
    bench = store.client("bench")
    shipped = list(bench.keys(bench.key("predictions")))
    print(f"capture shipped {len(shipped)} prediction-log files during the measurement")
    return {name: statistics.median(values) for name, values in measured.items()}


def upload_rate(workdir: Path, store, records: int) -> float:
    """Records a second one capture thread ships, from a backlog of full-rate files."""
    directory = workdir / "backlog"
    log = PredictionLog(directory, rotate_seconds=3600)
    rng = np.random.default_rng(0)
    images = rng.random((256, 28, 28, 1), dtype=np.float32)
    probabilities = rng.dirichlet(np.ones(10), 256).astype(np.float32)
    for i in range(records):
        k = i % 256
        log.log_predictions([f"{i:036x}"], "clothes", 1, probabilities[k : k + 1], images[k : k + 1])
        if i % 4096 == 4095:
            log.flush()
    log.close()  # the last file rotated and compressed too
    files = sorted(directory.glob("predictions-*.jsonl.gz"))
    size = sum(path.stat().st_size for path in files)
    capture = Capture(directory, store.client("upload"), "bench-node")
    started = time.perf_counter()
    shipped = capture.ship()
    seconds = time.perf_counter() - started
    print(f"upload: {records} records in {shipped} files ({size / 1e6:.1f} MB compressed) shipped in {seconds:.2f} s")
    return records / seconds


READ_WINDOW = """
import json, resource, sys, time
from serving.log.object_store import ObjectStore
from tasks.monitoring.window import read_summary
from tasks.params import ModelRef
since, until = float(sys.argv[1]), float(sys.argv[2])
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the monitor's libraries, before reading
started = time.perf_counter()
merged = read_summary(None, ObjectStore("s3://clothes/monitor"), ModelRef("clothes", 1), since, until, 10)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"n": merged.n, "seconds": seconds, "rss_mb": peak - imported, "imported_mb": imported}))
"""


def monitor_hour(store, rate: float, nodes: int = 2, workers: int = 2) -> dict[int, dict]:
    """An hour of minute summaries as `nodes` x `workers` workers at `rate` predictions/s together write
    them, shipped to the store; then the monitor's read and merge of the last 15 and 60 minutes, each in
    a fresh process (its time and peak memory)."""
    client = store.client("monitor")
    rng = np.random.default_rng(1)
    per_worker = int(rate * 60 / (nodes * workers))
    probabilities = rng.dirichlet(np.ones(10) * 0.3, per_worker)
    columns = {key: rng.beta(2, 5, per_worker) for key in ("mean", "std", "dark_fraction")}
    columns["confidence"] = probabilities.max(axis=1)
    until = minute_of(time.time())
    directory = Path(tempfile.mkdtemp(prefix="clothes-bench-summaries-"))
    try:
        for node in range(nodes):
            for minute in range(until - 3600, until, 60):
                for worker in range(workers):
                    summary = TrafficSummary.empty("clothes", 1, 10, minute)
                    summary.add_predictions(probabilities.argmax(axis=1), columns, probabilities)
                    name = f"{minute}-host{worker}-{worker}-{time.time_ns()}.json"
                    path = directory / "summaries" / "clothes" / "1" / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(summary.to_json())
            Capture(directory, client, f"node-{node}").ship()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    found = {}
    for minutes in (15, 60):
        command = [sys.executable, "-c", READ_WINDOW, str(until - minutes * 60), str(until - 1)]
        result = subprocess.run(command, env={**os.environ, **store.env}, capture_output=True, text=True, check=True)
        found[minutes] = json.loads(result.stdout.strip().splitlines()[-1])
        assert found[minutes]["n"] == per_worker * nodes * workers * minutes, found
        read = found[minutes]
        print(
            f"monitor: {minutes} minutes, {read['n']} predictions from {nodes * workers * minutes} summaries: "
            f"{read['seconds']:.2f} s, {read['rss_mb']:.0f} MB over the {read['imported_mb']:.0f} MB of its imports"
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="load duration per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--records", type=int, default=300_000, help="records in the upload backlog")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/bench_capture.py needs wrk: apt-get install wrk")
    workdir = Path(tempfile.mkdtemp(prefix="clothes-bench-capture-"))
    try:
        _keras, model_root, _flagged, _uri, images = prepare_model(workdir, args.data_dir)
        single = write_loads(workdir, images, 1)["single"]
        with running_store(workdir / "store") as store:
            capacity = throughput(args, workdir, model_root, single, store)
            rate = upload_rate(workdir, store, args.records)
            monitor = monitor_hour(store, capacity["local"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"monitor: hour_seconds={monitor[60]['seconds']:.2f} hour_rss_mb={monitor[60]['rss_mb']:.0f} "
        f"quarter_rss_mb={monitor[15]['rss_mb']:.0f}"
    )
    print(f"capture: single_ratio={capacity['capture'] / capacity['local']:.3f} upload_records_per_s={rate:.0f}")


if __name__ == "__main__":
    main()
