"""A tiny real search on a real Dask cluster (`dask scheduler` + 2 `dask worker` processes, as on several
machines), handed off to the gates."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.params import ContainerParams, DataSpec, SearchSpace
from tasks.registry.policy import card_of
from tasks.training.tuning import sample_trials
from tests.conftest import LENIENT

pytestmark = pytest.mark.slow


def test_trials_are_deterministic_and_distinct():
    space = SearchSpace()
    first = sample_trials(space, 5, "random", seed=3, epochs=2)
    assert first == sample_trials(space, 5, "random", seed=3, epochs=2)
    assert len({t.model_dump_json(exclude={"seed"}) for t in first}) == 5
    assert [t.seed for t in first] == [3, 4, 5, 6, 7]
    assert {t.epochs for t in first} == {2}
    small = SearchSpace(
        conv1_filters=[6, 8],
        conv2_filters=[16],
        kernel_size=[5],
        convs_per_block=[1],
        padding=["valid"],
        input_padding=[2],
        dense1=[120],
        dense2=[84],
        dropout=[0.0],
        batch_norm=[False],
        pooling=["max"],
        learning_rate=[1e-3],
        batch_size=[64],
        augment=[False, True],
    )
    grid = sample_trials(small, 10, "grid", 0, 1)
    assert [(t.architecture.conv1_filters, t.augment) for t in grid] == [(6, False), (6, True), (8, False), (8, True)]
    assert {t.architecture.pooling for t in grid} == {"max"}


def test_search_space_comes_from_json_or_a_file_and_refuses_unknown_fields(tmp_path, monkeypatch):
    from flows import tune as tune_module

    given: dict = {}

    def record(flow, *args, **kwargs) -> int:
        given.update(inspect.signature(flow.fn).bind(*args, **kwargs).arguments)
        return 0

    monkeypatch.setattr(tune_module, "run_and_report", record)  # what the flow would run with, not run
    assert tune_module.main(["--space", '{"dropout": [0.3]}']) == 0
    assert given["space"].dropout == [0.3]
    (tmp_path / "space.json").write_text('{"augment": [true]}')
    assert tune_module.main(["--space-file", str(tmp_path / "space.json"), "--budget", "2"]) == 0
    assert given["space"].augment == [True]
    assert given["budget"] == 2
    for bad in (["--space", '{"dropuot": [0.3]}'], ["--space-file", str(tmp_path / "missing.json")]):
        with pytest.raises(SystemExit) as stopped:
            tune_module.main(bad)
        assert stopped.value.code != 0


@pytest.fixture
def dask_cluster(tmp_path, fashion_dir, mlflow_store, monkeypatch):
    """The documented commands for a cluster: a scheduler and two single-thread workers, on 127.0.0.1.
    The workers start after the test's stores are configured, so they write into the test's own."""
    from distributed import Client

    monkeypatch.setenv("MLOPS_DATA_DIR", str(fashion_dir))
    dask = str(Path(sys.executable).parent / "dask")
    scheduler_file = tmp_path / "scheduler.json"
    processes = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        for name in ("w1", "w2"):
            processes.append(
                subprocess.Popen(
                    [
                        dask,
                        "worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--name",
                        name,
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        "--local-directory",
                        str(tmp_path / name),
                    ],
                    stderr=subprocess.DEVNULL,
                )
            )
        for _ in range(600):  # the scheduler writes its address once it listens
            if scheduler_file.exists():
                break
            time.sleep(0.1)
        with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            yield client
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_search_on_a_dask_cluster_picks_the_best_and_hands_it_to_the_gates(prefect_harness, dask_cluster):
    from flows.tune import dask_runner, tune

    space = SearchSpace(
        conv1_filters=[6, 16],
        conv2_filters=[16, 32],
        dense1=[120],
        dense2=[84],
        dropout=[0.0],
        batch_norm=[False, True],
        learning_rate=[2e-3],
        batch_size=[128],
    )
    runner = dask_runner(address=dask_cluster.scheduler.address)
    summary = tune.with_options(task_runner=runner)(
        space=space,
        data=DataSpec(train_limit=2000, test_limit=500, holdout_size=100),
        budget=3,
        epochs=1,
        final_epochs=1,
        thresholds=LENIENT,
        container=ContainerParams(enabled=False),
    )

    client = MlflowClient()
    parent = client.get_run(summary["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 3
    assert all(c.info.status == "FINISHED" for c in children)
    assert all("val_accuracy" in c.data.metrics and "conv1_filters" in c.data.params for c in children)
    best = max(children, key=lambda c: c.data.metrics["best_val_accuracy"])
    assert summary["best"]["run_id"] == best.info.run_id == parent.data.tags["best_trial_run_id"]
    assert parent.data.metrics["trials"] == 3
    assert parent.data.params["budget"] == "3"
    assert client.download_artifacts(parent.info.run_id, "tune/space.json")

    handed = summary["train_and_deploy"]
    version = client.get_model_version("clothes", handed["model_version"])
    assert version.tags["gates"] == "pass"
    assert version.tags["trigger"] == "search"
    assert "challenger" in version.aliases
    trained = card_of(version)["train"]
    for key in ("conv1_filters", "conv2_filters", "batch_norm", "pooling", "augment", "seed"):
        assert str(trained[key]) == best.data.params[key]
    assert trained["validation_fraction"] == 0.05  # the retrain trains on 95% of the split
    executed = dask_cluster.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(executed) == 2, executed
    assert all(count > 0 for count in executed.values()), executed
