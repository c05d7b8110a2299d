"""Hyperparameter search: the search space, trial sampling and one trial's training as a nested MLflow run.

A trial runs in a Dask worker process (one thread): it loads the data itself (cheaper than shipping
arrays through the scheduler), trains on the train/validation split and reports validation metrics.
"""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path
from typing import Literal

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks.data import DataSpec, load_dataset
from tasks.run_owner import end_status, owner_tags
from tasks.train import Architecture, TrainParams, epoch_reporter, flat_params, train_model


class SearchSpace(BaseModel):
    """Every combination is a candidate; `grid` tries them in order, `random` samples without repeats."""

    model_config = ConfigDict(extra="forbid")

    conv1_filters: list[int] = Field(default=[6, 16, 32])
    conv2_filters: list[int] = Field(default=[16, 32, 64])
    dense1: list[int] = Field(default=[120, 256])
    dense2: list[int] = Field(default=[84, 128])
    dropout: list[float] = Field(default=[0.0, 0.25])
    batch_norm: list[bool] = Field(default=[False, True])
    pooling: list[Literal["avg", "max"]] = Field(default=["avg", "max"])
    learning_rate: list[float] = Field(default=[1e-3, 2e-3])
    batch_size: list[int] = Field(default=[64, 128])
    augment: list[bool] = Field(default=[False, True])
    lr_patience: list[int] = Field(default=[2], description="the wider variants need a calmer schedule than LeNet-5")
    patience: list[int] = Field(default=[6], description="early stopping; leave room for two learning-rate drops")

    def candidates(self) -> list[TrainParams]:
        keys = list(type(self).model_fields)
        candidates = []
        for combo in itertools.product(*(getattr(self, key) for key in keys)):
            values = dict(zip(keys, combo, strict=True))
            architecture = Architecture(**{key: values.pop(key) for key in Architecture.model_fields})
            candidates.append(TrainParams(architecture=architecture, **values))
        return candidates


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
    default_dir: str | None,
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    tf_threads: int = 1,
) -> dict:
    """Train one candidate; its params, curves and validation metrics become a child run of the search."""
    _limit_tensorflow_threads(tf_threads)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    run = client.create_run(
        experiment_id, run_name=f"trial-{index}",
        tags={"mlflow.parentRunId": parent_run_id, "trial": str(index), **owner_tags()},
    )  # fmt: skip
    run_id = run.info.run_id
    try:
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in flat_params(params).items()])
        started = time.perf_counter()
        dataset = load_dataset(data, Path(default_dir) if default_dir else None)
        result = train_model(dataset, params, epoch_reporter(client, run_id, params.epochs))
        seconds = time.perf_counter() - started
        now = int(time.time() * 1000)
        best = result.best_epoch
        summary = {
            "best_val_accuracy": result.history["val_accuracy"][best],
            "best_val_loss": result.history["val_loss"][best],
            "epochs_run": result.epochs_run,
            "trial_seconds": seconds,
            "parameters": result.model.count_params(),
        }
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()])
    except BaseException as exc:
        client.set_terminated(run_id, end_status(exc))
        raise
    client.set_terminated(run_id, "FINISHED")
    return {"index": index, "run_id": run_id, "params": params.model_dump(), **summary}
