"""`tune`: fan LeNet-5 variants out over Dask (prefect-dask), pick the best by validation accuracy, and
hand it to `train_and_deploy`, which retrains it and runs the same gates, registry and container stages."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import mlflow
from cyclopts import Parameter
from cyclopts.types import ExistingJsonPath
from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_table_artifact
from prefect_dask import DaskTaskRunner
from pydantic import Field

from flows.cli import console_script, flow_app, run_and_report
from flows.pipeline import train_and_deploy
from tasks.params import ContainerParams, DataSpec, GateThresholds, SearchSpace, TrainParams, Trigger
from tasks.settings import Settings
from tasks.tracking import configure_mlflow, tracked_run
from tasks.training import sample_trials, trial_task


def dask_runner(address: str | None = None, workers: int | None = None) -> DaskTaskRunner:
    """An existing scheduler, or a LocalCluster of single-threaded worker processes (TensorFlow is not
    fork- or thread-friendly enough to share a process between trials). Unset arguments come from
    MLOPS_DASK_ADDRESS / MLOPS_DASK_WORKERS, read when the flow is loaded (the worker's environment)."""
    settings = Settings()
    address = address or settings.search.address
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers or settings.search.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    )


@flow(name="tune", task_runner=dask_runner())  # type: ignore[arg-type]  # prefect-dask is not typed to match
def tune(
    space: SearchSpace | None = None,
    data: DataSpec | None = None,
    budget: Annotated[int, Field(ge=1)] = 8,
    strategy: Literal["random", "grid"] = "random",
    epochs: Annotated[int, Field(ge=1, description="per trial, with early stopping")] = 20,
    seed: Annotated[int, Field(description="sampling seed; trial i trains with seed+i")] = 0,
    final_epochs: Annotated[int, Field(ge=1, description="for the retrained best trial")] = 40,
    final_validation_fraction: Annotated[
        float, Field(gt=0, lt=1, description="held out from the retrain for early stopping only")
    ] = 0.05,
    handoff: Annotated[bool, Field(description="retrain the best trial through train_and_deploy")] = True,
    thresholds: GateThresholds | None = None,
    container: ContainerParams | None = None,
) -> dict:
    """Search LeNet-5 variants on Dask, then retrain the best through `train-and-deploy`.

    Parameters
    ----------
    budget
        Trials to run.
    strategy
        `grid` tries candidates in order, `random` samples without repeats.
    """
    settings = Settings()
    space, data = space or SearchSpace(), data or DataSpec()
    experiment_id = configure_mlflow(settings)
    trials = sample_trials(space, budget, strategy, seed, epochs)
    get_run_logger().info("%d trials (%s) on the task runner's Dask cluster", len(trials), strategy)
    with tracked_run(experiment_id, f"tune-{strategy}-{budget}", {"tune": "search"}) as parent_id:
        mlflow.log_params({"budget": budget, "strategy": strategy, "epochs": epochs, "seed": seed})
        mlflow.log_dict(space.model_dump(), "tune/space.json")
        started = time.perf_counter()
        futures = [
            trial_task.submit(i, trial, data, settings, experiment_id, parent_id) for i, trial in enumerate(trials)
        ]  # a trial failing twice fails the search: it has no verdict
        results = sorted((f.result() for f in futures), key=lambda r: r["best_val_accuracy"], reverse=True)
        seconds = time.perf_counter() - started
        record_search(results, seconds)
    best = results[0]
    summary = {"parent_run_id": parent_id, "search_seconds": seconds, "trials": results, "best": best}
    if handoff:
        # Trials share one validation split so they compare fairly; the retrain only needs enough
        # hold-out to stop early, and gives the rest to training.
        best_params = TrainParams.model_validate(best["params"]).model_copy(
            update={"epochs": final_epochs, "validation_fraction": final_validation_fraction}
        )
        summary["train_and_deploy"] = train_and_deploy(
            data=data,
            train=best_params,
            thresholds=thresholds,
            container=container,
            trigger=Trigger(kind="search", source_run=str(runtime.flow_run.id or "")),
        )
    return summary


def record_search(results: list[dict], seconds: float) -> None:
    """The verdict on the search's run and as a Prefect artifact with one row per trial."""
    best = results[0]
    mlflow.log_metrics(
        {"search_seconds": seconds, "trials": len(results), "best_val_accuracy": best["best_val_accuracy"]}
    )
    mlflow.log_dict(results, "tune/trials.json")  # type: ignore[arg-type]  # any JSON value
    mlflow.set_tag("best_trial_run_id", best["run_id"])
    rows = [
        {
            "trial": r["index"],
            "val acc": round(r["best_val_accuracy"], 4),
            "epochs": r["epochs_run"],
            "s": round(r["trial_seconds"]),
            "parameters": describe(TrainParams.model_validate(r["params"])),
        }
        for r in results
    ]
    create_table_artifact(rows, key="tune", description=f"Search: {len(results)} trials in {seconds:.0f} s")
    get_run_logger().info(
        "best trial %d: val accuracy %.4f (%s)", best["index"], best["best_val_accuracy"], best["params"]
    )


def describe(params: TrainParams) -> str:
    a = params.architecture
    return (
        f"conv {a.conv1_filters}/{a.conv2_filters} x{a.convs_per_block} {a.kernel_size}x{a.kernel_size} {a.padding}, "
        f"input padding {a.input_padding}, "
        f"dense {a.dense1}/{a.dense2}, dropout {a.dropout}, "
        f"bn {a.batch_norm}, {a.pooling} pool, lr {params.learning_rate}, batch {params.batch_size}, "
        f"augment {params.augment}"
    )


CLUSTER: dict[str, Any] = {}  # the command's --address / --workers


def _run_on_cluster(flow: Any, *args: Any, **kwargs: Any) -> int:
    return run_and_report(flow.with_options(task_runner=dask_runner(**CLUSTER)), *args, **kwargs)


app = flow_app(tune, "clothes-tune", run=_run_on_cluster)


@app.meta.default
def _cluster_options(
    *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
    address: Annotated[str | None, Parameter(help="existing Dask scheduler (MLOPS_DASK_ADDRESS)")] = None,
    workers: Annotated[int | None, Parameter(help="LocalCluster workers (MLOPS_DASK_WORKERS, default 2)")] = None,
    space_file: Annotated[
        ExistingJsonPath | None, Parameter(help="a SearchSpace as a JSON file, as --space takes it inline")
    ] = None,
) -> Any:
    """The Dask cluster is chosen before the flow starts: an option of the command, not of the flow."""
    CLUSTER.update(address=address, workers=workers)
    return app(flow_tokens(tokens, space_file))


def flow_tokens(tokens: Sequence[str], space_file: Path | None) -> list[str]:
    """The flow's own command line: what the cluster's options left, and the space file as `--space`."""
    return [*tokens, *(["--space", space_file.read_text()] if space_file else [])]


app.meta.usage = "Usage: clothes-tune [OPTIONS]"  # not the name of whatever process imported it
main = console_script(app.meta)

if __name__ == "__main__":
    sys.exit(main())
