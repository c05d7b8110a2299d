"""What shadow traffic costs production: the champion's single-image throughput (wrk, 8 connections)
and its p99 at half its capacity (wrk paced by a per-connection delay), with mirroring off, at the
default sample (`ReleaseParams().sample`) and at sample 1.0, side by side in one run, rounds
alternating. Three production servers (`python -m serving`, 2 workers, each with its own prediction
log) and one shadow (the same model) run on this machine, as on the docker target.

Last line:
`shadow: single_off=<req/s> single_default=<req/s> ratio_default=<x> single_full=<req/s> ratio_full=<x>
p99_ratio_half_load=<x> dropped=<n>`
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

import orjson
from bench_serving import prepare_model, start, stop, write_loads
from wrk import Load, run_wrk

from serving.mirror import CONFIG_FILE
from tasks.network import free_port
from tasks.params import ReleaseParams

VARIANTS = ("off", "default", "full")


def counter(base: str, name: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="load duration per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/bench_shadow.py needs wrk: apt-get install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="clothes-bench-shadow-"))
    _keras, model_root, _flagged, _uri, images = prepare_model(workdir, args.data_dir)
    single = write_loads(workdir, images, 1)["single"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLOPS_SERVE_HOST": "127.0.0.1", "MLOPS_SERVE_WORKERS": "2"}
    env["MLOPS_SERVE_MODEL_ROOT"] = str(model_root)
    servers, urls = {}, {}
    try:
        port = free_port()
        servers["shadow"] = start(
            [sys.executable, "-m", "serving"], {**env, "MLOPS_SERVE_PORT": str(port)}, f"http://127.0.0.1:{port}"
        )
        shadow_url = f"http://127.0.0.1:{port}"
        samples = {"off": None, "default": ReleaseParams().sample, "full": 1.0}
        for name, sample in samples.items():
            log_dir = workdir / f"log-{name}"
            log_dir.mkdir()
            if sample is not None:
                config = {"url": shadow_url, "model": "clothes", "version": 1, "sample": sample, "timeout": 1.0}
                (log_dir / CONFIG_FILE).write_bytes(orjson.dumps(config))
            port = free_port()
            server_env = {**env, "MLOPS_SERVE_PORT": str(port), "MLOPS_SERVE_PREDICTION_LOG_DIR": str(log_dir)}
            servers[name] = start([sys.executable, "-m", "serving"], server_env, f"http://127.0.0.1:{port}")
            urls[name] = f"http://127.0.0.1:{port}"

        def url(name: str) -> str:
            return f"{urls[name]}/models/clothes/v1"

        for name in VARIANTS:  # warm-up, and the mirror's threads started
            run_wrk(url(name), single, args.connections, 2)
        throughput: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name in VARIANTS:
                result = run_wrk(url(name), single, args.connections, args.seconds)
                throughput[name].append(result.requests_per_s)
                print(
                    f"{name:8s} {result.requests_per_s:8.0f} req/s p99 {result.p99_ms:6.2f} ms errors {result.errors}"
                )
        capacity = {name: statistics.median(values) for name, values in throughput.items()}
        # Half the mirror-off capacity: each connection waits between requests; the wait is corrected
        # twice on the mirror-off server, as latency falls with the load.
        target = capacity["off"] / 2
        delay_ms = args.connections / target * 1000 / 2
        for _ in range(2):
            rate = run_wrk(url("off"), Load(single.body, single.content_type, delay_ms=delay_ms), args.connections, 3)
            per_request_ms = args.connections / rate.requests_per_s * 1000  # delay + latency
            delay_ms = max(0.0, delay_ms + args.connections / target * 1000 - per_request_ms)
        paced = Load(single.body, single.content_type, delay_ms=delay_ms)
        print(f"paced load: {delay_ms:.2f} ms between a connection's requests, for {target:.0f} req/s")
        p99: dict[str, list[float]] = {"off": [], "default": []}
        for _ in range(args.rounds):
            for name in p99:
                result = run_wrk(url(name), paced, args.connections, args.seconds)
                p99[name].append(result.p99_ms)
                print(f"{name:8s} paced {result.requests_per_s:6.0f} req/s p99 {result.p99_ms:6.2f} ms")
        dropped = sum(counter(urls[name], "clothes_shadow_dropped_total") for name in ("default", "full"))
    finally:
        for process in servers.values():
            stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
    p99_ratio = statistics.median(p99["default"]) / statistics.median(p99["off"])
    print(
        f"shadow: single_off={capacity['off']:.0f} single_default={capacity['default']:.0f} "
        f"ratio_default={capacity['default'] / capacity['off']:.3f} single_full={capacity['full']:.0f} "
        f"ratio_full={capacity['full'] / capacity['off']:.3f} p99_ratio_half_load={p99_ratio:.3f} dropped={dropped:.0f}"
    )


if __name__ == "__main__":
    main()
