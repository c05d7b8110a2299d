"""The data stage: load what a `DataSpec` names (cached by content) and validate it."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.data.dataset import Dataset
from tasks.data.sources import IMAGE_SUFFIXES, add_labelled_samples, load_fashion_mnist, load_image_folder
from tasks.data.validation import validate_data
from tasks.params import DataSpec
from tasks.settings import IDX_FILES, Settings


def load_dataset(spec: DataSpec, settings: Settings) -> Dataset:
    if spec.source == "image-folder":
        if spec.path is None:
            raise ValueError("the image-folder source needs a path")
        dataset = load_image_folder(spec.path)
    else:
        dataset = load_fashion_mnist(settings.fashion_mnist_dir(spec.path))
    dataset = dataset.subset(spec.train_limit, spec.test_limit)
    return add_labelled_samples(dataset, spec.extra_path) if spec.extra_path else dataset


def source_files(spec: DataSpec, settings: Settings) -> list[Path] | None:
    """The files a load reads, or None when they are not known up front (Keras' download)."""
    if spec.source == "image-folder":
        if spec.path is None:
            return None
        return sorted(p for p in Path(spec.path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    directory = settings.fashion_mnist_dir(spec.path)
    return None if directory is None else [directory / name for name in IDX_FILES.values()]


def data_cache_key(spec: DataSpec, settings: Settings) -> str | None:
    """Content digest of the source files plus the load parameters: new data or new limits, new key."""
    files = source_files(spec, settings)
    if not files or not all(f.is_file() for f in files) or spec.extra_path is not None:
        return None  # unknown sources (Keras download) and feedback samples are never cached
    sha = hashlib.sha256(spec.model_dump_json().encode())
    for path in files:
        sha.update(str(path.name).encode())
        with path.open("rb") as handle:
            sha.update(hashlib.file_digest(handle, "sha256").digest())
    return f"fashion-data-{sha.hexdigest()}"


@task(
    name="load-data",
    cache_key_fn=lambda _context, parameters: data_cache_key(parameters["spec"], parameters["settings"]),
    cache_expiration=timedelta(days=30),
    persist_result=True,
)
def load_data_task(spec: DataSpec, settings: Settings) -> Dataset:
    dataset = load_dataset(spec, settings)
    get_run_logger().info(
        "loaded %d train / %d test images (%s) from %s",
        len(dataset.y_train),
        len(dataset.y_test),
        dataset.origin,
        dataset.source,
    )
    return dataset


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data_task(dataset: Dataset) -> dict[str, dict[str, int]]:
    counts = validate_data(dataset)
    get_run_logger().info("data is valid; digest %s", dataset.digest[:12])
    return counts
