"""What production throws at the server: image bombs, broken model versions, a failing log disk,
HTTP edge cases. The app-level cases use Flask's test client; slow clients need the real server
(test_serving_reliability.py)."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from serving import create_app
from serving.log.prediction_log import PredictionLog
from serving.models.store import ModelStore
from serving.settings import ServingSettings

IMAGE = {"image": [[0] * 28] * 28}


def png(width: int, height: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 200, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


# --- image budget ------------------------------------------------------------------------------------


def test_pixel_bombs_are_refused_from_the_header_before_decoding(client):
    bomb = png(6300, 6300)  # ~40 KB of file, 40 million pixels
    assert len(bomb) < 100_000
    started = time.thread_time()  # this thread's own CPU time: the app runs in it, nothing else counts
    response = client.post("/models/clothes/v1", data=bomb, content_type="image/png")
    assert time.thread_time() - started < 0.05  # decoding 40 million pixels would take seconds
    assert response.status_code == 413
    assert "6300x6300" in response.json["error"]


def test_large_jpeg_photos_decode_at_reduced_scale_within_budget(client):
    photo = jpeg(4000, 3000)  # 12 MP: over the per-image budget at full scale, fine with DCT scaling
    started = time.thread_time()
    response = client.post("/models/clothes/v1", data=photo, content_type="image/jpeg")
    assert response.status_code == 200, response.json
    assert time.thread_time() - started < 0.25  # a full-scale decode of 12 MP costs several times more


def test_request_pixel_budget_and_file_count(model_root):
    settings = ServingSettings(max_batch=4, max_request_pixels=3_000_000)
    client = create_app(model_root, settings).test_client()
    files = {"file": [(io.BytesIO(png(1200, 1200)), f"{i}.png") for i in range(3)]}  # 4.3 MP in all
    response = client.post("/models/clothes/v1", data=files, content_type="multipart/form-data")
    assert response.status_code == 413
    assert "per request" in response.json["error"]
    many = {"file": [(io.BytesIO(png(28, 28)), f"{i}.png") for i in range(20)]}
    response = client.post("/models/clothes/v1", data=many, content_type="multipart/form-data")
    assert response.status_code == 413
    assert "more than 4 files" in response.json["error"]
    few = {"file": [(io.BytesIO(png(28, 28)), f"{i}.png") for i in range(4)]}
    assert client.post("/models/clothes/v1", data=few, content_type="multipart/form-data").status_code == 200


# --- HTTP details ------------------------------------------------------------------------------------


def test_405_says_which_methods_are_allowed(client):
    response = client.delete("/models/clothes/v1")
    assert response.status_code == 405
    assert response.json["error"]
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}


@pytest.mark.parametrize(
    "pixels",
    [
        [[True] * 28] * 28,
        [["1"] * 28] * 28,
        [[0] * 27 + [False]] + [[0] * 28] * 27,
        [[0] * 27 + ["7"]] + [[0] * 28] * 27,
    ],
)
def test_booleans_and_numeric_strings_are_not_pixels(client, pixels):
    response = client.post("/models/clothes/v1", json={"image": pixels})
    assert response.status_code == 400
    assert response.json["error"]
    tfs = client.post("/v1/models/clothes:predict", json={"instances": [pixels]})
    assert tfs.status_code == 400
    assert tfs.json["error"] == response.json["error"] != ""


def test_chunked_body_over_the_limit_is_413(model_root):
    client = create_app(model_root, ServingSettings(max_body_bytes=4096)).test_client()
    body = b'{"image": [' + (b"[" + b"0," * 27 + b"0],") * 200  # no Content-Length: read until the limit
    response = client.post(
        "/models/clothes/v1",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert "4096 bytes" in response.json["error"]


def test_metrics_content_type_names_charset_once(client):
    content_type = client.get("/metrics").headers["Content-Type"]
    assert content_type.count("charset") == 1
    assert content_type.startswith("text/plain")


def test_openapi_bodies_require_what_the_server_requires(client):
    document = client.get("/openapi.json").json

    def resolve(schema: dict) -> dict:
        return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema

    paths = document["paths"]
    tfs = resolve(paths["/v1/models/{name}:predict"]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert all(resolve(option)["required"] for option in tfs["oneOf"])
    feedback = paths["/models/{name}/v{version}/feedback"]["post"]["requestBody"]["content"]["application/json"]
    assert resolve(feedback["schema"])["anyOf"] == [{"required": ["label"]}, {"required": ["class_id"]}]


# --- broken model versions ---------------------------------------------------------------------------


@pytest.fixture
def store_with_broken_versions(model_root, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(model_root, root)
    good = root / "clothes" / "1"
    for version, damage in {
        3: lambda d: (d / "model.tflite").write_bytes((good / "model.tflite").read_bytes()[:5000]),  # truncated
        4: lambda d: (d / "model.tflite").write_bytes(b"garbage" * 100),
        5: lambda d: (d / "metadata.json").write_text("{not json"),
        6: lambda d: (d / "metadata.json").write_text('{"name": "clothes"}'),  # no class_names
    }.items():
        shutil.copytree(good, root / "clothes" / str(version))
        damage(root / "clothes" / str(version))
    return root


def test_broken_versions_are_skipped_named_and_listed(store_with_broken_versions, caplog):
    app = create_app(store_with_broken_versions)
    client = app.test_client()
    listing = client.get("/models").json["models"][0]
    assert listing["versions"] == [1, 2]
    assert listing["latest"] == 2
    assert sorted(f["version"] for f in listing["failed"]) == [3, 4, 5, 6]
    for version in (3, 4, 5, 6):
        assert str(store_with_broken_versions / "clothes" / str(version)) in caplog.text
    assert client.get("/health/ready").status_code == 200
    assert client.post("/models/clothes/v1", json=IMAGE).status_code == 200
    assert client.post("/models/clothes/v4", json=IMAGE).status_code == 404
    assert 'clothes_model_versions_failed{model="clothes",version="4"} 1.0' in client.get("/metrics").text


def test_a_model_with_no_working_version_fails_loudly(tmp_path, model_root):
    root = tmp_path / "models"
    shutil.copytree(model_root / "clothes" / "1", root / "clothes" / "1")
    (root / "clothes" / "1" / "model.tflite").write_bytes(b"not a model")
    store = ModelStore.discover(root)
    with pytest.raises(RuntimeError, match=str(root / "clothes" / "1")):
        store.warm_up()


# --- prediction log on a failing disk ----------------------------------------------------------------


def _records(directory: Path) -> list[dict]:
    """Every line of the log's files, the ones closed (rotated, gzipped) too."""
    files = sorted(directory.glob("predictions-*"))
    lines = b"".join(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes() for p in files)
    lines = lines.splitlines()
    return [orjson.loads(line) for line in lines if line.strip()]


def test_prediction_log_survives_a_full_disk_and_resumes(tmp_path, caplog):
    log = PredictionLog(tmp_path, flush_seconds=0.01, retry_seconds=0.05, max_pending_images=64)
    batch = np.zeros((2, 28, 28, 1), np.float32)
    probabilities = np.full((2, 10), 0.1, np.float32)

    def predict(n: int) -> None:
        for _ in range(n):
            log.log_predictions(["a" * 32, "b" * 32], "clothes", 1, probabilities, batch)

    predict(1)
    log.flush()
    log.path.rename(tmp_path / "predictions-before.jsonl")
    log._handle.close()
    log.path.symlink_to("/dev/full")  # every write now fails with ENOSPC, as on a full disk
    predict(5)
    deadline = time.monotonic() + 5
    while log.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.error
    assert "No space left" in log.error
    predict(1000)  # while degraded nothing queues: memory stays flat
    assert log._pending == []
    assert log._dropped >= 2000
    assert caplog.text.count("not writable") == 1  # one warning per incident

    log.path.unlink()  # space is back
    deadline = time.monotonic() + 5
    while log.error is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.error is None
    assert "writable again" in caplog.text
    predict(1)
    log.close()
    records = _records(tmp_path)
    gap = next(r for r in records if r["type"] == "log_gap")
    assert gap["dropped"] >= 2010
    assert sum(len(r["ids"]) for r in records if r["type"] == "predictions") == 4  # before and after


def test_readiness_reports_a_degraded_log_but_stays_ready(model_root, tmp_path):
    app = create_app(model_root, ServingSettings(prediction_log_dir=tmp_path))
    client = app.test_client()
    assert client.get("/health/ready").json["prediction_log"] == "ok"
    app.plane.log.error = "OSError: [Errno 28] No space left on device"
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json["prediction_log"].startswith("degraded")
    app.plane.log.close()


def test_prediction_log_bounds_its_queue(tmp_path):
    log = PredictionLog(tmp_path, flush_seconds=60, max_pending_images=10)
    batch = np.zeros((4, 28, 28, 1), np.float32)
    for _ in range(5):
        log.log_predictions(["a" * 32] * 4, "clothes", 1, np.full((4, 10), 0.1, np.float32), batch)
    assert log._pending_images <= 10
    assert log._dropped == 12
    log.close()


GEVENT_WORKER = """
import sys, numpy as np, gevent.monkey
from serving.log.prediction_log import PredictionLog
log = PredictionLog(sys.argv[1])  # as the preloaded app makes it: before gevent patches threading
gevent.monkey.patch_all()
import gevent
log.start_in_worker()  # what gunicorn's post_worker_init does
batch, probabilities = np.zeros((1, 28, 28), np.uint8), np.full((1, 10), 0.1, np.float32)
first = [gevent.spawn(log.log_predictions, [str(i)], "clothes", 1, probabilities, batch) for i in range(3)]
gevent.joinall(first, timeout=5)
log.close()
print(sum(g.successful() for g in first))
"""


def test_prediction_log_in_a_gevent_worker_takes_concurrent_first_records(tmp_path):
    """Regression: locks made before gevent's patch hung a worker on its first concurrent predictions."""
    result = subprocess.run(
        [sys.executable, "-c", GEVENT_WORKER, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "3", result.stderr[-2000:]
    assert len(_records(tmp_path)) == 3


def test_compressed_garbage_png_is_a_400(client):
    header = b"\x89PNG\r\n\x1a\n"
    body = header + zlib.compress(b"x" * 1000)
    answer = client.post("/models/clothes/v1", data=body, content_type="image/png")
    assert answer.status_code == 400
    assert answer.json == {"error": "could not decode the image; send a valid PNG or JPEG"}
