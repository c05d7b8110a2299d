"""The real production server (gunicorn, 2 workers) on a free loopback port, driven by the real CLI."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import numpy as np
import orjson
import pytest
import requests

from serving.client import ClientError, classify, main
from tasks.data.dataset import FASHION_MNIST_CLASSES
from tasks.load_generator import load_burst
from tests.conftest import REPO

pytestmark = pytest.mark.slow
EXAMPLES = sorted((REPO / "examples" / "images").glob("*.png"))


def true_label(path: Path) -> str:
    slug = path.name.rsplit("_", 1)[0]
    return next(n for n in FASHION_MNIST_CLASSES if re.sub(r"[^a-z0-9]", "-", n.lower()) == slug)


def test_cli_classifies_the_example_images(server, capsys):
    assert len(EXAMPLES) == 100
    assert main([*map(str, EXAMPLES), "--url", f"{server}/models/clothes/latest"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 100
    correct = sum(
        line.split(": ", 1)[1].rsplit(" (", 1)[0] == true_label(path)
        for line, path in zip(lines, EXAMPLES, strict=True)
    )
    assert correct >= 80, f"{correct}/100 right"


def test_library_and_errors_over_http(server):
    prediction = classify(EXAMPLES[0], url=f"{server}/models/clothes/v1")
    assert prediction.label in FASHION_MNIST_CLASSES
    assert len(prediction.probabilities) == 10
    with pytest.raises(ClientError, match="404: unknown model 'shoes'"):
        classify(EXAMPLES[0], url=f"{server}/models/shoes/v1")


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),  # header field
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # request line over 4094 bytes
        (b"NOT A REQUEST\r\n\r\n", 400),
    ],
)
def test_errors_the_http_server_itself_answers_are_json_too(server, request_head, status):
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert b"Content-Type: application/json" in head, answer[:300]
    assert orjson.loads(body)["error"], answer[:300]


def test_the_first_label_wins_whichever_worker_the_next_one_reaches(server, server_tmp):
    answer = requests.post(f"{server}/models/clothes/v1", json={"image": [[0] * 28] * 28}, timeout=10).json()
    label = {"id": answer["predictions"][0]["id"], "class_id": 3}
    (metrics_dir,) = server_tmp.glob("clothes-prometheus-*")
    by_worker: dict[str, requests.Session] = {}  # a keep-alive connection held by each worker
    sessions = []
    for _ in range(50):
        if len(by_worker) == 2:
            break
        before = requests_per_worker(metrics_dir)
        session = requests.Session()
        sessions.append(session)
        assert session.post(f"{server}/models/clothes/v1", json={"image": [[0] * 28] * 28}, timeout=10).ok
        (worker,) = [pid for pid, n in requests_per_worker(metrics_dir).items() if n > before.get(pid, 0.0)]
        by_worker.setdefault(worker, session)
    try:
        assert len(by_worker) == 2, "no connection reached the second worker"
        first, second = by_worker.values()
        assert first.post(f"{server}/models/clothes/v1/feedback", json=label, timeout=10).status_code == 202
        refused = second.post(f"{server}/models/clothes/v1/feedback", json=label, timeout=10)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == f"prediction '{label['id']}' is already labelled; the first label stands"
    finally:
        for session in sessions:
            session.close()


def test_metrics_aggregate_across_workers(server):
    import urllib.request

    def predicted_by_v2() -> float:
        text = urllib.request.urlopen(f"{server}/metrics", timeout=5).read().decode()
        counts = re.findall(r'clothes_predictions_total\{label="[^"]+",model="clothes",version="2"\} (\S+)', text)
        return sum(float(c) for c in counts)

    before = predicted_by_v2()
    for _ in range(20):  # new connections: both workers answer some of them
        classify(EXAMPLES[1], url=f"{server}/models/clothes/v2")
    assert predicted_by_v2() - before == 20


def test_load_burst_sends_exactly_what_it_is_asked_and_counts_failures(server):
    body = orjson.dumps({"image": np.zeros((28, 28), np.uint8).tolist()})
    ok = load_burst(f"{server}/models/clothes/v1", body, requests=60, concurrency=4)
    assert ok["load_requests"] == 60
    assert ok["load_errors"] == 0
    assert ok["p99_ms"] >= ok["p50_ms"] > 0
    wrong = load_burst(f"{server}/models/clothes/v9", body, requests=10, concurrency=2)
    assert wrong["load_requests"] == 10
    assert wrong["load_errors"] == 10


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_speaks_the_open_inference_protocol(server, small_dataset, binary):
    """NVIDIA's own client (geventhttpclient underneath) against the real server: metadata, both
    datatypes, JSON and binary tensors in and out, and its error reporting."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    x, y = small_dataset.x_test[:64], small_dataset.y_test[:64]
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("clothes", "2")
    assert client.get_model_metadata("clothes")["inputs"][0] == {
        "name": "image",
        "datatype": "UINT8",
        "shape": [-1, 28, 28],
    }
    expected = np.argmax(orjson.loads(load_json(f"{server}/models/clothes/v2", {"images": x.tolist()}))["result"], 1)
    for datatype, data in (("UINT8", x), ("FP32", x.astype(np.float32))):
        tensor = triton.InferInput("image", list(data.shape), datatype)
        tensor.set_data_from_numpy(data, binary_data=binary)
        outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "class_id", "label")]
        result = client.infer("clothes", [tensor], model_version="2", outputs=outputs, request_id="batch-1")
        assert result.get_response()["id"] == "batch-1"
        assert result.as_numpy("probabilities").shape == (64, 10)
        assert (result.as_numpy("class_id") == expected).all()
        labels = [label.decode() if binary else label for label in result.as_numpy("label")]
        assert labels == [FASHION_MNIST_CLASSES[c] for c in expected]
        assert (expected == y).mean() > 0.6
    wrong = triton.InferInput("image", [1, 27, 28], "UINT8")
    wrong.set_data_from_numpy(np.zeros((1, 27, 28), np.uint8), binary_data=binary)
    with pytest.raises(InferenceServerException, match=r"has shape \[N, 28, 28\]") as error:
        client.infer("clothes", [wrong])
    assert error.value.status() == "400"
    with pytest.raises(InferenceServerException, match="unknown model 'shoes'"):
        client.get_model_metadata("shoes")


def load_json(url: str, payload: dict) -> bytes:
    import urllib.request

    request = urllib.request.Request(url, orjson.dumps(payload), {"Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=10).read()


def requests_per_worker(metrics_dir: Path) -> dict[str, float]:
    """Requests each worker counted, read from its own multiprocess file with prometheus_client."""
    import shutil
    import tempfile

    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(path, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            counts[path.stem] = (
                registry.get_sample_value(
                    "clothes_http_requests_total",
                    {"endpoint": "/models/<name>/v<int:version>", "method": "POST", "status": "200"},
                )
                or 0.0
            )
    return counts


def test_both_workers_answer_under_keep_alive_load(server, server_tmp):
    """Eight keep-alive connections, as wrk or a client pool opens them: each worker takes its share
    and every connection is served in turn (a function test; the benchmark measures the figures)."""
    (metrics_dir,) = server_tmp.glob("clothes-prometheus-*")
    before = requests_per_worker(metrics_dir)
    body = orjson.dumps({"image": np.zeros((28, 28), np.uint8).tolist()})
    result = load_burst(f"{server}/models/clothes/v1", body, requests=800, concurrency=8)
    assert result["load_errors"] == 0
    counted = {pid: n - before.get(pid, 0.0) for pid, n in requests_per_worker(metrics_dir).items()}
    served = {pid: n for pid, n in counted.items() if n}  # the master has a file too, with nothing served
    assert sum(served.values()) == 800, served
    assert len(served) == 2, served
    assert min(served.values()) >= 80, f"one worker served almost everything: {served}"
