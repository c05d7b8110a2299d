"""Prediction logging, feedback, drift detection and the monitor flow's retraining trigger."""

from __future__ import annotations

import base64
import gzip
import re
import time
import types
from pathlib import Path

import numpy as np
import pytest

from serving import create_app
from serving.log.reader import read_records
from serving.log.retention import Removed, compress, enforce_bounds
from serving.settings import ServingSettings
from tasks import events as lifecycle_events
from tasks.data.transforms import moved
from tasks.evaluation.metrics import predict_probabilities
from tasks.evaluation.ood_sources import build_ood_slices
from tasks.evaluation.reference import build_reference
from tasks.evaluation.shifts import prior_shifted
from tasks.monitoring.drift import binned_psi, detect_drift, psi
from tasks.monitoring.monitor import labelled_samples
from tasks.params import MonitorThresholds
from tests.conftest import LENIENT

THRESHOLDS = MonitorThresholds()


def test_psi_is_zero_for_equal_and_large_for_shifted_distributions():
    assert psi([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0)
    assert psi([0.1] * 10, [0.0] + [1 / 9] * 9) > 0.5
    rng = np.random.default_rng(0)
    assert binned_psi(rng.normal(size=5000), rng.normal(size=1000)) < 0.05
    assert binned_psi(rng.normal(size=5000), rng.normal(1, 1, size=1000)) > 0.2


@pytest.fixture(scope="module")
def test_split(fashion_mnist):
    return fashion_mnist.x_test, fashion_mnist.y_test, list(fashion_mnist.class_names)


@pytest.fixture(scope="module")
def reference(trained_model, test_split):
    x, _y, names = test_split
    return build_reference(predict_probabilities(trained_model, x[:5000]), x[:5000], names)


def serve(
    model_root, log_dir, images: np.ndarray, store_inputs: bool = False, version: int = 1
) -> tuple[list[dict], list[dict]]:
    """Send images through the real app with logging on; return (answers' predictions, log records)."""
    settings = ServingSettings(prediction_log_dir=log_dir, prediction_log_inputs=store_inputs)
    app = create_app(model_root, settings)
    client = app.test_client()
    answers = []
    for start in range(0, len(images), 100):
        response = client.post(f"/models/clothes/v{version}", json={"images": images[start : start + 100].tolist()})
        answers.extend(response.json["predictions"])
    app.plane.log.close()
    return answers, read_records(log_dir, since=0)


def test_every_prediction_is_logged_with_its_id_and_input_summary(model_root, tmp_path, test_split):
    x, _y, _names = test_split
    answers, records = serve(model_root, tmp_path, x[:150], store_inputs=True)
    assert [r["id"] for r in records] == [a["id"] for a in answers]
    assert len(records) == 150
    first = records[0]
    assert first["model"] == "clothes"
    assert first["version"] == 1
    assert first["class_id"] == answers[0]["class_id"]
    assert first["mean"] == pytest.approx(x[0].mean() / 255, abs=1e-5)
    assert np.array_equal(np.frombuffer(base64.b64decode(first["pixels"]), np.uint8).reshape(28, 28), x[0])


def test_log_rotates_by_size(model_root, tmp_path, test_split):
    settings = ServingSettings(prediction_log_dir=tmp_path, prediction_log_max_bytes=4096)
    app = create_app(model_root, settings)
    client = app.test_client()
    for start in range(0, 200, 10):
        client.post("/models/clothes/v1", json={"images": test_split[0][start : start + 10].tolist()})
    app.plane.log.close()
    assert not list(tmp_path.glob("predictions-*.jsonl"))  # closing rotates the last file too, for capture
    assert len(list(tmp_path.glob("predictions-*.jsonl.gz"))) > 3
    assert len(read_records(tmp_path, since=0)) == 200  # the monitor reads compressed files too


def removed_files_metric(client) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    return float(re.search(r"^clothes_prediction_log_removed_files_total (\S+)$", text, re.MULTILINE).group(1))


def test_log_disk_is_bounded_and_the_oldest_files_go_first(model_root, tmp_path, test_split):
    settings = ServingSettings(
        prediction_log_dir=tmp_path, prediction_log_max_bytes=4096, prediction_log_max_total_bytes=12_000
    )
    app = create_app(model_root, settings)
    client = app.test_client()
    removed_before = removed_files_metric(client)
    ids = []
    for start in range(0, 600, 10):
        answer = client.post("/models/clothes/v1", json={"images": test_split[0][start : start + 10].tolist()}).json
        ids += [p["id"] for p in answer["predictions"]]
        app.plane.log.flush()
    app.plane.log.close()
    files = list(tmp_path.glob("predictions-*"))
    assert sum(f.stat().st_size for f in files) < 12_000 + 4096  # the bound, plus the file being written
    kept = [r["id"] for r in read_records(tmp_path, since=0) if r["type"] == "prediction"]
    assert 0 < len(kept) < len(ids)
    assert kept == ids[-len(kept) :]  # what is left is the newest, unbroken
    assert removed_files_metric(client) - removed_before >= 1


def test_rotated_files_past_their_age_go_and_the_files_being_written_stay(tmp_path):
    active, rotated = tmp_path / "predictions-host-7.jsonl", tmp_path / "predictions-host-7-1796000000000000000.jsonl"
    for path in (active, rotated):
        path.write_bytes(b'{"type": "log_gap", "time": 1, "dropped": 0}\n' * 50)
    compressed = compress(rotated)
    assert compressed.name.endswith(".jsonl.gz")
    assert not rotated.exists()
    assert gzip.decompress(compressed.read_bytes()) == active.read_bytes()
    assert enforce_bounds(tmp_path, max_total_bytes=10**9, max_age_seconds=3600) == Removed()
    later = time.time() + 7200
    assert enforce_bounds(tmp_path, max_total_bytes=10**9, max_age_seconds=3600, now=later).files == 1
    assert [p.name for p in tmp_path.iterdir()] == [active.name]
    assert enforce_bounds(tmp_path, max_total_bytes=1, max_age_seconds=3600, now=later) == Removed()  # never active


def test_feedback_is_recorded_and_validated(model_root, tmp_path, test_split):
    app = create_app(model_root, ServingSettings(prediction_log_dir=tmp_path))
    client = app.test_client()
    answer = client.post("/models/clothes/v1", json={"image": test_split[0][0].tolist()}).json["predictions"][0]
    ok = client.post("/models/clothes/v1/feedback", json={"id": answer["id"], "label": "Ankle boot"})
    assert ok.status_code == 202
    assert ok.json["class_id"] == 9
    relabel = client.post("/models/clothes/v1/feedback", json={"id": answer["id"], "class_id": 3})
    assert relabel.status_code == 409
    assert "first label stands" in relabel.json["error"]
    for bad in (
        {"id": answer["id"], "label": "Hat"},
        {"id": answer["id"]},
        {"label": "Bag"},
        {"id": answer["id"], "class_id": 10},
        {"id": answer["id"], "class_id": True},
        [1],
    ):
        response = client.post("/models/clothes/v1/feedback", json=bad)
        assert response.status_code == 400
        assert response.json["error"]
    # Only ids this server issued, for the version that made the prediction.
    forged = [{"id": "nope", "label": "Bag"}, {"id": "0" * 32, "label": "Bag"}, {"id": answer["id"][:16] + "0" * 16}]
    for bad in forged:
        response = client.post("/models/clothes/v1/feedback", json={"label": "Bag", **bad})
        assert response.status_code == 404
        assert "no prediction" in response.json["error"]
    assert client.post("/models/clothes/v2/feedback", json={"id": answer["id"], "label": "Bag"}).status_code == 404
    assert client.post("/models/clothes/v9/feedback", json={"id": answer["id"], "label": "Bag"}).status_code == 404
    app.plane.log.close()
    feedback = [r for r in read_records(tmp_path, since=0) if r["type"] == "feedback"]
    assert [(r["id"], r["true_class_id"]) for r in feedback] == [(answer["id"], 9)]
    without_log = create_app(model_root).test_client()
    assert without_log.post("/models/clothes/v1/feedback", json={"id": answer["id"], "label": "Bag"}).status_code == 404


def test_prediction_ids_survive_a_restart_on_the_same_log_directory(model_root, tmp_path, test_split):
    first = create_app(model_root, ServingSettings(prediction_log_dir=tmp_path)).test_client()
    answer = first.post("/models/clothes/v1", json={"image": test_split[0][0].tolist()}).json["predictions"][0]
    second = create_app(model_root, ServingSettings(prediction_log_dir=tmp_path)).test_client()
    assert second.post("/models/clothes/v1/feedback", json={"id": answer["id"], "label": "Bag"}).status_code == 202
    other = create_app(model_root, ServingSettings(prediction_log_dir=tmp_path / "other")).test_client()
    assert other.post("/models/clothes/v1/feedback", json={"id": answer["id"], "label": "Bag"}).status_code == 404


def test_replicas_on_different_nodes_share_ids_through_a_secret_file(model_root, tmp_path, test_split):
    """Each node has its own log directory; the mounted secret (swarm/Kubernetes) is what they share."""
    (tmp_path / "key").write_text("b7" * 32 + "\n")
    node_a, node_b = (
        create_app(
            model_root, ServingSettings(prediction_log_dir=tmp_path / node, feedback_secret_file=tmp_path / "key")
        )
        for node in ("a", "b")
    )
    answer = node_a.test_client().post("/models/clothes/v1", json={"image": test_split[0][0].tolist()})
    body = {"id": answer.json["predictions"][0]["id"], "label": "Bag"}
    assert node_b.test_client().post("/models/clothes/v1/feedback", json=body).status_code == 202
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="empty"):
        create_app(model_root, ServingSettings(feedback_secret_file=tmp_path / "empty"))


def test_feedback_token_and_rate_limit(model_root, tmp_path, test_split):
    settings = ServingSettings(prediction_log_dir=tmp_path, feedback_token="s3cret", feedback_per_minute=60)
    client = create_app(model_root, settings).test_client()
    answers = client.post("/models/clothes/v1", json={"images": test_split[0][:20].tolist()}).json["predictions"]
    body = {"id": answers[0]["id"], "label": "Bag"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = client.post("/models/clothes/v1/feedback", json=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    auth = {"Authorization": "Bearer s3cret"}
    statuses = [
        client.post("/models/clothes/v1/feedback", json={"id": a["id"], "label": "Bag"}, headers=auth).status_code
        for a in answers
    ]
    assert statuses[:6] == [202] * 6
    assert statuses[-1] == 429  # a burst of 60/10 = 6, then 1 a second
    limited = client.post("/models/clothes/v1/feedback", json=body, headers=auth)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


def _traffic(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    normal = x[5000:6000]
    return {
        "held-out test images": normal,
        "inverted": 255 - normal,  # the server negates it back: what the model sees has not drifted
        "washed out": (normal // 2).astype(np.uint8),  # half the contrast, still on black: served as it is
        "no trousers": x[5000:7000][y[5000:7000] != 1][:1000],
    }


def test_detector_flags_only_drifted_traffic(model_root, tmp_path, test_split, reference):
    x, y, _names = test_split
    verdicts = {}
    for name, images in _traffic(x, y).items():
        _answers, records = serve(model_root, tmp_path / name.replace(" ", "-"), images)
        report = detect_drift(reference, records, THRESHOLDS)
        assert report.enough_data
        assert report.n_predictions == len(images)
        verdicts[name] = report
    for name in ("held-out test images", "inverted"):
        assert not verdicts[name].drifted, (name, verdicts[name].reasons)
    for name in ("washed out", "no trousers"):
        assert verdicts[name].drifted, name
    assert any("predicted-class" in r for r in verdicts["no trousers"].reasons)
    assert any("input mean" in r for r in verdicts["washed out"].reasons)


def test_online_accuracy_from_feedback(model_root, tmp_path, test_split, reference):
    x, y, _names = test_split
    app = create_app(model_root, ServingSettings(prediction_log_dir=tmp_path, feedback_per_minute=10_000))
    client = app.test_client()
    answers = client.post("/models/clothes/v1", json={"images": x[5000:5300].tolist()}).json["predictions"]
    wrong_labels = (y[5000:5300] + 1) % 10  # users report a different class every time
    for answer, label in zip(answers, wrong_labels, strict=True):
        client.post("/models/clothes/v1/feedback", json={"id": answer["id"], "class_id": int(label)})
    app.plane.log.close()
    report = detect_drift(reference, read_records(tmp_path, since=0), THRESHOLDS)
    assert report.metrics["labelled"] == 300
    assert report.metrics["online_accuracy"] < 0.2
    assert any("online accuracy" in r for r in report.reasons)


def test_a_rise_of_inputs_flagged_out_of_distribution_is_drift(model_root, tmp_path, test_split, reference):
    x = test_split[0]
    _answers, usual = serve(model_root, tmp_path / "garments", x[5000:5400], version=2)
    strange = np.concatenate(list(build_ood_slices(70, seed=4).values()))  # 6 sources
    _answers, mixed = serve(model_root, tmp_path / "mixed", np.concatenate([x[5000:5300], strange]), version=2)
    calm, alarmed = detect_drift(reference, usual, THRESHOLDS), detect_drift(reference, mixed, THRESHOLDS)
    assert calm.metrics["ood_share"] <= 0.1
    assert not any("out of distribution" in r for r in calm.reasons)
    assert alarmed.metrics["ood_share"] >= 0.3
    assert any("out of distribution" in r for r in alarmed.reasons)
    assert all(0 <= r["ood_score"] <= 1 and isinstance(r["in_distribution"], bool) for r in mixed)


def test_feedback_on_a_flagged_prediction_trains_only_when_a_person_reviewed_it(model_root, tmp_path, test_split):
    noise = np.random.default_rng(0).integers(0, 256, (2, 28, 28))
    images = np.concatenate([test_split[0][:1], noise])
    app = create_app(model_root, ServingSettings(prediction_log_dir=tmp_path, prediction_log_inputs=True))
    client = app.test_client()
    garment, unreviewed, reviewed = client.post("/models/clothes/v2", json={"images": images.tolist()}).json[
        "predictions"
    ]
    assert garment["in_distribution"]
    assert not unreviewed["in_distribution"]
    assert not reviewed["in_distribution"]
    for answer, body in ((garment, {}), (unreviewed, {}), (reviewed, {"reviewed": True})):
        response = client.post("/models/clothes/v2/feedback", json={"id": answer["id"], "label": "Bag", **body})
        assert response.status_code == 202
    assert (
        client.post(
            "/models/clothes/v2/feedback", json={"id": garment["id"], "label": "Bag", "reviewed": "yes"}
        ).status_code
        == 400
    )
    app.plane.log.close()
    samples = labelled_samples(read_records(tmp_path, since=0))
    assert sorted(record_id for record_id, _pixels, _label in samples) == sorted([garment["id"], reviewed["id"]])


@pytest.fixture(scope="module")
def estimator(estimator_stats):
    return estimator_stats


def served_accuracy(answers: list[dict], labels: np.ndarray) -> float:
    return float(np.mean([answer["class_id"] == label for answer, label in zip(answers, labels, strict=True)]))


def test_rotated_garments_get_an_estimated_accuracy_near_the_truth_and_the_drop_is_drift(
    model_root, tmp_path, test_split, reference, estimator
):
    x, y, names = test_split
    rng = np.random.default_rng(3)
    rotated = np.stack([np.asarray(moved(p, float(rng.choice([-1, 1]) * 20), 0, 0)) for p in x[5000:6000]])
    answers, records = serve(model_root, tmp_path, rotated)
    truth = served_accuracy(answers, y[5000:6000])
    assert estimator.test_accuracy - truth > 0.1  # the shift costs

    report = detect_drift(reference, records, THRESHOLDS, estimator)
    m = report.metrics
    assert abs(m["estimated_accuracy"] - truth) <= 0.05, (m["estimated_accuracy"], truth)
    assert m["estimated_accuracy_low"] < m["estimated_accuracy"] < m["estimated_accuracy_high"]
    assert {f"estimated_recall.{name}" for name in names} <= m.keys()  # the log holds every probability
    (reason,) = [r for r in report.reasons if r.startswith("estimated accuracy")]
    assert f"{m['estimated_drop']:.3f} below the champion's test accuracy" in reason
    assert "more wrong answers per 1,000" in reason


def test_a_harmless_class_prior_shift_claims_no_accuracy_drop(model_root, tmp_path, test_split, reference, estimator):
    x, y, _names = test_split
    pixels, labels = prior_shifted(x[5000:], y[5000:], favoured=1, size=1000, seed=0)  # trousers 5x as often
    answers, records = serve(model_root, tmp_path, pixels)
    truth = served_accuracy(answers, labels)
    assert truth >= estimator.test_accuracy - 0.02  # nothing lost

    report = detect_drift(reference, records, THRESHOLDS, estimator)
    assert abs(report.metrics["estimated_accuracy"] - truth) <= 0.03
    assert not [r for r in report.reasons if r.startswith("estimated accuracy")]
    assert any("predicted-class" in r for r in report.reasons)  # the mix did change, and says so


def test_too_little_traffic_is_not_judged(reference):
    report = detect_drift(reference, [], THRESHOLDS)
    assert not report.enough_data
    assert not report.drifted


@pytest.mark.slow
def test_monitor_flow_records_verdicts_and_triggers_retraining(
    prefect_harness, mlflow_store, fashion_dir, tmp_path, monkeypatch, test_split
):
    from mlflow import MlflowClient

    from flows import monitor as monitor_module
    from flows.pipeline import train_and_deploy
    from tasks.params import ContainerParams, DataSpec, TrainParams, Trigger

    monkeypatch.setenv("MLOPS_MODEL_ROOT", str(tmp_path / "models"))
    monkeypatch.setenv("MLOPS_FEEDBACK_DATA_DIR", str(tmp_path / "feedback"))
    summary = train_and_deploy(
        data=DataSpec(path=fashion_dir, train_limit=3000, test_limit=1000, holdout_size=100),
        train=TrainParams(epochs=2, batch_size=64),  # small data: small batches
        thresholds=LENIENT,
        container=ContainerParams(enabled=False),
    )
    client = MlflowClient()
    client.set_registered_model_alias("clothes", "champion", summary["model_version"])
    triggered = []
    from tasks.monitoring import monitor as monitoring_tasks

    monkeypatch.setattr(
        monitoring_tasks,
        "run_deployment",
        lambda name, parameters, timeout, tags, idempotency_key: (
            triggered.append((name, parameters, tags)) or types.SimpleNamespace(id="run-1")
        ),
    )

    x, y, _names = test_split
    root = tmp_path / "models"
    normal_logs, drifted_logs, unlabelled_logs = tmp_path / "normal", tmp_path / "drifted", tmp_path / "unlabelled"
    serve_version = summary["model_version"]
    windows = ((normal_logs, x[5000:5600]), (drifted_logs, x[5000:5600] // 2), (unlabelled_logs, x[5000:5600] // 2))
    for log_dir, images in windows:
        settings = ServingSettings(prediction_log_dir=log_dir, prediction_log_inputs=True)
        app = create_app(root, settings)
        web = app.test_client()
        answers = web.post(f"/models/clothes/v{serve_version}", json={"images": images.tolist()}).json["predictions"]
        feedback = list(zip(answers, y[5000:5600], strict=True))[:40] if log_dir == drifted_logs else []
        for answer, label in feedback:  # people label these: flagged inputs among them train too
            body = {"id": answer["id"], "class_id": int(label), "reviewed": True}
            web.post(f"/models/clothes/v{serve_version}/feedback", json=body)
        app.plane.log.close()

    calm = monitor_module.monitor_drift(window_minutes=30, log_dir=normal_logs)
    assert not calm["drifted"]
    assert calm["retraining"] is None
    assert calm["n_predictions"] == 600
    drifted = monitor_module.monitor_drift(window_minutes=30, log_dir=drifted_logs)
    assert drifted["drifted"]
    assert drifted["retraining"] == "train-and-deploy/weekly flow run run-1"
    assert any("input mean" in reason for reason in drifted["reasons"])
    assert len(triggered) == 1
    assert triggered[0][0] == "train-and-deploy/weekly"
    extra = triggered[0][1]["data"]["extra_path"]
    assert len(list(Path(extra).rglob("*.png"))) == 40

    runs = client.search_runs(
        [client.get_experiment_by_name("clothes-monitoring").experiment_id], order_by=["attributes.start_time"]
    )
    assert [r.data.tags["drift"] for r in runs] == ["false", "true"]
    assert runs[0].data.tags["verdict"] == "no drift"
    assert "retraining" not in runs[0].data.tags
    assert runs[1].data.tags["retraining"] == drifted["retraining"]
    assert triggered[0][2] == ["trigger:drift"]
    assert runs[1].data.metrics["mean_ks"] > 0.5
    assert 0 < runs[1].data.metrics["estimated_accuracy"] < runs[0].data.metrics["estimated_accuracy"]
    assert "plots" in [a.path for a in client.list_artifacts(runs[1].info.run_id)]

    # Drift with no new labelled data: the same data would train the same model, so it is raised as an
    # event for people and automations, and nothing is retrained.
    events: list[dict] = []
    monkeypatch.setattr(lifecycle_events, "emit_event", lambda **event: events.append(event))
    unlabelled = monitor_module.monitor_drift(window_minutes=30, log_dir=unlabelled_logs)
    assert unlabelled["drifted"]
    assert unlabelled["retraining"] is None
    assert len(triggered) == 1
    (event,) = events
    assert event["event"] == "clothes.drift.detected"
    assert event["payload"]["retraining"] is None
    assert event["resource"]["prefect.resource.id"] == "clothes.model.clothes"
    assert event["payload"]["signals"]
    assert "not retrained: no new labelled data" in event["payload"]["text"]
    check = client.get_run(unlabelled["mlflow_run_id"])
    assert check.data.tags["retraining"] == "not started: no new labelled data to learn from"

    # The collected samples are real training data for the next run.
    from tasks.data.loader import load_dataset
    from tasks.settings import Settings

    grown = load_dataset(DataSpec(path=fashion_dir, train_limit=100, test_limit=10, extra_path=extra), Settings())
    assert len(grown.y_train) == 140

    # The retraining run, as the deployment would start it, says what triggered it.
    retrained = train_and_deploy(
        data=DataSpec(path=fashion_dir, train_limit=1000, test_limit=500, extra_path=extra, holdout_size=100),
        train=TrainParams(epochs=1, batch_size=64),
        thresholds=LENIENT,
        container=ContainerParams(enabled=False),
        trigger=Trigger.model_validate(triggered[0][1]["trigger"]),
    )
    tags = client.get_run(retrained["run_id"]).data.tags
    assert tags["trigger"] == "drift"
    assert runs[1].info.run_id in tags["trigger.monitoring_run"]
    assert "input mean" in tags["trigger.signals"]
    assert tags["trigger.window"].count("/") == 1
    assert client.get_model_version("clothes", retrained["model_version"]).tags["trigger"] == "drift"
