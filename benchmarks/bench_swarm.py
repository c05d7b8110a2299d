"""Swarm benchmark: single-image throughput with 1 and 2 serving replicas, and failed requests while a
new version rolls out and while a replica is killed.

Needs a swarm manager (`make swarm-up`) and wrk. Exports an untrained LeNet-5 (same cost per request as
a trained one) as v1 and v2 images, deploys them with the pipeline's own `tasks.release.targets.swarm`, loads the port
on 127.0.0.1 with wrk (c=8, keep-alive) and removes everything afterwards. Configurations: 1 replica
limited to both cores, 1 replica at the default limit of 1 core, 2 replicas of 1 core each (the
default). Last line:
swarm: one_replica=<req/s> two_replicas=<req/s> ratio=<x> update_errors=<n>/<requests> kill_errors=<n>/<requests>
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import orjson
from wrk import Load, parse_report, run_wrk, wrk_command

from tasks.data.dataset import FASHION_MNIST_CLASSES
from tasks.network import free_port
from tasks.release.docker_engine import require_docker
from tasks.release.export import build_metadata, export_model
from tasks.release.image import build_serving_image
from tasks.release.targets.swarm import deploy_service, production_service, remove_service, running_tasks
from tasks.settings import PROJECT_DIR
from tasks.training.train import build_lenet5

NAME = "clothes-bench-swarm"


def build_images(client, workdir: Path) -> list[str]:
    model = build_lenet5()
    tags = []
    for version in (1, 2):
        model_dir = export_model(
            model, workdir / "models", build_metadata(model, "clothes", version, FASHION_MNIST_CLASSES, None, {})
        )
        tag = f"{NAME}:{version}"
        build_serving_image(
            client, [model_dir], tag, wheelhouse_dir=PROJECT_DIR / "wheelhouse", base_image="python:3.11-slim"
        )
        tags.append(tag)
    return tags


def under_load(url: str, load: Load, seconds: float, action) -> tuple[int, int]:
    """(failed, sent) requests of a wrk run during which `action()` runs."""
    wrk = subprocess.Popen(wrk_command(url, load, 8, seconds), stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    action()
    out, _ = wrk.communicate(timeout=seconds + 60)
    report = parse_report(out)
    return report.errors, report.requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    client = require_docker()
    workdir = Path(tempfile.mkdtemp(prefix="clothes-bench-swarm-"))
    v1, v2 = build_images(client, workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}/models/clothes/latest"
    (workdir / "body.json").write_bytes(orjson.dumps({"image": [[0] * 28] * 28}))
    load = Load(workdir / "body.json", "application/json")
    common = {"deploy_name": NAME, "host": "127.0.0.1", "port": port, "log_dir": workdir / "logs"}
    (workdir / "logs").mkdir()
    configurations = {
        "1 replica, 2 cores": (1, 2.0),
        "1 replica, 1 core": (1, 1.0),
        "2 replicas, 1 core each": (2, 1.0),
    }
    results: dict[str, list[float]] = {name: [] for name in configurations}
    quiet = {"timeout": 120, "log": lambda _line: None}
    try:
        for _ in range(args.rounds):
            for name, (replicas, cpus) in configurations.items():
                deploy_service(client, v1, 1, replicas=replicas, cpus=cpus, **quiet, **common)
                run_wrk(url, load, 8, 2)  # warm-up
                results[name].append(run_wrk(url, load, 8, args.seconds).requests_per_s)
        print("| replicas | req/s (median of rounds) | rounds |\n| --- | --- | --- |")
        for name, values in results.items():
            print(f"| {name} | {statistics.median(values):,.0f} | {', '.join(f'{v:,.0f}' for v in values)} |")

        deploy_service(client, v1, 1, replicas=2, cpus=1.0, **quiet, **common)
        started = time.monotonic()
        update = under_load(
            url, load, 40, lambda: deploy_service(client, v2, 2, timeout=120, log=print, replicas=2, cpus=1.0, **common)
        )
        seconds = time.monotonic() - started
        print(f"rolling update v1 -> v2 under load: {update[0]} failed of {update[1]} ({seconds:.0f} s)")

        def kill_one() -> None:
            service = production_service(client, NAME)
            victim = running_tasks(service, v2)[0]
            client.containers.get(victim["Status"]["ContainerStatus"]["ContainerID"]).kill()
            started = time.monotonic()
            while len([t for t in running_tasks(service, v2) if t["ID"] != victim["ID"]]) < 2:
                time.sleep(0.5)
            print(f"killed one replica: back to 2 running replicas in {time.monotonic() - started:.1f} s")

        killed = under_load(url, load, 30, kill_one)
        print(f"replica killed under load: {killed[0]} failed of {killed[1]}")
    finally:
        remove_service(client, NAME)
        for image in client.images.list(name=NAME):
            client.images.remove(image.id, force=True)
    one, two = statistics.median(results["1 replica, 1 core"]), statistics.median(results["2 replicas, 1 core each"])
    print(
        f"swarm: one_replica={one:.0f} two_replicas={two:.0f} ratio={two / one:.2f} "
        f"update_errors={update[0]}/{update[1]} kill_errors={killed[0]}/{killed[1]}"
    )


if __name__ == "__main__":
    main()
