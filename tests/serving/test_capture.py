"""Capture to a real S3-compatible store (SeaweedFS): closed prediction logs and minute summaries reach
it under the documented layout and leave the disk only once it has them; a store that does not answer
loses nothing; prediction ids name their answer; a label claimed on one node is refused on another."""

from __future__ import annotations

import gzip
import re

import orjson
import pytest

from serving import metrics
from serving.log.capture import Capture
from serving.log.feedback import PredictionIds
from serving.log.object_store import ObjectStore, StoreError
from serving.log.prediction_log import PredictionLog
from serving.log.summary import TrafficSummary
from tasks.network import free_port
from tests.conftest import capturing_replica, ship_the_rest

CAPTURE = "s3://clothes/capture-test"


@pytest.fixture
def store_env(object_store, monkeypatch):
    """This process's AWS_* point at the test's store, as `clothes-stack env` makes a shell's."""
    for key, value in object_store.env.items():
        monkeypatch.setenv(key, value)
    return object_store


def node_app(model_root, log_dir, node: str, url: str = CAPTURE):
    return capturing_replica(model_root, log_dir, node, url)


def test_ids_name_the_class_answered_and_the_older_ids_still_verify():
    ids = PredictionIds(b"key")
    first, second = ids.issue("clothes", 3, [7, 0])
    assert len(first) == 36 and re.fullmatch(r"[0-9a-f]{36}", first)
    assert (PredictionIds.answered(first), PredictionIds.answered(second)) == (7, 0)
    assert ids.verify(first, "clothes", 3)
    assert not ids.verify(first, "clothes", 4)
    assert not ids.verify(first[:16] + "0008" + first[20:], "clothes", 3)  # another class: the signature fails
    older = "0123456789abcdef" + ids._signature("0123456789abcdef:clothes:3")  # as 0.4.0 issued them
    assert ids.verify(older, "clothes", 3)
    assert PredictionIds.answered(older) is None
    assert not PredictionIds(b"other key").verify(first, "clothes", 3)


def test_closed_logs_and_summaries_reach_the_store_and_then_leave_the_disk(model_root, store_env, tmp_path):
    images = [[[(i * j) % 255 for j in range(28)] for _ in range(28)] for i in range(40)]
    app = node_app(model_root, tmp_path, "node-a")
    client = app.test_client()
    for start in range(0, 40, 8):
        assert client.post("/models/clothes/v1", json={"images": images[start : start + 8]}).status_code == 200
    app.plane.log.close()  # a worker's exit: the last file rotated, every summary written, shipped
    ship_the_rest(tmp_path, store_env.client("capture-test"), "node-a")

    assert not list(tmp_path.glob("predictions-*")), "shipped files stay on disk"
    assert not list((tmp_path / "summaries").rglob("*.json"))
    store = store_env.client("capture-test")
    keys = list(store.keys(store.key("")))
    raw = [k for k in keys if "/predictions/" in k]
    summaries = [k for k in keys if "/summaries/" in k]
    assert raw and summaries
    for key in raw:
        assert re.fullmatch(
            r"capture-test/predictions/date=\d{4}-\d\d-\d\d/hour=\d\d/node=node-a/predictions-.+-\d+-\d{19}\.jsonl\.gz",
            key,
        ), key
    for key in summaries:
        assert re.fullmatch(
            r"capture-test/summaries/model=clothes/version=1/date=\d{4}-\d\d-\d\d/hour=\d\d/node=node-a/\d+-.+\.json",
            key,
        ), key
    lines = [orjson.loads(line) for key in raw for line in gzip.decompress(store.get(key)).splitlines()]
    assert sum(len(line["ids"]) for line in lines if line["type"] == "predictions") == 40
    assert sum(TrafficSummary.from_json(store.get(key)).n for key in summaries) == 40


def test_a_store_that_does_not_answer_loses_nothing(model_root, store_env, tmp_path):
    nowhere = {**store_env.env, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}"}
    capture = Capture(tmp_path, ObjectStore(CAPTURE, timeout=1, attempts=1, env=nowhere), "node-a")
    log = PredictionLog(tmp_path, max_bytes=2048, capture=capture)
    app = node_app(model_root, tmp_path, "node-a")
    app.plane.log = log
    client = app.test_client()
    for i in range(30):
        client.post("/models/clothes/v1", json={"image": [[i] * 28] * 28})
        log.flush()
    log.close()  # the worker exits while the store is down: its last try fails, everything stays
    waiting = capture.waiting()
    assert len(waiting) > 3
    with pytest.raises(StoreError):
        capture.ship()
    assert capture.waiting() == waiting, "a file left the disk the store never took"
    assert metrics.CAPTURE_WAITING_FILES._value.get() == len(waiting)

    capture.store = store_env.client("capture-test/outage")  # the store answers again
    assert capture.ship() == len(waiting)
    assert capture.waiting() == []
    store = capture.store
    shipped = [k for k in store.keys(store.key("predictions"))]
    predictions = sum(
        len(orjson.loads(line)["ids"])
        for key in shipped
        for line in gzip.decompress(store.get(key)).splitlines()
        if b'"predictions"' in line
    )
    assert predictions == 30


def test_a_label_claimed_on_one_node_is_refused_on_another(model_root, store_env, tmp_path):
    first = node_app(model_root, tmp_path / "a", "node-a", url=f"{CAPTURE}/claims")
    second = node_app(model_root, tmp_path / "b", "node-b", url=f"{CAPTURE}/claims")
    answer = first.test_client().post("/models/clothes/v1", json={"image": [[0] * 28] * 28}).json["predictions"][0]
    labelled = second.test_client().post("/models/clothes/v1/feedback", json={"id": answer["id"], "class_id": 3})
    assert labelled.status_code == 202, labelled.json
    again = first.test_client().post("/models/clothes/v1/feedback", json={"id": answer["id"], "class_id": 5})
    assert again.status_code == 409
    assert "first label stands" in again.json["error"]
    store = store_env.client("capture-test/claims")
    assert list(store.keys(store.key("labels"))) == [f"capture-test/claims/labels/{answer['id'][:2]}/{answer['id']}"]

    # The store down: each node's own claim decides (counted), the monitor keeps the first label per id.
    fallbacks = metrics.CLAIM_FALLBACKS._value.get()
    third = node_app(model_root, tmp_path / "c", "node-c", url=f"{CAPTURE}/claims")
    third.plane.labelled._store = ObjectStore(
        CAPTURE, timeout=1, attempts=1, env={**store_env.env, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}"}
    )
    client = third.test_client()
    answer = client.post("/models/clothes/v1", json={"image": [[9] * 28] * 28}).json["predictions"][0]
    assert client.post("/models/clothes/v1/feedback", json={"id": answer["id"], "class_id": 1}).status_code == 202
    assert client.post("/models/clothes/v1/feedback", json={"id": answer["id"], "class_id": 2}).status_code == 409
    assert metrics.CLAIM_FALLBACKS._value.get() == fallbacks + 1
    for app in (first, second, third):
        app.plane.log.close()
