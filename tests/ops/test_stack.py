"""The stack as users run it: real Prefect server + worker + MLflow server, deployments from prefect.yaml."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric
from PIL import Image

from ops.credentials import load_or_create
from ops.screenshots import take_screenshots
from ops.stack import Stack, deploy, down, main, start, start_store, stop_process, up
from serving.log.object_store import ObjectStore, StoreError
from serving.log.reader import GrowingWindow, read_records
from tasks.events import NOTIFIED
from tasks.network import free_port
from tasks.params import ModelRef
from tasks.settings import Settings
from tasks.tracking import configure_mlflow, load_model_version
from tests.conftest import LENIENT, REPO, require, require_root
from tests.ops.deployments import SMALL_RUN, run_deployment
from tests.traffic import Traffic, served_version

pytestmark = pytest.mark.slow


def _api(stack: Stack, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{stack.prefect_api}{path}", data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _scheduled_start_times(stack: Stack, deployment_id: str) -> list[str]:
    runs = _api(
        stack,
        "/flow_runs/filter",
        {
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "deployments": {"id": {"any_": [deployment_id]}},
        },
    )
    return sorted(r["expected_start_time"] for r in runs)


@pytest.fixture
def stack(tmp_path, monkeypatch, fashion_dir):
    for key, value in {
        "MLOPS_MLRUNS_DIR": str(tmp_path / "mlruns"),
        "MLOPS_MODEL_ROOT": str(tmp_path / "models"),
        "MLOPS_DATA_DIR": str(fashion_dir),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",  # recreate scheduled runs quickly after redeploy
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    stack = Stack(tmp_path / "stack", prefect_port=free_port(), mlflow_port=free_port(), store_port=free_port())
    try:
        up(stack)
        yield stack
    finally:
        down(stack)
        assert all(stack.running_pid(name) is None for name in stack.commands())


class Receiver(http.server.ThreadingHTTPServer):
    """A team's chat webhook on loopback: keeps every JSON body posted to it."""

    def __init__(self) -> None:
        bodies: list[dict] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.bodies = bodies
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def webhook(monkeypatch):
    receiver = Receiver()
    monkeypatch.setenv("MLOPS_NOTIFY_WEBHOOK", f"http://127.0.0.1:{receiver.server_address[1]}/hooks/team")
    yield receiver
    receiver.shutdown()
    receiver.server_close()


def test_the_lifecycles_events_reach_the_teams_webhook(webhook, stack):
    """`up` made one automation per event; an event emitted against the stack is posted as Slack JSON."""
    automations = _api(stack, "/automations/filter", {})
    assert {a["name"] for a in automations} == {f"clothes: {event} -> webhook" for event in NOTIFIED}
    emitter = (
        "from prefect.events.worker import EventsWorker\n"
        "from tasks.events import NOTIFIED, emit\n"
        "for event in NOTIFIED:\n"
        "    emit(event, 'clothes', f'clothes v9: {event} \"quoted\"', version=9)\n"
        "EventsWorker.drain_all()\n"
    )
    subprocess.run([sys.executable, "-c", emitter], env=stack.env(), check=True, timeout=60)
    deadline = time.monotonic() + 90
    while len(webhook.bodies) < len(NOTIFIED) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted(body["text"] for body in webhook.bodies) == sorted(
        f'clothes v9: {event} "quoted"' for event in NOTIFIED
    )


def test_deployment_runs_on_the_worker_and_redeploy_keeps_one_schedule(stack, tmp_path):
    deployment = _api(stack, "/deployments/name/train-and-deploy/weekly")
    assert [(s["slug"], s["schedule"]["cron"]) for s in deployment["schedules"]] == [("weekly-retrain", "0 3 * * 1")]
    assert _api(stack, "/deployments/name/rollback/rollback")["work_pool_name"] == "clothes-process"

    result = run_deployment(stack.env(), SMALL_RUN)
    finished = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert finished.endswith("in 'Completed'."), result.stdout[-3000:] + result.stderr[-2000:]

    mlflow_server = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    version = mlflow_server.get_model_version("clothes", "1")
    assert "challenger" in version.aliases
    assert version.tags["trigger"] == "manual"
    card = json.loads(Path(mlflow_server.download_artifacts(version.run_id, "model_card.json")).read_text())
    assert card["train"]["epochs"] == 1
    # The object store answers with the identity `clothes-stack env` exports, and only with it.
    exported = stack.client_env()
    assert exported["MLOPS_CAPTURE_URL"] == "s3://clothes/capture"
    store = ObjectStore("s3://clothes/probe", env=exported)
    assert store.put_if_absent(store.key("first")) and not store.put_if_absent(store.key("first"))
    with pytest.raises(StoreError, match="403"):
        ObjectStore("s3://clothes", env={**exported, "AWS_SECRET_ACCESS_KEY": "wrong"}).get("probe/first")
    # The worker logged through the server (proxied artifacts), into the directory the server serves...
    run = mlflow_server.get_run(version.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert list((tmp_path / "mlruns" / "artifacts").rglob("model_card.json"))
    # ...and a client on this machine that opens the SQLite store directly (`make run`) reads it all.
    direct = Settings()
    configure_mlflow(direct)
    assert direct.tracking.resolved_tracking_uri().startswith("sqlite:")
    model = load_model_version(ModelRef("clothes", 1))
    assert model.predict(np.zeros((2, 28, 28, 1), np.float32), verbose=0).shape == (2, 10)
    assert os.path.isfile(os.path.join(os.environ["MLOPS_MODEL_ROOT"], "clothes", "1", "model.tflite"))

    # A misspelt parameter is refused before anything trains: no new version, production untouched.
    typo = run_deployment(stack.env(), {**SMALL_RUN, "container": '{"deploi": false}'})
    said = " ".join((typo.stdout + typo.stderr).split())
    assert typo.returncode != 0, said[-3000:]
    assert "deploi" in said, said[-3000:]
    assert len(mlflow_server.search_model_versions("name='clothes'")) == 1

    # A run that fails its gates says which and by how much where the user watches it.
    impossible = '{"min_accuracy": 0.99, "min_class_recall": 0, "max_regression": 0.5, "max_ood_flagged": 1}'
    rejected = run_deployment(stack.env(), {**SMALL_RUN, "thresholds": impossible})
    assert rejected.returncode == 1
    watched = " ".join(rejected.stdout.split())  # the console folds long lines at its width
    reason = re.search(r"min_accuracy: test accuracy 0\.\d{4} vs minimum 0\.9900", watched)
    assert reason, rejected.stdout[-3000:]

    # The weekly schedule's runs are marked as scheduled.
    scheduled = _api(
        stack,
        "/flow_runs/filter",
        {
            "deployments": {"id": {"any_": [deployment["id"]]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        },
    )
    assert scheduled
    assert all(run["parameters"]["trigger"] == {"kind": "schedule"} for run in scheduled)

    if not shutil.which("chromium"):
        require("chromium", "no chromium for the screenshots `make screenshots` takes (`apt-get install chromium`)")
    else:  # what `make screenshots` takes, of this stack
        shots = take_screenshots(stack.mlflow_url, stack.prefect_api, tmp_path / "shots", "clothes", "clothes")
        assert [p.name for p in shots] == ["mlflow-experiment.png", "mlflow-registry.png", "prefect-flow-run.png"]
        for shot in shots:
            with Image.open(shot) as image:
                assert image.size == (1600, 1000)
                assert len(image.convert("L").getcolors(1 << 16) or ()) > 20

    before = _scheduled_start_times(stack, deployment["id"])
    assert before
    assert len(before) == len(set(before))
    deploy(stack)  # what `clothes-stack up` or `prefect deploy --all` does again
    redeployed = _api(stack, "/deployments/name/train-and-deploy/weekly")
    assert redeployed["id"] == deployment["id"]
    assert len(redeployed["schedules"]) == 1
    deadline = time.monotonic() + 60  # the scheduler replaces the runs of a redeployed schedule
    while len(after := _scheduled_start_times(stack, deployment["id"])) < len(before) and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(5)  # a few more scheduler loops: a duplicating schedule would add runs now
    after = _scheduled_start_times(stack, deployment["id"])
    assert after == before


POSTGRES = REPO / "scripts" / "postgres.sh"


# A release as the stack runs it: trained and built by the worker, production capturing into the stack's
# store and rotating its log every second, so the analysis reads what production already shipped.
RELEASED = {
    "data": '{"train_limit": 20000, "test_limit": 2000, "holdout_size": 100}',
    "thresholds": LENIENT.model_dump_json(),
    "container": json.dumps(
        {
            "enabled": True,
            "parity_images": 200,
            "load_requests": 200,
            "serving": {"prediction_log_rotate_seconds": "1", "capture_interval": "1"},
        }
    ),
}
SHADOW_APPROVED = json.dumps(
    {
        "strategy": "shadow",
        "approval": "always",
        "sample": 1.0,
        "min_images": 3000,  # tens of seconds of the test's traffic: more than the local log keeps
        "interval_seconds": 3,
        "deadline_minutes": 4,
    }
)
PHOTOS = tuple(sorted((REPO / "examples" / "photos").iterdir()))


def _resume_when_paused(stack: Stack, answer: dict, timeout: float = 600) -> None:
    """A reviewer: waits for the paused release and resumes it with `answer` through Prefect's REST API,
    as the UI's form does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        paused = _api(stack, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}})
        if paused:
            result = _api(stack, f"/flow_runs/{paused[0]['id']}/resume", {"run_input": answer})
            assert result["status"] == "ACCEPT", result
            return
        time.sleep(1)
    raise AssertionError("no release paused for a person's decision")


@pytest.mark.docker
def test_a_shadow_release_on_the_stack_is_analysed_on_live_traffic_approved_and_promoted(
    release_env, stack, fashion_mnist, tmp_path
):
    started, port = time.time(), release_env["MLOPS_DEPLOY_PORT"]
    first = run_deployment(stack.env(), {**RELEASED, "train": '{"epochs": 2, "seed": 1}'})
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert served_version(port) == 1  # a model's first release goes direct

    answer = {"decision": "promote", "reviewer": "ana", "comment": "the photos look right"}
    candidate = {**RELEASED, "train": '{"epochs": 2, "seed": 7}', "release": SHADOW_APPROVED}
    with (
        Traffic(port, clients=2, images=fashion_mnist.x_test[5000:6000], seconds=600, files=PHOTOS) as traffic,
        ThreadPoolExecutor(1) as pool,
    ):
        release = pool.submit(run_deployment, stack.env(), candidate, 600)
        _resume_when_paused(stack, answer)
        second = release.result()
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    assert traffic.failures == []
    assert traffic.versions.keys() == {1, 2}
    assert served_version(port) == 2

    client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    version = client.get_model_version("clothes", "2")
    assert "champion" in version.aliases
    assert version.tags["shadow.decision"] == "promote", version.tags.get("shadow.reasons")
    assert {k: version.tags[f"approval.{k}"] for k in ("decision", "by", "comment")} == {
        "decision": "promote",
        "by": "ana",
        "comment": "the photos look right",
    }
    compared = client.get_run(version.run_id).data.metrics["shadow.compared"]
    assert compared >= 3000
    # Production shipped the paired records to the store as it rotated (and removed them here): the
    # analysis found its evidence there.
    store = ObjectStore("s3://clothes/capture", env=stack.client_env())
    shipped = GrowingWindow(tmp_path / "elsewhere", store, started, frozenset({"shadow"})).read()
    assert sum(len(r["ids"]) for r in shipped if r["shadow_version"] == 2) >= compared
    here = read_records(Path(release_env["MLOPS_PREDICTION_LOG_DIR"]), since=started)
    assert sum(len(r["ids"]) for r in here if r["type"] == "shadow") < compared


@pytest.fixture
def postgres_stack(tmp_path, monkeypatch):
    """A stack set to MLOPS_STACK_DB=postgres with databases of its own (a fresh prefix), and its
    `scripts/postgres.sh` prefix; afterwards the databases are dropped and the cluster left as it was found."""
    if not shutil.which("pg_ctlcluster"):
        require("postgres", "Debian's postgresql package is not installed (`apt-get install postgresql`)")
    require_root()  # to start the cluster
    prefix = f"clothes_test_{uuid.uuid4().hex[:8]}_"
    for key, value in {
        "MLOPS_STACK_DB": "postgres",
        "MLOPS_POSTGRES_PREFIX": prefix,
        "MLOPS_MLRUNS_DIR": str(tmp_path / "mlruns"),
    }.items():
        monkeypatch.setenv(key, value)
    stack = Stack(tmp_path / "stack", prefect_port=free_port(), mlflow_port=free_port(), store_port=free_port())
    was_online = "online" in subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    try:
        yield stack, prefix
    finally:
        subprocess.run([str(POSTGRES), "drop", prefix], check=True)
        if not was_online:
            subprocess.run([str(POSTGRES), "down"], check=True)


def test_stack_on_postgres_keeps_mlflow_and_prefect_there(postgres_stack, tmp_path):
    """MLOPS_STACK_DB=postgres: `up` starts the cluster and makes the databases; MLflow's runs and
    Prefect's deployments land in them (read back with SQL), artifacts still go through the server."""
    import psycopg2

    stack, prefix = postgres_stack
    try:
        up(stack)
        server = MlflowClient(tracking_uri=stack.mlflow_url)
        experiment = server.create_experiment("on-postgres")
        run = server.create_run(experiment)
        server.log_metric(run.info.run_id, "accuracy", 0.9)
        server.log_text(run.info.run_id, "hello", "notes/hello.txt")
        server.set_terminated(run.info.run_id)
        assert list((tmp_path / "mlruns" / "artifacts").rglob("hello.txt"))

        def rows(database: str, query: str) -> list[tuple]:
            connection = psycopg2.connect(dbname=prefix + database, host="/var/run/postgresql")
            with contextlib.closing(connection), connection.cursor() as cursor:
                cursor.execute(query)
                return cursor.fetchall()

        assert ("on-postgres",) in rows("mlflow", "SELECT name FROM experiments")
        assert rows("mlflow", "SELECT key, value FROM metrics") == [("accuracy", 0.9)]
        deployments = {name for (name,) in rows("prefect", "SELECT name FROM deployment")}
        assert {"weekly", "rollback", "hourly", "search"} <= deployments
        assert _api(stack, "/deployments/name/train-and-deploy/weekly")["work_pool_name"] == "clothes-process"
    finally:
        down(stack)


WRITERS, STEPS, FILES = 8, 40, 3


def _write_a_run(url: str, experiment_id: str, writer: int) -> str:
    """One client's work: params, a metric step by step, a batch, files; as a training run logs them."""
    client = MlflowClient(tracking_uri=url)
    run_id = client.create_run(experiment_id, run_name=f"writer-{writer}").info.run_id
    for key in range(10):
        client.log_param(run_id, f"param{key}", f"{writer}-{key}")
    for step in range(STEPS):
        client.log_metric(run_id, "loss", writer + step / 1000, step=step)
    client.log_batch(run_id, metrics=[Metric(f"slice{k}", writer / 10 + k, 0, 0) for k in range(20)])
    for number in range(FILES):
        client.log_text(run_id, f"writer {writer} file {number}\n" * 100, f"files/{number}.txt")
    client.set_terminated(run_id)
    return run_id


def test_several_mlflow_workers_on_postgres_lose_no_concurrent_write(postgres_stack, tmp_path):
    """MLOPS_STACK_DB=postgres runs MLflow with 4 processes; 8 clients logging at once lose nothing, with
    the artifacts in the object store (as in team mode)."""
    import psutil

    stack, prefix = postgres_stack
    stack = dataclasses.replace(stack, store_artifacts=True)
    stack.state_dir.mkdir()
    try:
        subprocess.run([str(POSTGRES), "up", prefix], check=True)
        start_store(stack, load_or_create(stack.state_dir)[0])
        start(stack, "mlflow")
        pid = stack.running_pid("mlflow")
        assert pid
        assert len(psutil.Process(pid).children(recursive=True)) >= stack.mlflow_workers() == 4
        experiment_id = MlflowClient(tracking_uri=stack.mlflow_url).create_experiment("writers")
        with ThreadPoolExecutor(WRITERS) as pool:
            run_ids = list(pool.map(lambda w: _write_a_run(stack.mlflow_url, experiment_id, w), range(WRITERS)))

        reader = MlflowClient(tracking_uri=stack.mlflow_url)
        assert len(reader.search_runs([experiment_id], max_results=100)) == WRITERS
        for writer, run_id in enumerate(run_ids):
            run = reader.get_run(run_id)
            assert run.info.status == "FINISHED"
            assert run.data.params == {f"param{k}": f"{writer}-{k}" for k in range(10)}
            history = sorted((m.step, m.value) for m in reader.get_metric_history(run_id, "loss"))
            assert history == [(step, writer + step / 1000) for step in range(STEPS)]
            assert {k: v for k, v in run.data.metrics.items() if k.startswith("slice")} == {
                f"slice{k}": writer / 10 + k for k in range(20)
            }
            for number in range(FILES):
                path = reader.download_artifacts(run_id, f"files/{number}.txt", str(tmp_path / run_id))
                assert Path(path).read_text() == f"writer {writer} file {number}\n" * 100
        store = ObjectStore("s3://clothes/mlflow-artifacts", env=stack.store_env())
        assert len([key for key in store.keys(store.key("")) if "/files/" in key]) == WRITERS * FILES
        assert not (tmp_path / "mlruns" / "artifacts").exists()
    finally:
        down(stack)


@pytest.fixture
def dns_name():
    """A name for this machine's loopback in /etc/hosts, as a team's DNS would give the stack one; removed after."""
    require_root()  # /etc/hosts
    name = f"mlops-{uuid.uuid4().hex[:8]}.team.lan"
    hosts = Path("/etc/hosts")
    before = hosts.read_text()
    hosts.write_text(f"{before.rstrip(chr(10))}\n127.0.0.1 {name}\n")
    try:
        yield name
    finally:
        hosts.write_text("".join(line for line in hosts.read_text().splitlines(True) if name not in line))


def test_mlflow_answers_on_the_stacks_dns_name_and_still_refuses_other_names(dns_name, tmp_path, monkeypatch):
    """MLflow refuses Host headers outside localhost and private addresses (DNS rebinding); the stack
    adds the name it answers on."""
    monkeypatch.setenv("MLOPS_MLRUNS_DIR", str(tmp_path / "mlruns"))
    stack = Stack(tmp_path / "stack", prefect_port=free_port(), mlflow_port=free_port(), host=dns_name)
    stack.state_dir.mkdir()
    try:
        start(stack, "mlflow")  # waits for /health at http://<name>:<port>
        search = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
        with urllib.request.urlopen(search, timeout=10) as response:
            assert response.status == 200
        other = urllib.request.Request(search, headers={"Host": f"evil.example:{stack.mlflow_port}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(other, timeout=10)
        assert refused.value.code == 403
    finally:
        stop_process(stack, "mlflow")


def test_status_of_a_stopped_stack_is_a_state_not_an_error(tmp_path, capsys):
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    assert "stack stopped" in capsys.readouterr().out


@pytest.mark.docker
def test_down_names_the_production_container_it_leaves_and_stops_it_on_request(
    docker_engine, tmp_path, monkeypatch, capsys
):
    from tasks.release.docker_engine import LABEL

    name = f"clothes-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLOPS_DEPLOY_NAME", name)
    labels = {f"{LABEL}.role": "production", f"{LABEL}.deployment": name, f"{LABEL}.version": "1"}
    container = docker_engine.containers.run(
        "python:3.11-slim", ["sleep", "120"], name=f"{name}-v1", labels=labels, detach=True, init=True
    )
    try:
        stack = Stack(tmp_path)
        down(stack)
        assert f"left running: production container {name}-v1" in capsys.readouterr().out
        container.reload()
        assert container.status == "running"
        down(stack, serving=True)
        assert f"production container {name}-v1: stopped" in capsys.readouterr().out
        assert not docker_engine.containers.list(all=True, filters={"name": name})
    finally:
        for leftover in docker_engine.containers.list(all=True, filters={"name": name}):
            leftover.remove(force=True)
