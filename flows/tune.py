"""`tune`: fan LeNet-5 variants out over Dask (prefect-dask), pick the best by validation accuracy, and
hand it to `train_and_deploy`, which retrains it and runs the same gates, registry and container stages."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

from mlflow import MlflowClient
from mlflow.entities import Param
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect_dask import DaskTaskRunner
from pydantic import Field

from flows.cli import run_and_report
from flows.pipeline import train_and_deploy
from tasks.data import DataSpec
from tasks.gates import GateThresholds
from tasks.registry import configure_mlflow
from tasks.release import ContainerParams
from tasks.run_owner import end_status, owner_tags
from tasks.settings import Settings
from tasks.train import TrainParams
from tasks.tuning import SearchSpace, sample_trials, trial_task


def dask_runner(address: str | None = None, workers: int | None = None) -> DaskTaskRunner:
    """An existing scheduler, or a LocalCluster of single-threaded worker processes (TensorFlow is not
    fork- or thread-friendly enough to share a process between trials)."""
    settings = Settings()
    address = address or settings.dask_address
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers or settings.dask_workers, "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None},
    )  # fmt: skip


@flow(name="tune", task_runner=dask_runner())
def tune(
    space: SearchSpace | None = None,
    data: DataSpec | None = None,
    budget: Annotated[int, Field(ge=1)] = 8,
    strategy: Literal["random", "grid"] = "random",
    epochs: Annotated[int, Field(ge=1, description="per trial, with early stopping")] = 20,
    seed: int = 0,
    final_epochs: Annotated[int, Field(ge=1, description="for the retrained best trial")] = 40,
    final_validation_fraction: Annotated[
        float, Field(gt=0, lt=1, description="held out from the retrain for early stopping only")
    ] = 0.05,
    handoff: Annotated[bool, Field(description="retrain the best trial through train_and_deploy")] = True,
    thresholds: GateThresholds | None = None,
    container: ContainerParams | None = None,
) -> dict:
    settings = Settings()
    logger = get_run_logger()
    space, data = space or SearchSpace(), data or DataSpec()
    experiment_id = configure_mlflow(settings)
    client = MlflowClient()
    parent = client.create_run(
        experiment_id, run_name=f"tune-{strategy}-{budget}", tags={"tune": "search", **owner_tags()}
    )
    parent_id = parent.info.run_id
    search = {"budget": budget, "strategy": strategy, "epochs": epochs, "seed": seed}
    client.log_batch(parent_id, params=[Param(key, str(value)) for key, value in search.items()])
    client.log_dict(parent_id, space.model_dump(), "tune/space.json")
    trials = sample_trials(space, budget, strategy, seed, epochs)
    logger.info("%d trials (%s) on the task runner's Dask cluster", len(trials), strategy)
    started = time.perf_counter()
    default_dir = str(settings.data_dir) if settings.data_dir else None
    futures = [
        trial_task.submit(i, trial, data, default_dir, settings.resolved_tracking_uri(), experiment_id, parent_id)
        for i, trial in enumerate(trials)
    ]
    try:
        results = sorted((f.result() for f in futures), key=lambda r: r["best_val_accuracy"], reverse=True)
    except BaseException as exc:
        client.set_terminated(parent_id, end_status(exc))  # a trial failed twice: the search has no verdict
        raise
    seconds = time.perf_counter() - started
    best = results[0]
    # Trials share one validation split so they compare fairly; the retrain only needs enough hold-out to
    # stop early, and gives the rest to training.
    best_params = TrainParams.model_validate(best["params"]).model_copy(
        update={"epochs": final_epochs, "validation_fraction": final_validation_fraction}
    )
    for key, value in {"search_seconds": seconds, "trials": len(results),
                       "best_val_accuracy": best["best_val_accuracy"]}.items():  # fmt: skip
        client.log_metric(parent_id, key, value)
    client.log_dict(parent_id, results, "tune/trials.json")
    client.set_tag(parent_id, "best_trial_run_id", best["run_id"])
    client.set_terminated(parent_id, "FINISHED")
    rows = "\n".join(
        f"| {r['index']} | {r['best_val_accuracy']:.4f} | {r['epochs_run']} | {r['trial_seconds']:.0f} | "
        f"{describe(TrainParams.model_validate(r['params']))} |"
        for r in results
    )
    create_markdown_artifact(
        key="tune",
        markdown=f"## Search: {len(results)} trials in {seconds:.0f} s\n\n"
        f"| trial | val acc | epochs | s | parameters |\n|---|---|---|---|---|\n{rows}\n",
    )
    logger.info("best trial %d: val accuracy %.4f (%s)", best["index"], best["best_val_accuracy"], best["params"])
    summary = {"parent_run_id": parent_id, "search_seconds": seconds, "trials": results, "best": best}
    if handoff:
        summary["train_and_deploy"] = train_and_deploy(
            data=data, train=best_params, thresholds=thresholds, container=container,
        )  # fmt: skip
    return summary


def describe(params: TrainParams) -> str:
    a = params.architecture
    return (
        f"conv {a.conv1_filters}/{a.conv2_filters}, dense {a.dense1}/{a.dense2}, dropout {a.dropout}, "
        f"bn {a.batch_norm}, {a.pooling} pool, lr {params.learning_rate}, batch {params.batch_size}, "
        f"augment {params.augment}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clothes-tune", description=__doc__)
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--strategy", choices=["random", "grid"], default="random")
    parser.add_argument("--epochs", type=int, default=20, help="per trial (early stopping)")
    parser.add_argument("--train-limit", type=int, help="train trials on the first N images only")
    parser.add_argument("--workers", type=int, help="LocalCluster workers (MLOPS_DASK_WORKERS, default 2)")
    parser.add_argument("--address", help="existing Dask scheduler (MLOPS_DASK_ADDRESS)")
    parser.add_argument("--final-epochs", type=int, default=40, help="for the retrained best trial")
    parser.add_argument(
        "--final-validation-fraction", type=float, default=0.05, help="held out from the retrain for early stopping"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed; trial i trains with seed+i")
    parser.add_argument(
        "--space",
        type=search_space,
        default=SearchSpace(),
        help="SearchSpace as JSON, or a path to a JSON file; missing fields keep their defaults",
    )
    parser.add_argument("--no-handoff", action="store_true", help="search only")
    args = parser.parse_args(argv)
    flow_with_runner = tune.with_options(task_runner=dask_runner(args.address, args.workers))
    return run_and_report(
        flow_with_runner, space=args.space, budget=args.budget, strategy=args.strategy, epochs=args.epochs,
        seed=args.seed, final_epochs=args.final_epochs, final_validation_fraction=args.final_validation_fraction,
        data=DataSpec(train_limit=args.train_limit), handoff=not args.no_handoff,
    )  # fmt: skip


def search_space(text: str) -> SearchSpace:
    """argparse type: inline JSON, or a file holding it (e.g. a space kept next to the project)."""
    try:
        return SearchSpace.model_validate_json(text if text.lstrip().startswith("{") else Path(text).read_text())
    except (OSError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"invalid search space: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
