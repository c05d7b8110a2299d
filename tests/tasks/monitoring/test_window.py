"""The monitor's window from every node: two nodes' replicas capture into one store (a real SeaweedFS);
the monitor, reading the store alone, counts every prediction of both, sees drift that only the second
node received, and finds the inputs of the labels the second node took for retraining."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats

from serving import create_app
from serving.log.reader import read_records
from serving.log.records import INPUT_STATS
from serving.settings import ServingSettings
from tasks.evaluation.metrics import predict_probabilities
from tasks.evaluation.reference import build_reference
from tasks.monitoring.drift import judge
from tasks.monitoring.monitor import labelled_samples
from tasks.monitoring.window import labelled_records, read_summary
from tasks.params import ModelRef, MonitorThresholds
from tests.conftest import capturing_replica, ship_the_rest

THRESHOLDS = MonitorThresholds()
REF = ModelRef("clothes", 1)


@pytest.fixture(scope="module")
def reference(trained_model, fashion_mnist):
    x = fashion_mnist.x_test[:5000]
    return build_reference(predict_probabilities(trained_model, x), x, list(fashion_mnist.class_names))


def replica(model_root, log_dir, node: str, url: str):
    return capturing_replica(model_root, log_dir, node, url, feedback_per_minute=10_000)


def classify(client, images: np.ndarray) -> list[dict]:
    answers = []
    for start in range(0, len(images), 64):
        response = client.post("/models/clothes/v1", json={"images": images[start : start + 64].tolist()})
        assert response.status_code == 200
        answers.extend(response.json["predictions"])
    return answers


def test_the_monitor_judges_every_nodes_traffic_from_the_store(
    model_root, object_store, fashion_mnist, reference, tmp_path, monkeypatch
):
    for key, value in object_store.env.items():
        monkeypatch.setenv(key, value)
    url = "s3://clothes/two-nodes"
    x, y = fashion_mnist.x_test, fashion_mnist.y_test
    since = time.time() - 1
    first = replica(model_root, tmp_path / "a", "node-a", url)
    second = replica(model_root, tmp_path / "b", "node-b", url)
    classify(first.test_client(), x[5000:5700])
    drifted = classify(second.test_client(), x[6000:6500] // 3)  # only the second node's clients drifted
    for answer, label in list(zip(drifted, y[6000:6500], strict=True))[:40]:
        body = {"id": answer["id"], "class_id": int(label), "reviewed": True}
        assert second.test_client().post("/models/clothes/v1/feedback", json=body).status_code == 202
    repeat = {"id": drifted[0]["id"], "class_id": 1}  # a second label, sent to the other node
    assert first.test_client().post("/models/clothes/v1/feedback", json=repeat).status_code == 409
    for app, node in ((first, "a"), (second, "b")):
        app.plane.log.close()  # the workers exit: everything shipped
        ship_the_rest(tmp_path / node, object_store.client("two-nodes"), f"node-{node}")
    until = time.time() + 1
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.glob("*/predictions-*"))

    store = object_store.client("two-nodes")
    summary = read_summary(None, store, REF, since, until, classes=10)  # the store alone
    assert summary is not None
    assert summary.n == 1200  # every prediction of both nodes, once
    assert summary.n_feedback == 40
    report = judge(reference, summary, THRESHOLDS, None)
    assert report.drifted
    assert any("input mean" in reason for reason in report.reasons)

    # Retraining gets the second node's labelled inputs, found in the store's raw files.
    records = labelled_records(None, store, summary, since, until)
    samples = labelled_samples(records)
    assert len(samples) == 40
    assert {record_id for record_id, _pixels, _label in samples} == {a["id"] for a in drifted[:40]}
    expected = dict(zip((a["id"] for a in drifted), (x[6000:6500] // 3).astype(np.uint8), strict=True))
    for record_id, pixels, _label in samples:
        np.testing.assert_array_equal(pixels, expected[record_id])


def test_without_a_store_the_summaries_of_the_log_directory_give_the_raw_records_figures(
    model_root, fashion_mnist, reference, tmp_path
):
    """One machine, no store: the monitor reads the log directory's summaries; its figures are within a
    histogram bin of those computed from every record the same traffic left."""
    x = fashion_mnist.x_test
    app = create_app(model_root, ServingSettings(prediction_log_dir=tmp_path))
    classify(app.test_client(), np.concatenate([x[7000:7400], x[7400:7800] // 2]))
    app.plane.log.close()
    report = judge(reference, read_summary(tmp_path, None, REF, 0, time.time(), 10), THRESHOLDS, None)
    predictions = [r for r in read_records(tmp_path, since=0) if r["type"] == "prediction"]
    assert report.n_predictions == len(predictions) == 800
    for key in INPUT_STATS:
        raw = stats.ks_2samp(reference[key], [p[key] for p in predictions])
        assert report.metrics[f"{key}_ks"] == pytest.approx(raw.statistic, abs=0.005)
        assert report.metrics[f"{key}_current_mean"] == pytest.approx(np.mean([p[key] for p in predictions]))
    confidence = [p["confidence"] for p in predictions]
    assert report.metrics["confidence_mean"] == pytest.approx(np.mean(confidence))
    assert any("input mean" in reason for reason in report.reasons)
