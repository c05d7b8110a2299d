"""Export a registered model version into the serving layout, atomically.

``<model_root>/<name>/<version>/`` gets the TensorFlow SavedModel (``saved_model.pb`` + ``variables/``,
so TensorFlow Serving can serve the same directory), ``model.tflite`` (what our server runs: the
probabilities plus the out-of-distribution score, computed in its graph), ``ood.json`` (the flag's
threshold, from the training run), ``estimate.json`` (the accuracy estimate's threshold, likewise) and
``metadata.json``. Everything is written to a hidden temporary
directory and renamed into place, so a server scanning the root never sees a half-written version.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from serving.models.estimate import ESTIMATE_FILE
from serving.models.estimate import shipped as shipped_estimate
from serving.models.ood import OOD_FILE
from serving.models.store import METADATA_FILE, RUNTIME_FILE
from tasks.evaluation.estimate import EstimatorStats, load_estimator
from tasks.evaluation.ood import DETECTOR_FORMAT, OOD_ARTIFACT, current, detector_format, scoring_model, shipped
from tasks.params import ModelRef
from tasks.registry.policy import card_of
from tasks.tracking import load_model_version

log = logging.getLogger(__name__)
METRIC_KEYS = ("test_accuracy", "test_macro_f1", "test_macro_precision", "test_macro_recall")


def convert_to_tflite(model, ood: dict | None = None) -> bytes:
    """With the flag's statistics: the scoring model (the classifier plus the out-of-distribution
    evidence output), through a SavedModel of its own, so TF Serving's copy keeps the classifier's one
    output and its clients see no change."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="scoring-") as directory:
        (model if ood is None else scoring_model(model, ood)).export(directory, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(directory).convert()


def build_metadata(
    model, name: str, version: int, class_names: Sequence[str], run_id: str | None, metrics: dict[str, float]
) -> dict:
    return {
        "name": name,
        "version": int(version),
        "description": f"LeNet-5 clothes classifier ({len(class_names)} Fashion-MNIST classes)",
        "class_names": list(class_names),
        "input_shape": [28, 28],
        "model_input_shape": list(model.input_shape[1:]),
        "number_of_parameters": int(model.count_params()),
        "mlflow_run_id": run_id,
        "metrics": metrics,
        "runtime": RUNTIME_FILE,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def export_model(
    model, model_root: Path, metadata: dict, ood: dict | None = None, estimator: EstimatorStats | None = None
) -> Path:
    """Write the version directory atomically; an existing export of the same version is replaced whole.
    `ood`: the flag's statistics (versions trained before the flag have none and are served without it);
    `estimator`: the accuracy estimate's (`estimate.json`: the server counts answers likely right)."""
    parent = Path(model_root) / metadata["name"]
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / str(metadata["version"])
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{metadata['version']}-", dir=parent))
    try:
        model.export(str(staging / "saved_model"), format="tf_saved_model", verbose=False)
        for item in (staging / "saved_model").iterdir():  # TF Serving wants saved_model.pb at the top
            item.rename(staging / item.name)
        (staging / "saved_model").rmdir()
        (staging / RUNTIME_FILE).write_bytes(convert_to_tflite(model, ood))
        if ood is not None:
            (staging / OOD_FILE).write_text(json.dumps(shipped(ood)) + "\n")
        if estimator is not None:
            (staging / ESTIMATE_FILE).write_text(json.dumps(shipped_estimate(estimator.atc)) + "\n")
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        os.chmod(staging, 0o755)
        if final.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".old-{metadata['version']}-", dir=parent))
            final.rename(retired / "version")
            staging.rename(final)
            shutil.rmtree(retired)
        else:
            staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def export_registered_version(ref: ModelRef, model_root: Path) -> Path:
    """Export exactly what the registry holds (not an in-memory model), so exports are reproducible."""
    client = MlflowClient()
    model_version = client.get_model_version(ref.name, str(ref.version))
    model = load_model_version(ref)
    run = client.get_run(model_version.run_id) if model_version.run_id else None
    metrics = {k: run.data.metrics[k] for k in METRIC_KEYS if run and k in run.data.metrics}
    # The earliest versions of 0.1.x have no model card: their class names are a tag.
    tagged = model_version.tags.get("class_names")
    class_names = json.loads(tagged) if tagged else card_of(model_version)["data"]["class_names"]
    metadata = build_metadata(model, ref.name, ref.version, class_names, model_version.run_id, metrics)
    run_id = model_version.run_id
    return export_model(model, model_root, metadata, ood_statistics(run_id), load_estimator(run_id))


def ood_statistics(run_id: str | None) -> dict | None:
    """The flag's statistics stored on the training run, if they are of the format this code builds the
    graph from (`DETECTOR_FORMAT`); a version whose statistics are of another format is exported without
    the flag (its earlier export, if kept, still serves it)."""
    if not run_id or OOD_ARTIFACT not in {f.path for f in MlflowClient().list_artifacts(run_id, "ood")}:
        return None
    stats = mlflow.artifacts.load_dict(f"runs:/{run_id}/{OOD_ARTIFACT}")
    if not current(stats):
        log.warning(
            "run %s has out-of-distribution statistics of format %s, not %s: exported without the flag; "
            "retrain to get it back",
            run_id,
            detector_format(stats),
            DETECTOR_FORMAT,
        )
        return None
    return stats


@task(name="export-model", cache_policy=NO_CACHE)
def export_task(ref: ModelRef, model_root: Path) -> Path:
    path = export_registered_version(ref, model_root)
    get_run_logger().info("exported %s to %s", ref, path)
    return path
