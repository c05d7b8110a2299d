"""The stack a team shares, on a second "machine" this test makes: a network namespace with its own
address and Docker engine (`ops.node`). The stack listens on the link to it with credentials and a TLS
registry; a worker inside the namespace trains and registers through it; serving replicas spread over
both engines, are updated under load and survive the second engine's death.

Traffic goes only to the addresses of the link this module made; everything it made is removed at the
end, also when a test fails (no namespace, engine, swarm node, service or trusted CA left)."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from flows.cli import prefect_refusal
from ops import node as nodes
from ops import registry
from ops.stack import WORK_POOL, Stack, StackRefused, down, main, stop_process, up
from ops.tls import CA_CERT
from serving.log.object_store import ObjectStore, StoreError
from tasks.network import free_port
from tasks.params import ModelRef
from tasks.release.deploy import deploy_replicas
from tasks.release.image import build_serving_image
from tasks.release.kubernetes import manifests, manifests_yaml
from tasks.release.registry import log_in, push
from tasks.release.targets.swarm import production_service, remove_service, running_tasks
from tasks.settings import Settings
from tasks.tracking import TrackingUnavailable, check_credentials
from tests.conftest import REPO, require, require_root, wait
from tests.ops.deployments import SMALL_RUN, run_deployment
from tests.traffic import Traffic, served_version

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def free_index() -> int:
    """A node network (10.231.<index>.0/24) no interface of this machine is on."""
    taken = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    return random.choice([i for i in range(100, 250) if f"10.231.{i}." not in taken])


def require_no_swarm(engine) -> None:
    """The test makes a swarm on a node's link: a swarm this engine is in already (on loopback) cannot
    take a node from another machine."""
    state = engine.info()["Swarm"]["LocalNodeState"]
    if state != "inactive":
        require("swarm", f"this engine is in a swarm already ({state}); the test makes its own on a node's link")


@pytest.fixture(scope="module")
def node(docker_engine, tmp_path_factory):
    """A second machine: a namespace on a link of its own with a Docker engine (in no swarm yet)."""
    require_root()
    for line in nodes.prune(docker_engine):  # what a run killed with its machine left (its swarm too)
        print(f"removed a dead node's leftover: {line}")
    second = nodes.Node(f"ct{uuid.uuid4().hex[:6]}", free_index(), tmp_path_factory.mktemp("nodes"))
    try:
        nodes.up(second)
        yield second
    finally:
        nodes.down(second, docker_engine)
        assert not second.netns.exists()
        assert not second.state_dir.exists()
        assert second.link not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


@pytest.fixture
def swarm_of_two(node, docker_engine):
    """The node joined to a swarm made for it on the link's address."""
    require_no_swarm(docker_engine)
    try:
        nodes.init_swarm(node, docker_engine)
        nodes.join_swarm(node, docker_engine)
        yield node
    finally:
        nodes.leave_swarm(node, docker_engine)
        assert docker_engine.info()["Swarm"]["LocalNodeState"] == "inactive"


@pytest.fixture(scope="module")
def team_stack(node, fashion_dir, tmp_path_factory):
    """`clothes-stack up` on the link's address: credentials, MLflow's basic-auth app, the registry."""
    work = tmp_path_factory.mktemp("team")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "MLOPS_MLRUNS_DIR": str(work / "mlruns"),
            "MLOPS_MODEL_ROOT": str(work / "models"),
            "MLOPS_DATA_DIR": str(fashion_dir),
        }.items():
            patch.setenv(key, value)
        for key in ("MLFLOW_TRACKING_URI", "MLOPS_TRACKING_URI", "PREFECT_API_URL", "PREFECT_API_AUTH_STRING"):
            patch.delenv(key, raising=False)
        stack = Stack(
            work / "stack",
            free_port(),
            free_port(),
            host=node.host_address,
            auth=True,
            registry=True,
            registry_port=free_port(),
            store_port=free_port(),
        )
        try:
            up(stack)
            yield stack
        finally:
            down(stack)
            registry.untrust(stack.registry_address)


def _request(url: str, login: tuple[str, str] | None = None, body: dict | None = None, cafile: Path | None = None):
    """(status, body bytes) of a GET, or a JSON POST with `body`; never raises on an HTTP status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        with urllib.request.urlopen(request, timeout=20, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_every_server_asks_for_credentials(team_stack, monkeypatch, tmp_path, capsys):
    stack = team_stack
    credentials = stack.credentials()
    assert credentials is not None
    # `clothes-stack env` prints what a colleague needs for the stack as `up` started it, from any shell.
    monkeypatch.delenv("MLOPS_STACK_HOST", raising=False)
    assert main(["env", "--state-dir", str(stack.state_dir)]) == 0
    exported = capsys.readouterr().out
    assert f"export PREFECT_API_URL=http://{stack.host}:{stack.prefect_port}/api" in exported
    assert f"export PREFECT_API_AUTH_STRING=admin:{credentials.prefect_password}" in exported
    assert f"export MLOPS_REGISTRY={stack.registry_address}" in exported
    assert (stack.state_dir / "credentials.json").stat().st_mode & 0o777 == 0o600
    assert (stack.state_dir / "mlflow-auth.ini").stat().st_mode & 0o777 == 0o600
    assert stack.state_dir.stat().st_mode & 0o777 == 0o700

    # Prefect: the API refuses without or with a wrong login, answers with the right one; health is open.
    filter_url = f"{stack.prefect_api}/deployments/filter"
    assert _request(filter_url, body={})[0] == 401
    assert _request(filter_url, (credentials.username, "wrong"), body={})[0] == 401
    status, found = _request(filter_url, (credentials.username, credentials.prefect_password), body={})
    assert status == 200
    assert {d["name"] for d in json.loads(found)} >= {"weekly", "rollback", "hourly", "search"}
    assert _request(f"{stack.prefect_api}/health")[0] == 200
    wrong = {**stack.env(), "PREFECT_API_AUTH_STRING": f"{credentials.username}:wrong"}
    refused = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "ls"], env=wrong, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0
    assert "401" in refused.stdout + refused.stderr
    # Our own commands say it in one line, before anything trains.
    assert prefect_refusal(stack.prefect_api, credentials.prefect_auth_string) is None
    assert "401 (no credentials)" in str(prefect_refusal(stack.prefect_api, None))
    bare_shell = {k: v for k, v in stack.env().items() if k != "PREFECT_API_AUTH_STRING"}
    pipeline = subprocess.run(
        [sys.executable, "-m", "flows.pipeline"], env=bare_shell, capture_output=True, text=True, timeout=120
    )
    assert pipeline.returncode == 2
    assert "answered 401 (no credentials): set PREFECT_API_AUTH_STRING" in pipeline.stderr

    # MLflow: its UI asks the browser for a login; its API refuses, then answers.
    ui = urllib.request.Request(f"{stack.mlflow_url}/")
    with pytest.raises(urllib.error.HTTPError) as asked:
        urllib.request.urlopen(ui, timeout=20)
    assert asked.value.code == 401
    assert asked.value.headers["WWW-Authenticate"].startswith("Basic")
    search = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert _request(search)[0] == 401
    assert _request(search, (credentials.username, credentials.mlflow_password))[0] == 200
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", credentials.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(TrackingUnavailable, match="answered 401: the credentials of user 'admin' were refused"):
        check_credentials(stack.mlflow_url)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    with pytest.raises(TrackingUnavailable, match="no credentials were given"):
        check_credentials(stack.mlflow_url)

    # The registry: TLS from the stack's CA (which this machine's engines now trust), htpasswd users.
    ca = stack.registry_dir / CA_CERT
    assert (registry.DOCKER_CERTS / stack.registry_address / "ca.crt").read_bytes() == ca.read_bytes()
    catalog = f"https://{stack.registry_address}/v2/_catalog"
    assert _request(catalog, cafile=ca)[0] == 401
    assert _request(catalog, (credentials.username, credentials.registry_password), cafile=ca)[0] == 200
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(catalog, timeout=20)  # not without the CA

    # The object store: S3 on the link's address, its identity only (SignatureDoesNotMatch: 403).
    assert f"export AWS_ENDPOINT_URL_S3=http://{stack.host}:{stack.store_port}" in exported
    assert f"export AWS_SECRET_ACCESS_KEY={credentials.store_secret_key}" in exported
    store = ObjectStore("s3://clothes/probe", env=stack.store_env())
    assert store.put_if_absent(store.key("claim"))
    assert not store.put_if_absent(store.key("claim"))
    with pytest.raises(StoreError, match="403"):
        ObjectStore("s3://clothes", env={**stack.store_env(), "AWS_SECRET_ACCESS_KEY": "wrong"}).get("probe/claim")

    # No password in any log the stack writes.
    logs = "".join(path.read_text(errors="replace") for path in stack.state_dir.glob("*.log"))
    secrets = (credentials.mlflow_password, credentials.prefect_password, credentials.registry_password)
    for secret in (*secrets, credentials.store_secret_key):
        assert secret not in logs

    # Beyond loopback without credentials: refused before anything starts.
    bare = Stack(tmp_path / "bare", free_port(), free_port(), host=stack.host, auth=False)
    with pytest.raises(StackRefused, match=f"refusing to listen on {stack.host} without credentials"):
        up(bare)
    assert not (tmp_path / "bare").exists()


def test_the_prefect_ui_asks_for_the_auth_string_in_a_browser(team_stack, browser):
    """Prefect's UI shows its login page until it is given `admin:<password>` (PREFECT_API_AUTH_STRING)."""
    credentials = team_stack.credentials()
    assert credentials is not None
    browser.get(team_stack.prefect_api.removesuffix("/api") + "/dashboard")
    password = (By.CSS_SELECTOR, "input[type=password]")
    wait(browser, 60).until(lambda d: d.find_elements(*password))
    browser.find_element(*password).send_keys(f"{credentials.username}:wrong", Keys.ENTER)
    time.sleep(2)
    assert browser.find_elements(*password), "a wrong auth string let the UI in"
    field = browser.find_element(*password)
    field.clear()
    field.send_keys(credentials.prefect_auth_string, Keys.ENTER)
    wait(browser, 60).until(lambda d: not d.find_elements(*password))


def test_a_worker_in_the_second_namespace_trains_and_registers(team_stack, node, fashion_dir, tmp_path, monkeypatch):
    """Only the stack's URLs and credentials: no mlruns/, no .stack/, no SQLite file of the first machine."""
    stack = team_stack
    stop_process(stack, "worker")  # the first machine's worker: the run must go to the other one
    remote = tmp_path / "remote"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(remote / "home"),
        "LANG": "C.UTF-8",
        **stack.client_env(),
        "CLOTHES_PROJECT_DIR": str(REPO),
        "MLOPS_DATA_DIR": str(fashion_dir),
        "PREFECT_HOME": str(remote / "prefect"),
        "MLOPS_MLRUNS_DIR": str(remote / "mlruns"),
        "MLOPS_MODEL_ROOT": str(remote / "models"),
        "KERAS_HOME": str(remote / "keras"),
        "MPLCONFIGDIR": str(remote / "matplotlib"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    assert not any(str(stack.state_dir) in value or "sqlite" in value for value in env.values())
    (remote / "home").mkdir(parents=True)
    log = (remote / "worker.log").open("w")
    worker = subprocess.Popen(
        [
            *node.enter(),
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            WORK_POOL,
            "--type",
            "process",
            "--name",
            f"remote-{node.name}",
        ],
        env=env,
        cwd=remote,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        small = {**SMALL_RUN, "data": '{"train_limit": 2000, "test_limit": 500, "holdout_size": 50, "ood_size": 50}'}
        result = run_deployment(stack.env(), small)
        worker_log = (remote / "worker.log").read_text(errors="replace")
        assert result.returncode == 0, result.stdout[-3000:] + worker_log[-3000:]
        assert "Completed" in result.stdout, result.stdout[-3000:] + worker_log[-3000:]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:  # Prefect's worker can sit on its events websocket for minutes
            os.killpg(worker.pid, signal.SIGKILL)  # as `clothes-stack down` does (ops.stack.stop_process)
            worker.wait(timeout=30)
        log.close()
    assert f"remote-{node.name}" in worker_log
    assert "Completed" in worker_log

    credentials = stack.credentials()
    assert credentials is not None
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", credentials.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", credentials.mlflow_password)
    server = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    (found,) = server.search_model_versions("name='clothes'")
    version = server.get_model_version("clothes", found.version)
    assert "challenger" in version.aliases
    run = server.get_run(version.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert run.data.params["train.epochs"] == "1"
    # The artifacts landed in the stack's object store, through MLflow's server; the worker kept no store.
    store = ObjectStore("s3://clothes/mlflow-artifacts", env=stack.store_env())
    assert [key for key in store.keys(store.key("")) if key.endswith("/model_card.json")]
    assert not list(stack.settings.tracking.artifacts_dir.rglob("model_card.json"))
    assert not (remote / "mlruns").exists()


def test_prune_removes_what_a_node_killed_with_its_machine_left_and_nothing_alive(node, docker_engine, tmp_path):
    """A run killed with its machine (a CI runner stopped mid-test) leaves a namespace with no process in it,
    this engine in a swarm on the vanished link and a trusted CA; the next run must not inherit them."""
    require_no_swarm(docker_engine)
    dead = nodes.Node(f"cd{uuid.uuid4().hex[:6]}", free_index(), tmp_path)  # the live node's index is taken
    certs = tmp_path / "certs.d"
    try:
        nodes.network_up(dead)  # its engine is gone: nothing runs in the namespace
        dead.state_dir.mkdir()
        nodes.init_swarm(dead, docker_engine)  # this engine's swarm, advertised on the dead node's link
        for address in (f"{dead.host_address}:5443", f"{node.host_address}:5443"):
            (certs / address).mkdir(parents=True)
        removed = nodes.prune(docker_engine, certs_root=certs)
        assert len(removed) == 3, removed
        assert dead.name in removed[0], removed
        assert not dead.netns.exists()
        assert dead.link not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert docker_engine.info()["Swarm"]["LocalNodeState"] == "inactive"
        assert [p.name for p in certs.iterdir()] == [f"{node.host_address}:5443"]  # the live node's stays
        assert node.netns.exists()
        assert node.client().ping()
        assert nodes.prune(docker_engine, certs_root=certs) == []
    finally:
        nodes.down(dead, docker_engine)


def test_two_nodes_run_the_pushed_digest_update_under_load_and_survive_a_dead_engine(
    team_stack, swarm_of_two, docker_engine, model_root, tmp_path, monkeypatch
):
    stack, node = team_stack, swarm_of_two
    name = f"clothes-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    for key, value in global_service(stack, name, port, tmp_path / "logs").items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    figures: dict[str, float] = {}
    try:
        log_in(docker_engine, settings.release)
        references = {}
        for version in (1, 2):
            image_id, _ = build_serving_image(
                docker_engine,
                [model_root / "clothes" / str(version)],
                f"{name}:{version}",
                wheelhouse_dir=settings.release.wheelhouse_dir,
                base_image=settings.release.base_image,
            )
            started = time.monotonic()
            references[version] = push(docker_engine, image_id, f"{stack.registry_address}/{name}", str(version), print)
            figures[f"push_v{version}_seconds"] = time.monotonic() - started
            # The registry's tag names exactly the digest the release runs.
            digest = registry.tag_digest(
                stack.registry_address, name, str(version), stack.credentials(), stack.registry_dir / CA_CERT
            )
            assert references[version].endswith("@" + digest)

        started = time.monotonic()
        deploy_replicas(docker_engine, references[1], 1, settings, print)
        figures["first_deploy_seconds"] = time.monotonic() - started  # includes the second node's pull
        service = production_service(docker_engine, name)
        tasks = running_tasks(service, references[1])
        assert len(tasks) == 2, "one replica on each node"
        assert len({task["NodeID"] for task in tasks}) == 2, "one replica on each node"
        for engine in (docker_engine, node.client()):
            (container,) = engine.containers.list(filters={"label": f"com.docker.swarm.service.name={name}"})
            assert references[1] in container.image.attrs["RepoDigests"]
        (deployment, *_) = manifests(references[1], ModelRef("clothes", 1), settings)
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == references[1]
        assert references[1] in manifests_yaml(manifests(references[1], ModelRef("clothes", 1), settings))
        for address in (node.address, node.host_address):
            assert served_version(port, address) == 1

        with Traffic(port, 2, host=node.address) as second, Traffic(port, 2, host=node.host_address) as first:
            started = time.monotonic()
            deploy_replicas(docker_engine, references[2], 2, settings, print)
            figures["rolling_update_seconds"] = time.monotonic() - started
        for traffic in (first, second):
            assert traffic.failures == [], traffic.failures[:3]
            assert set(traffic.versions) == {1, 2}, traffic.failures[:3]
        figures["update_requests"] = first.ok + second.ok
        figures["update_failures"] = len(first.failures) + len(second.failures)

        # Beside it, a replicated service (2 replicas spread over the nodes): swarm moves a dead node's share.
        spread = settings.model_copy(
            update={
                "deploy": settings.deploy.model_copy(
                    update={"mode": "replicated", "name": f"{name}-spread", "port": free_port(), "replicas": 2}
                )
            }
        )
        deploy_replicas(docker_engine, references[2], 2, spread, print)
        spread_service = production_service(docker_engine, spread.deploy.name)
        dead, manager = swarm_id(docker_engine, node), docker_engine.info()["Swarm"]["NodeID"]
        assert {t["NodeID"] for t in running_tasks(spread_service, references[2])} == {dead, manager}

        with Traffic(port, 2, host=node.host_address) as survivor:
            started = time.monotonic()
            figures["killed_processes"] = nodes.kill(node)  # its engine, containerd, shims, replicas
            assert not _answers(port, node.address, version=2), "the dead node still answers"
            while docker_engine.nodes.get(dead).attrs["Status"]["State"] != "down":
                assert time.monotonic() - started < 120, "swarm did not notice the dead node"
                time.sleep(0.5)
            figures["node_down_seconds"] = time.monotonic() - started
            while len([t for t in running_tasks(spread_service, references[2]) if t["NodeID"] != dead]) < 2:
                assert time.monotonic() - started < 180, "swarm did not reschedule the dead node's replica"
                time.sleep(0.5)
            figures["rescheduled_seconds"] = time.monotonic() - started
        assert survivor.failures == [], survivor.failures[:3]
        assert survivor.ok > 20, survivor.failures[:3]
        figures["kill_requests"], figures["kill_failures"] = survivor.ok, len(survivor.failures)
        assert served_version(spread.deploy.port, node.host_address) == 2

        # The machine comes back: its engine rejoins and swarm starts the current version on it again.
        started = time.monotonic()
        nodes.engine_up(node)
        while not _answers(port, node.address, version=2):
            assert time.monotonic() - started < 180, "swarm did not start a replica on the returning node"
            time.sleep(1)
        figures["rejoin_seconds"] = time.monotonic() - started
        print("two-node figures:", json.dumps({k: round(v, 1) for k, v in figures.items()}))
    finally:
        remove_service(docker_engine, f"{name}-spread")
        remove_deployment(docker_engine, stack, name)


def global_service(stack: Stack, name: str, port: int, logs: Path) -> dict[str, str]:
    """The environment a release to a global swarm service named `name` runs with, through the stack."""
    return {
        **stack.client_env(),
        "MLOPS_DEPLOY_TARGET": "swarm",
        "MLOPS_DEPLOY_NAME": name,
        "MLOPS_DEPLOY_HOST": "0.0.0.0",
        "MLOPS_DEPLOY_PORT": str(port),
        "MLOPS_DEPLOY_MODE": "global",
        "MLOPS_DEPLOY_TIMEOUT": "180",
        "MLOPS_PREDICTION_LOG_DIR": str(logs),
        "MLOPS_IMAGE_NAME": name,
    }


def remove_deployment(engine, stack: Stack, name: str) -> None:
    """The service (waiting for its containers to stop), its secrets and its images' tags."""
    remove_service(engine, name)
    for secret in engine.secrets.list(filters={"name": name}):
        secret.remove()
    for image in engine.images.list():  # by tag: an image of the same id keeps its other tags
        for tag in image.tags:
            if tag.startswith((f"{name}:", f"{stack.registry_address}/{name}")):
                engine.images.remove(tag, force=True)  # untags; stopped task containers may use it


def _answers(port: int, host: str, version: int) -> bool:
    try:
        return served_version(port, host) == version
    except OSError:
        return False


def swarm_id(manager, node: nodes.Node) -> str:
    (member,) = [m for m in manager.nodes.list() if m.attrs["Description"]["Hostname"] == node.name]
    return member.id


def test_two_nodes_capture_into_the_stores_one_window(
    team_stack, swarm_of_two, docker_engine, model_root, trained_model, fashion_mnist, tmp_path, monkeypatch
):
    """Replicas on both nodes ship their traffic to the stack's object store; the monitor on the stack's
    machine, reading the store alone, counts every prediction of both nodes exactly, sees drift that only
    the second node's clients sent, and finds the inputs of the labels the second node took."""
    from serving.log.reader import first_labels
    from tasks.evaluation.metrics import predict_probabilities
    from tasks.evaluation.reference import build_reference
    from tasks.monitoring.drift import judge
    from tasks.monitoring.monitor import labelled_samples
    from tasks.monitoring.window import labelled_records, read_summary
    from tasks.params import MonitorThresholds

    stack, node = team_stack, swarm_of_two
    name = f"clothes-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    capture_prefix = f"capture-{name}"
    service = global_service(stack, name, port, tmp_path / "logs")
    for key, value in {**service, "MLOPS_CAPTURE_URL": f"s3://clothes/{capture_prefix}"}.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    x, y = fashion_mnist.x_test, fashion_mnist.y_test
    try:
        log_in(docker_engine, settings.release)
        image_id, _ = build_serving_image(
            docker_engine,
            [model_root / "clothes" / "1"],
            f"{name}:1",
            wheelhouse_dir=settings.release.wheelhouse_dir,
            base_image=settings.release.base_image,
            serving={"prediction_log_inputs": "true", "capture_interval": "1"},
        )
        reference = push(docker_engine, image_id, f"{stack.registry_address}/{name}", "1", print)
        since = time.time() - 1
        deploy_replicas(docker_engine, reference, 1, settings, print)
        spec = production_service(docker_engine, name).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert not any(stack.credentials().store_secret_key in value for value in spec.get("Env", []))

        def classify(host: str, images) -> list[dict]:
            answers = []
            for start in range(0, len(images), 50):
                body = {"images": images[start : start + 50].tolist()}
                status, answer = _request(f"http://{host}:{port}/models/clothes/v1", body=body)
                assert status == 200, answer[:300]
                answers.extend(json.loads(answer)["predictions"])
            return answers

        classify(node.host_address, x[5000:5600])  # the first machine's replica
        drifted = classify(node.address, x[6000:6400] // 3)  # the second's, whose clients drifted
        for answer, label in list(zip(drifted, y[6000:6400], strict=True))[:30]:
            body = {"id": answer["id"], "class_id": int(label), "reviewed": True}
            assert _request(f"http://{node.address}:{port}/models/clothes/v1/feedback", body=body)[0] == 202
        again = {"id": drifted[0]["id"], "class_id": 1}
        assert _request(f"http://{node.host_address}:{port}/models/clothes/v1/feedback", body=again)[0] == 409
    finally:
        remove_deployment(docker_engine, stack, name)  # the replicas exit: everything written and shipped
    until = time.time() + 1

    store = ObjectStore(f"s3://clothes/{capture_prefix}", env=stack.store_env())
    keys = list(store.keys(store.key("")))
    nodes_shipping = {found.group(1) for key in keys if (found := re.search(r"/node=([^/]+)/", key))}
    assert len(nodes_shipping) == 2 and node.name in nodes_shipping, nodes_shipping  # one set of files per node
    assert len([key for key in keys if "/labels/" in key]) == 30  # one claim per labelled prediction
    assert not list((tmp_path / "logs").glob("predictions-*")), "a replica left files unshipped"
    summary = read_summary(None, store, ModelRef("clothes", 1), since, until, classes=10)
    assert summary is not None and summary.n == 1000  # 600 + 400, each once
    assert summary.n_feedback == 30
    baseline = fashion_mnist.x_test[:5000]
    trained = build_reference(predict_probabilities(trained_model, baseline), baseline, list(fashion_mnist.class_names))
    report = judge(trained, summary, MonitorThresholds(), None)
    assert any("input mean" in reason for reason in report.reasons), report.reasons
    records = labelled_records(None, store, summary, since, until)
    assert len(first_labels(records)) == 30
    assert len(labelled_samples(records)) == 30
