"""Shadow traffic through real gunicorn servers: production mirrors what clients send to a shadow and
pairs the answers in its prediction log; a shadow that is slow, failing or gone changes nothing for
production's clients."""

from __future__ import annotations

import contextlib
import http.server
import io
import re
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import requests
from PIL import Image

from serving.log.reader import read_records
from serving.log.records import ShadowLine
from serving.mirror import CONFIG_FILE
from tasks.load_generator import probe_latencies
from tests.serving.servers import running_server

pytestmark = pytest.mark.reliability


def write_config(log_dir: Path, url: str, sample: float = 1.0, timeout: float = 1.0) -> None:
    config = {"url": url, "model": "clothes", "version": 2, "sample": sample, "timeout": timeout}
    (log_dir / CONFIG_FILE).write_bytes(orjson.dumps(config))


def shadow_records(log_dir: Path, count: int, seconds: float = 20) -> list[ShadowLine]:
    """The `shadow` records of the log once `count` are there (the writer flushes every 0.2 s; files
    closed at a minute's turn are compressed, so they are read as the monitor reads them)."""
    deadline = time.monotonic() + seconds
    while True:
        records = [r for r in read_records(log_dir, since=0) if r["type"] == "shadow"]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def counter(base: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", requests.get(f"{base}/metrics", timeout=5).text, re.M)
    return float(match.group(1)) if match else 0.0


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(small_dataset) -> np.ndarray:
    return small_dataset.x_test[:40].astype(np.uint8)


def test_a_real_shadow_gets_the_original_requests_and_each_answer_pair_is_logged(model_root, tmp_path, images):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    with running_server(model_root) as shadow:
        write_config(log_dir, shadow.base)
        with running_server(model_root, prediction_log_dir=str(log_dir)) as production:
            ids = []
            for image in images[:10]:  # JSON, one image each
                answer = requests.post(f"{production.base}/models/clothes/v2", json={"image": image.tolist()}).json()
                ids.append(answer["predictions"][0]["id"])
            for image in images[10:20]:  # a PNG file: the shadow gets the file, not pixels
                body = png(255 - image)  # a light background, as a photo has: the conversion must run
                answer = requests.post(
                    f"{production.base}/models/clothes/v2", data=body, headers={"Content-Type": "image/png"}
                ).json()
                ids.append(answer["predictions"][0]["id"])
            files = [("file", (f"{i}.png", png(image), "image/png")) for i, image in enumerate(images[20:24])]
            batch = requests.post(f"{production.base}/models/clothes/v2", files=files).json()
            ids.extend(p["id"] for p in batch["predictions"])
            records = shadow_records(log_dir, 21)
            mirrored = counter(production.base, "clothes_shadow_mirrored_total")
    assert len(records) == 21
    assert mirrored == 21
    assert sorted(i for r in records for i in r["ids"]) == sorted(ids)
    for record in records:
        assert record["shadow_status"] == 200
        assert record["shadow_version"] == 2
        assert record["shadow_class_id"] == record["class_id"]  # the same model on both sides
        assert np.allclose(record["shadow_confidence"], record["confidence"], atol=1e-5)
        assert record["shadow_in_distribution"] == record["in_distribution"]
        assert 0 < record["shadow_seconds"] < 1
    assert [len(r["ids"]) for r in records].count(4) == 1  # the multipart batch is one request of four


class Shadow(http.server.ThreadingHTTPServer):
    """A shadow misbehaving on purpose: `delay` seconds before answering `status`."""

    def __init__(self, delay: float, status: int) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(outer.delay)
                with contextlib.suppress(OSError):  # the mirror gave up waiting: nobody reads the answer
                    self.send_response(outer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.delay, self.status = delay, status
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.mark.parametrize(
    ("case", "expected_status"), [("answers after 5 s", 0), ("answers 500", 500), ("killed", 0)], ids=str
)
def test_a_slow_failing_or_dead_shadow_changes_nothing_for_production(
    model_root, tmp_path, images, case, expected_status
):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    shadow = Shadow(delay=5 if case == "answers after 5 s" else 0, status=500 if case == "answers 500" else 200)
    write_config(log_dir, shadow.url, timeout=1.0)
    if case == "killed":
        shadow.shutdown()
        shadow.server_close()
    body = orjson.dumps({"image": images[0].tolist()})
    try:
        # rotating every second, the pairs are read from closed, compressed files too
        with running_server(
            model_root, prediction_log_dir=str(log_dir), prediction_log_rotate_seconds="1"
        ) as production:
            url = f"{production.base}/models/clothes/v2"
            latencies, failures = probe_latencies(url, body, seconds=4)
            time.sleep(1.5)  # what is in flight times out (1 s)
            errors = counter(production.base, "clothes_shadow_errors_total")
            dropped = counter(production.base, "clothes_shadow_dropped_total")
            records = shadow_records(log_dir, int(errors), seconds=10)
    finally:
        shadow.shutdown()
        shadow.server_close()
    assert failures == 0
    assert len(latencies) > 50
    assert np.percentile(latencies, 99) < 0.5  # the shadow's 5 s or its failures never reach clients
    assert errors > 0
    assert {r["shadow_status"] for r in records} == {expected_status}
    assert all("shadow_class_id" not in r for r in records)
    assert errors == len(records)
    if case == "answers after 5 s":  # one slow request per second per worker: the queue fills and drops
        assert dropped > 0


def test_without_a_valid_configuration_nothing_is_mirrored(model_root, tmp_path, images):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / CONFIG_FILE).write_text('{"url": "file:///etc/passwd", "model": "clothes", "version": 2, "sample": 1}')
    with running_server(model_root, prediction_log_dir=str(log_dir)) as production:
        for image in images[:5]:
            response = requests.post(f"{production.base}/models/clothes/v2", json={"image": image.tolist()})
            assert response.status_code == 200
        time.sleep(1)
        assert counter(production.base, "clothes_shadow_mirrored_total") == 0
    assert shadow_records(log_dir, 1, seconds=1) == []
