"""Serving benchmark: this server against its peers on the same model, same machine, same load.

Peers: the course's seed server (Flask's development server, `model.predict()` per request) and
`mlflow models serve` (2 workers) on the same registered model version. Ours runs as in production
(gunicorn, 2 workers), without and with the prediction log, and with the out-of-distribution flag (the
same model exported with its extra outputs and `ood.json`: what every pipeline export now has) against
without it. Loads: one image as JSON; batches of
`--batch` images as JSON (the course's route), as Open Inference Protocol binary tensors and as raw
application/octet-stream pixels. Images are Fashion-MNIST test images with background noise 1-40
added, so every pixel is a 1-3 digit number (the dataset's own zeros make JSON unrealistically cheap)
and every image stays in the dataset's form.

Load comes from wrk (Debian package `wrk`) on 127.0.0.1 at a fixed concurrency for a fixed time; every
(server, load) pair is measured once per round, rounds alternate, the median round counts. The last
line is machine-readable:
serving: single=<req/s> p99_ms=<ms> seed=<req/s> mlflow=<req/s> batch_json_images_per_s=<n>
batch_binary_images_per_s=<n> ood_single_ratio=<with/without> ood_batch_ratio=<with/without, OIP binary>
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson
from wrk import Load, LoadResult, run_wrk

from serving.log.reader import read_records
from serving.protocols.oip import HEADER_LENGTH
from tasks.monitoring.drift import predictions_of
from tasks.network import free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[1]


def prepare_model(workdir: Path, data_dir: Path | None) -> tuple[Path, Path, Path, str, np.ndarray]:
    """A LeNet-5 trained briefly on real data: saved as .keras (seed server), exported without and with
    the out-of-distribution flag (ours) and registered in a throwaway MLflow store (`mlflow models
    serve`). Returns the store's URI too."""
    import mlflow

    from tasks.data.sources import load_fashion_mnist
    from tasks.evaluation.ood import fit_detector
    from tasks.params import TrainParams
    from tasks.registry.policy import log_candidate_model, register_candidate
    from tasks.release.export import build_metadata, export_model
    from tasks.settings import Settings
    from tasks.training.train import train_model

    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(data_dir)).subset(10_000, 1_000)
    params = TrainParams(epochs=1)
    model = train_model(dataset, params).model
    keras_file = workdir / "model.keras"
    model.save(keras_file)
    model_root, flagged_root = workdir / "models", workdir / "models-ood"
    metadata = build_metadata(model, "clothes", 1, dataset.class_names, None, {})
    export_model(model, model_root, metadata)
    export_model(model, flagged_root, metadata, fit_detector(model, dataset, params))
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment("bench-serving", artifact_location=(workdir / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        register_candidate(log_candidate_model(model, dataset.x_test[:5]), "clothes", {})
    noise = np.random.default_rng(0).integers(1, 41, dataset.x_test.shape)
    images = np.clip(dataset.x_test.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    return keras_file, model_root, flagged_root, tracking_uri, images


def write_loads(workdir: Path, images: np.ndarray, batch: int) -> dict[str, Load]:
    def write(name: str, data: bytes) -> Path:
        (path := workdir / name).write_bytes(data)
        return path

    one, many = images[:1], images[:batch]
    oip_header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "UINT8",
                    "shape": list(many.shape),
                    "parameters": {"binary_data_size": many.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    json, octet = "application/json", "application/octet-stream"
    oip_length = str(len(oip_header))
    mlflow_inputs = {"inputs": (one[..., None] / 255.0).tolist()}  # the model's own input: (N, 28, 28, 1) in 0-1
    return {
        "single": Load(write("single.json", orjson.dumps({"image": one[0].tolist()})), json),
        "mlflow": Load(write("mlflow.json", orjson.dumps(mlflow_inputs)), json),
        "json": Load(write("batch.json", orjson.dumps({"images": many.tolist()})), json, batch),
        "binary": Load(write("batch.oip", oip_header + many.tobytes()), octet, batch, {HEADER_LENGTH: oip_length}),
        "octet": Load(write("batch.bin", many.tobytes()), octet, batch),
    }


def predictions_served(base_url: str) -> float:
    """Predictions the server counted (Prometheus), to compare with what its log holds."""
    import urllib.request

    text = urllib.request.urlopen(f"{base_url}/metrics", timeout=10).read().decode()
    return sum(float(v) for v in re.findall(r"^clothes_predictions_total\{[^}]*\} (\S+)$", text, re.MULTILINE))


def start(command: list[str], env: dict[str, str], ready_url: str, path: str = "/health/ready") -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_ready(ready_url, 180, lambda: process.poll() is None, path=path)
    return process


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="load duration per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (with 3 the batch ratios move +-3%%)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/bench_serving.py needs wrk: apt-get install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="clothes-bench-"))
    keras_file, model_root, flagged_root, tracking_uri, images = prepare_model(workdir, args.data_dir)
    loads = write_loads(workdir, images, args.batch)
    # `mlflow models serve` execs `uvicorn` from PATH: this interpreter's environment first.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    ours = {
        "MLOPS_SERVE_HOST": "127.0.0.1",
        "MLOPS_SERVE_WORKERS": str(args.workers),
        "MLOPS_SERVE_MODEL_ROOT": str(model_root),
    }
    servers: dict[str, subprocess.Popen] = {}
    urls: dict[str, str] = {}
    try:
        port = free_port()
        seed = [sys.executable, "benchmarks/reference_server.py", "--model", str(keras_file), "--port", str(port)]
        servers["seed"] = start(seed, env, f"http://127.0.0.1:{port}", "/models/clothes/v1")
        urls["seed"] = f"http://127.0.0.1:{port}/models/clothes/v1"
        port = free_port()
        servers["mlflow"] = start(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                "models:/clothes/1",
                "--env-manager",
                "local",
                "--workers",
                "2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env,
            f"http://127.0.0.1:{port}",
            "/ping",
        )
        urls["mlflow"] = f"http://127.0.0.1:{port}/invocations"
        variants = (
            ("ours", {}),
            ("ours+log", {"MLOPS_SERVE_PREDICTION_LOG_DIR": str(workdir / "log")}),
            ("ours+ood", {"MLOPS_SERVE_MODEL_ROOT": str(flagged_root)}),
        )
        for name, extra in variants:
            port = free_port()
            server_env = {**env, **ours, **extra, "MLOPS_SERVE_PORT": str(port)}
            servers[name] = start([sys.executable, "-m", "serving"], server_env, f"http://127.0.0.1:{port}")
            urls[name] = f"http://127.0.0.1:{port}"

        def url(server: str, load: str) -> str:
            if load == "binary":
                return f"{urls[server]}/v2/models/clothes/versions/1/infer"
            return urls[server] if server in ("seed", "mlflow") else f"{urls[server]}/models/clothes/v1"

        pairs = [
            ("seed", "single"),
            ("mlflow", "mlflow"),
            ("ours", "single"),
            ("ours+log", "single"),
            ("ours+ood", "single"),
            ("ours", "json"),
            ("ours+log", "json"),
            ("ours+ood", "json"),
            ("ours", "binary"),
            ("ours+log", "binary"),
            ("ours+ood", "binary"),
            ("ours", "octet"),
        ]
        for server, load in pairs:  # warm-up: TF builds its graph on the first predict()
            run_wrk(url(server, load), loads[load], 2, 2)
        results: dict[tuple[str, str], list[LoadResult]] = {pair: [] for pair in pairs}
        for _ in range(args.rounds):
            for server, load in pairs:
                results[server, load].append(run_wrk(url(server, load), loads[load], args.connections, args.seconds))
        served = predictions_served(urls["ours+log"])
    finally:
        for process in servers.values():
            stop(process)  # the prediction log flushes on the way out
        records = read_records(workdir / "log", since=0)  # read as the drift monitor reads it
        logged = len(predictions_of(records))
        # Shed under overload by design (bounded memory), and said in the log: `log_gap` lines count them.
        dropped = sum(int(r["dropped"]) for r in records if r["type"] == "log_gap")
        shutil.rmtree(workdir, ignore_errors=True)

    median = {pair: sorted(r, key=lambda r: r.requests_per_s)[len(r) // 2] for pair, r in results.items()}
    print(f"{'server':<10}{'load':<34}{'req/s':>9}{'images/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    titles = {
        "single": "1 image, JSON",
        "mlflow": "1 image, MLflow JSON inputs",
        "json": f"{args.batch} images, JSON",
        "binary": f"{args.batch} images, OIP binary",
        "octet": f"{args.batch} images, octet-stream",
    }
    for (server, load), r in median.items():
        print(
            f"{server:<10}{titles[load]:<34}{r.requests_per_s:>9.1f}{r.requests_per_s * loads[load].images:>10.0f}"
            f"{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.errors:>8}"
        )
    print(
        f"wrk -t1 -c{args.connections}, {args.seconds} s per run, median of {args.rounds} alternating rounds, "
        f"{os.cpu_count()} cores, {args.workers} workers"
    )
    errors = sum(r.errors for rounds in results.values() for r in rounds)
    if errors:
        print(f"WARNING: {errors} failed requests", file=sys.stderr)
    print(
        f"prediction log: {logged} of the {served:.0f} predictions served with it on are in the log, "
        f"{dropped} more reported dropped by its log_gap lines"
    )
    single = median["ours", "single"]
    ood_single = median["ours+ood", "single"].requests_per_s / single.requests_per_s
    ood_batch = median["ours+ood", "binary"].requests_per_s / median["ours", "binary"].requests_per_s
    print(
        f"serving: single={single.requests_per_s:.0f} p99_ms={single.p99_ms:.1f} "
        f"seed={median['seed', 'single'].requests_per_s:.0f} mlflow={median['mlflow', 'mlflow'].requests_per_s:.0f} "
        f"batch_json_images_per_s={median['ours', 'json'].requests_per_s * args.batch:.0f} "
        f"batch_binary_images_per_s={median['ours', 'binary'].requests_per_s * args.batch:.0f} "
        f"ood_single_ratio={ood_single:.3f} ood_batch_ratio={ood_batch:.3f}"
    )


if __name__ == "__main__":
    main()
