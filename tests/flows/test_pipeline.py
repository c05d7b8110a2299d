"""The real flow under Prefect's test harness, on a small real subset, against a temporary MLflow store."""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from flows.pipeline import train_and_deploy
from tasks.evaluation.slices import SLICES
from tasks.network import free_port
from tasks.params import ContainerParams, DataSpec, GateThresholds, TrainParams
from tasks.registry.policy import card_of
from tasks.tracking import CHALLENGER, CHAMPION
from tests.conftest import LENIENT

pytestmark = pytest.mark.slow


def _params(fashion_dir, thresholds: GateThresholds = LENIENT, seed: int = 42) -> dict:
    return {
        "data": DataSpec(path=fashion_dir, train_limit=2000, test_limit=500, holdout_size=100),
        "train": TrainParams(epochs=2, batch_size=64, seed=seed),
        "thresholds": thresholds,
        "container": ContainerParams(enabled=False),  # the registry half only; test_container.py does the rest
    }


def test_registry_lifecycle(prefect_harness, mlflow_store, fashion_dir, capfd, caplog):
    # 1. First candidate: registered as v1 with alias challenger, everything recorded on the run.
    first = train_and_deploy(**_params(fashion_dir))
    console = "".join(capfd.readouterr())  # nothing but the log: no Keras step bars, no download bars
    assert "━" not in console
    assert "/step" not in console
    assert "Downloading artifacts" not in console
    assert "epoch 2/2 loss" in caplog.text
    assert "s/epoch" in caplog.text
    client = MlflowClient()
    v1 = client.get_model_version("clothes", first["model_version"])
    assert str(v1.version) == "1"
    assert CHALLENGER in v1.aliases
    assert v1.tags["gates"] == "pass"
    assert v1.tags["data.digest"] == first["data_digest"]
    assert set(v1.tags) == {"gates", "test_accuracy", "data.digest", "git_commit", "trigger", "run_id"}
    card = card_of(v1)  # the rest of what is known, one JSON artifact of the run
    assert card["train"]["epochs"] == 2
    assert card["trigger"]["kind"] == "manual"
    assert card["data"]["class_names"][0] == "T-shirt/top"
    assert "epochs=2" in v1.description
    run = client.get_run(first["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["candidate_status"] == "registered as clothes v1"
    assert run.data.metrics["test_accuracy"] == pytest.approx(first["test_accuracy"])
    assert first["test_accuracy"] >= 0.5
    assert len(client.get_metric_history(first["run_id"], "val_loss")) == 2
    assert set(first["slice_accuracy"]) == set(SLICES)
    assert len(card["gates"]) == 3 + len(SLICES) + 3
    assert [gate["name"] for gate in card["gates"]][-3:] == ["ood.auroc", "ood.detection", "ood.false_flags"]
    ood_metrics = {"ood.auroc", "ood.detection_rate", "ood.noise.detection_rate", "ood.test.flagged_rate"}
    assert ood_metrics <= set(run.data.metrics)
    assert client.download_artifacts(first["run_id"], "ood/detector.json")
    assert run.data.metrics["slice.catalogue.accuracy"] == pytest.approx(first["slice_accuracy"]["catalogue"])
    assert client.download_artifacts(first["run_id"], "evaluation/slice_recall.json")
    plots = {a.path for a in client.list_artifacts(first["run_id"], "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/training_curves.png"}
    assert (mlflow_store / "mlflow.db").is_file()
    assert (mlflow_store / "artifacts").is_dir()

    # 2. The champion's data, parameters and code again: nothing trained or registered, and it says so.
    client.set_registered_model_alias("clothes", CHAMPION, "1")
    again = train_and_deploy(**_params(fashion_dir))
    assert again["status"] == "unchanged"
    assert again["champion_version"] == "1"
    assert not again["promoted"]
    assert "nothing new to learn from" in again["reason"]
    assert len(client.search_model_versions("name='clothes'")) == 1

    # 3. Another seed: a new candidate, compared with the champion on the same test set.
    second = train_and_deploy(**_params(fashion_dir, seed=7))
    assert second["compared_with"]["version"] == "1"
    assert second["compared_with"]["accuracy"] == pytest.approx(first["test_accuracy"], abs=1e-6)
    assert second["model_version"] == "2"
    v2 = client.get_model_version("clothes", second["model_version"])
    gates = {gate["name"]: gate for gate in card_of(v2)["gates"]}
    assert "champion v1" in gates["no_regression"]["detail"]
    assert CHALLENGER in v2.aliases
    assert str(client.get_model_version_by_alias("clothes", CHAMPION).version) == "1"

    # 4. An impossible threshold fails the flow, registers nothing and moves no alias.
    impossible = GateThresholds(min_accuracy=0.9999, min_class_recall=0.0, max_regression=0.05)
    state = train_and_deploy(**_params(fashion_dir, thresholds=impossible, seed=3), return_state=True)
    assert state.is_failed()
    assert "min_accuracy" in state.message
    versions = client.search_model_versions("name='clothes'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert str(client.get_model_version_by_alias("clothes", CHAMPION).version) == "1"
    assert str(client.get_model_version_by_alias("clothes", CHALLENGER).version) == "2"
    rejected = client.search_runs([run.info.experiment_id], "tags.candidate_status = 'rejected'")
    assert len(rejected) == 1
    assert rejected[0].info.status == "FAILED"
    assert rejected[0].data.tags["gate.min_accuracy"] == "fail"


def test_logging_the_data_leaves_the_pipeline_run_running(mlflow_store, small_dataset):
    from tasks.data.lineage import log_dataset
    from tasks.settings import Settings
    from tasks.tracking import configure_mlflow, tracked_run

    experiment_id = configure_mlflow(Settings())
    client = MlflowClient()
    with tracked_run(experiment_id, "data") as run_id:
        log_dataset(small_dataset, {"train": {}, "test": {}})
        run = client.get_run(run_id)
        assert run.info.status == "RUNNING"
        assert run.data.tags["data.digest"] == small_dataset.digest
        assert len(run.inputs.dataset_inputs) == 2
    assert client.get_run(run_id).info.status == "FINISHED"


def test_experiments_open_in_the_traditional_ml_view(mlflow_store):
    from tasks.settings import Settings
    from tasks.tracking import configure_mlflow

    settings = Settings()
    created = configure_mlflow(settings)
    client = MlflowClient()
    older = client.create_experiment("made-before")  # as an earlier version of the pipeline left it
    assert configure_mlflow(settings, "made-before") == older
    for experiment_id in (created, older):
        assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.parametrize(("error", "status"), [(ValueError, "FAILED"), (KeyboardInterrupt, "KILLED")])
def test_a_tracked_run_ends_with_what_ended_it(mlflow_store, error, status):
    from tasks.run_owner import PID
    from tasks.settings import Settings
    from tasks.tracking import configure_mlflow, tracked_run

    experiment_id = configure_mlflow(Settings())
    with pytest.raises(error), tracked_run(experiment_id, "doomed", {"purpose": "test"}) as run_id:
        raise error
    run = MlflowClient().get_run(run_id)
    assert run.info.status == status
    assert run.data.tags["purpose"] == "test"
    assert PID in run.data.tags


def test_invalid_data_fails_before_anything_is_logged(prefect_harness, mlflow_store, tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for name in ("bag", "coat"):
            (tmp_path / split / name).mkdir(parents=True)
        Image.new("L", (28, 28), 7).save(tmp_path / split / "bag" / "only.png")  # 'coat' has no images
    state = train_and_deploy(
        data=DataSpec(source="image-folder", path=tmp_path),
        thresholds=LENIENT,
        container=ContainerParams(enabled=False),
        return_state=True,
    )
    assert state.is_failed()
    assert "no examples of: coat" in state.message
    assert MlflowClient().search_registered_models() == []


def test_data_loading_is_cached_on_content_and_parameters(prefect_harness, fashion_dir, tmp_path):
    import shutil

    from prefect import flow

    from tasks.data.loader import load_data_task
    from tasks.settings import Settings

    data_dir = tmp_path / "data"
    shutil.copytree(fashion_dir, data_dir)

    @flow
    def load_twice(spec: DataSpec) -> list[str]:
        return [load_data_task(spec, Settings(), return_state=True).name for _ in range(2)]

    spec = DataSpec(path=data_dir, train_limit=100, test_limit=50)
    assert load_twice(spec) == ["Completed", "Cached"]
    assert load_twice(spec.model_copy(update={"train_limit": 101})) == ["Completed", "Cached"]
    labels = data_dir / "t10k-labels-idx1-ubyte.gz"
    labels.chmod(0o644)
    labels.write_bytes(labels.read_bytes())  # same content: still cached
    assert load_twice(spec)[0] == "Cached"


def test_command_line_maps_to_flow_parameters(tmp_path):
    from flows.pipeline import app

    def parse(*tokens: str) -> dict:
        return app.parse_args(list(tokens))[1].arguments

    params = parse(
        "--data.path", str(tmp_path), "--data.train-limit", "500", "--train.epochs", "3", "--container.no-deploy"
    )
    assert params["data"].path == tmp_path
    assert params["data"].train_limit == 500
    assert params["data"].source == "fashion-mnist"
    assert params["train"].epochs == 3
    assert params["train"].batch_size == TrainParams().batch_size
    assert params["container"].enabled is None
    assert params["container"].deploy is False
    folder = parse("--data.source", "image-folder", "--data.path", str(tmp_path), "--container.no-enabled")
    assert folder["data"].source == "image-folder"
    assert folder["container"].enabled is False
    assert parse("--train", '{"epochs": 2, "seed": 7}')["train"] == TrainParams(epochs=2, seed=7)  # as deployments


def test_unreachable_mlflow_fails_in_seconds_before_training(prefect_harness, mlflow_store, fashion_dir, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLOPS_TRACKING_URI", uri)
    monkeypatch.setenv("MLOPS_TRACKING_PREFLIGHT_SECONDS", "3")
    started = time.monotonic()
    state = train_and_deploy(**_params(fashion_dir), return_state=True)
    assert state.is_failed()
    assert uri in state.message
    assert "does not answer" in state.message
    assert time.monotonic() - started < 30
