"""Container benchmark: serving image size, cold build, model-only rebuild, container start to ready.

Needs a Docker engine (scripts/docker-engine.sh up). Trains nothing: exports an untrained LeNet-5,
which is the same size as a trained one. Last line:
container: image_mb=<MB> cold_build_s=<s> rebuild_s=<s> ready_s=<median s> ready_max_s=<s>
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tasks.data.dataset import FASHION_MNIST_CLASSES
from tasks.network import free_port, wait_until_ready
from tasks.release.docker_engine import require_docker
from tasks.release.export import build_metadata, export_model
from tasks.release.image import build_serving_image
from tasks.settings import PROJECT_DIR
from tasks.training.train import build_lenet5

TAG = "clothes-bench:latest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=5, help="container starts to time")
    parser.add_argument("--base-image", default="python:3.11-slim")
    args = parser.parse_args()
    client = require_docker()
    workdir = Path(tempfile.mkdtemp(prefix="clothes-bench-container-"))
    model = build_lenet5()
    model_dir = export_model(
        model, workdir / "models", build_metadata(model, "clothes", 1, FASHION_MNIST_CLASSES, None, {})
    )

    def build(nocache: bool) -> float:
        return build_serving_image(
            client,
            [model_dir],
            TAG,
            wheelhouse_dir=PROJECT_DIR / "wheelhouse",
            base_image=args.base_image,
            nocache=nocache,
        )[1]

    cold = build(nocache=True)
    metadata = json.loads((model_dir / "metadata.json").read_text())
    (model_dir / "metadata.json").write_text(json.dumps({**metadata, "created": time.time()}))  # a new model
    rebuild = build(nocache=False)
    size_mb = client.images.get(TAG).attrs["Size"] / 1e6

    ready_times = []
    for _ in range(args.starts):
        port = free_port()
        started = time.monotonic()
        container = client.containers.run(TAG, detach=True, ports={"8080/tcp": ("127.0.0.1", port)})
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", timeout=60)
            ready_times.append(time.monotonic() - started)
        finally:
            container.remove(force=True)
    client.images.remove(TAG, force=True)

    print(f"image size           {size_mb:8.1f} MB   (target <= 350)")
    print(f"cold build           {cold:8.1f} s    (dependencies installed from the wheelhouse, no cache)")
    print(f"model-only rebuild   {rebuild:8.1f} s    (target <= 15)")
    print(
        f"start to ready       {statistics.median(ready_times):8.2f} s    median of {len(ready_times)}, "
        f"max {max(ready_times):.2f} (target <= 3)"
    )
    print(
        f"container: image_mb={size_mb:.0f} cold_build_s={cold:.1f} rebuild_s={rebuild:.1f} "
        f"ready_s={statistics.median(ready_times):.2f} ready_max_s={max(ready_times):.2f}"
    )


if __name__ == "__main__":
    main()
