"""Hyperparameter search: the search space, trial sampling and one trial's training as a nested MLflow run.

A trial runs in a Dask worker process (one thread): it loads the data itself (cheaper than shipping
arrays through the scheduler), trains on the train/validation split and reports validation metrics.
"""

from __future__ import annotations

import random
import time
from typing import Literal

import mlflow
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data.loader import load_dataset
from tasks.params import DataSpec, SearchSpace, TrainParams
from tasks.settings import Settings
from tasks.tracking import tracked_run
from tasks.training.train import run_callbacks, train_model


def sample_trials(
    space: SearchSpace, budget: int, strategy: Literal["random", "grid"], seed: int, epochs: int
) -> list[TrainParams]:
    """Deterministic: the same space, budget, strategy and seed give the same trials, each with its own seed."""
    candidates = space.candidates()
    chosen = (
        candidates[:budget]
        if strategy == "grid"
        else random.Random(seed).sample(candidates, min(budget, len(candidates)))
    )
    return [trial.model_copy(update={"epochs": epochs, "seed": seed + index}) for index, trial in enumerate(chosen)]


def _limit_tensorflow_threads(threads: int) -> None:
    """One Dask worker process per core: TensorFlow must not start a thread per core in each of them."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # already initialised by an earlier trial in this worker: the setting holds


@task(name="trial", task_run_name="trial-{index}", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def trial_task(
    index: int,
    params: TrainParams,
    data: DataSpec,
    settings: Settings,
    experiment_id: str,
    parent_run_id: str,
    tf_threads: int = 1,
) -> dict:
    """Train one candidate; its params, curves and validation metrics become a child run of the search."""
    _limit_tensorflow_threads(tf_threads)
    mlflow.set_tracking_uri(settings.tracking.resolved_tracking_uri())
    tags = {"trial": str(index)}
    with tracked_run(experiment_id, f"trial-{index}", tags, parent_run_id=parent_run_id) as run_id:
        mlflow.log_params({k: str(v) for k, v in params.flat().items()})
        started = time.perf_counter()
        dataset = load_dataset(data, settings)
        result = train_model(dataset, params, run_callbacks(params.epochs))
        best = result.best_epoch
        summary = {
            "best_val_accuracy": result.history["val_accuracy"][best],
            "best_val_loss": result.history["val_loss"][best],
            "epochs_run": result.epochs_run,
            "trial_seconds": time.perf_counter() - started,
            "parameters": result.model.count_params(),
        }
        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
    return {"index": index, "run_id": run_id, "params": params.model_dump(), **summary}
