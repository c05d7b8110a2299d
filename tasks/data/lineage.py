"""What a run records about its data: where it came from, its content digest and class balance."""

from __future__ import annotations

import warnings

import mlflow
from mlflow.data.numpy_dataset import from_numpy
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data.dataset import Dataset


def log_dataset(dataset: Dataset, counts: dict[str, dict[str, int]]) -> None:
    """Record on the active run where the data came from, its content digest and class balance."""
    for split, x, y in (("train", dataset.x_train, dataset.y_train), ("test", dataset.x_test, dataset.y_test)):
        # Only the digest identifies the data; a one-image profile keeps the run small.
        with warnings.catch_warnings():  # MLflow registers local paths twice and warns about it
            warnings.simplefilter("ignore", UserWarning)
            ds = from_numpy(
                x[:1], targets=y[:1], source=dataset.source, name=f"fashion-mnist-{split}", digest=dataset.digest[:16]
            )
        mlflow.log_input(ds, context=split)
    mlflow.log_params({"data.n_train": len(dataset.y_train), "data.n_test": len(dataset.y_test)})
    mlflow.set_tags({"data.digest": dataset.digest, "data.source": f"{dataset.origin}:{dataset.source}"})
    mlflow.log_dict(counts, "data/class_counts.json")


@task(name="log-dataset", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def log_dataset_task(dataset: Dataset, counts: dict[str, dict[str, int]]) -> None:
    log_dataset(dataset, counts)
