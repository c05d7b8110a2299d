"""Capture under faults, on the real server (gunicorn, 2 workers) and a real store (SeaweedFS): the store
is killed under steady traffic and comes back; no request fails, every prediction reaches the store, the
local disk stays within its bound meanwhile, and the store's credentials appear nowhere."""

from __future__ import annotations

import gzip
import re
import time
import urllib.error
import urllib.request

import orjson
import pytest

from ops.seaweedfs import running_store
from serving.log.summary import TrafficSummary
from tests.serving.servers import running_server
from tests.traffic import Traffic

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
BOUND = 8 * 1024 * 1024


def metric(base: str, name: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, orjson.dumps(body), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def label_twice(base: str) -> tuple[int, int]:
    """A prediction labelled, then labelled again: the statuses of both (the claim is on the request path)."""
    _, answer = post(f"{base}/models/clothes/v1", {"image": [[7] * 28] * 28})
    prediction_id = answer["predictions"][0]["id"]
    first = post(f"{base}/models/clothes/v1/feedback", {"id": prediction_id, "class_id": 2})[0]
    return first, post(f"{base}/models/clothes/v1/feedback", {"id": prediction_id, "class_id": 3})[0]


def directory_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_the_store_killed_under_traffic_loses_nothing_and_fails_no_request(model_root, tmp_path):
    log_dir = tmp_path / "log"
    with running_store(tmp_path / "store") as store:
        settings = {
            "prediction_log_dir": str(log_dir),
            "prediction_log_rotate_seconds": "3",
            "prediction_log_max_bytes": str(256 * 1024),
            "prediction_log_max_total_bytes": str(BOUND),
            "capture_url": "s3://clothes/faults",
            "capture_interval": "1",
            "node": "node-a",
        }
        largest = 0
        with running_server(model_root, env=store.env, **settings) as server, Traffic(server.port, 4) as traffic:
            time.sleep(6)
            assert metric(server.base, "clothes_capture_shipped_files_total") > 0
            assert label_twice(server.base) == (202, 409)  # claimed in the store
            store.stop()  # SIGKILL after 2 s: a crash
            outage = time.monotonic()
            while time.monotonic() - outage < 12:
                largest = max(largest, directory_bytes(log_dir))
                time.sleep(1)
            assert metric(server.base, "clothes_capture_waiting_files") > 0
            assert metric(server.base, "clothes_capture_errors_total") > 0
            assert label_twice(server.base) == (202, 409)  # claimed by the node alone, said in /metrics
            assert metric(server.base, "clothes_feedback_claim_fallbacks_total") == 1
            store.start()
            time.sleep(6)
        # The server stopped (SIGTERM): each worker wrote its last summaries and shipped what was left.
        assert traffic.failures == [], traffic.failures[:5]
        assert traffic.ok > 200
        assert largest <= BOUND
        assert not list(log_dir.glob("predictions-*")), sorted(p.name for p in log_dir.iterdir())
        assert not list((log_dir / "summaries").rglob("*.json"))

        client = store.client("faults")
        keys = list(client.keys(client.key("")))
        predicted = summarised = 0
        for key in keys:
            data = client.get(key)
            if "/predictions/" in key:
                lines = [orjson.loads(line) for line in gzip.decompress(data).splitlines() if line.strip()]
                predicted += sum(len(line["ids"]) for line in lines if line["type"] == "predictions")
                assert not [line for line in lines if line["type"] == "log_gap"], "records were dropped"
            elif "/summaries/" in key:
                summarised += TrafficSummary.from_json(data).n
        assert predicted == summarised == traffic.ok + 2, (predicted, summarised, traffic.ok)  # and the 2 labelled
        assert len(list(client.keys(client.key("labels")))) == 1  # the first label; the second was the node's

        secret = store.credentials.store_secret_key
        assert secret not in server.output
        for path in [*log_dir.rglob("*"), *tmp_path.glob("*.log")]:
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path
        print(f"capture under a store crash: {traffic.ok} requests, 0 failed, {len(keys)} files shipped")
