"""Discover every exported model version under a root: ``<root>/<name>/<version>/``.

Each version directory holds ``metadata.json``, ``model.tflite`` (what this server runs), ``ood.json``
(the out-of-distribution flag's threshold; versions exported before the flag have none), ``estimate.json``
(the accuracy estimate's threshold, `serving.models.estimate`; since 0.4.0) and the TensorFlow
SavedModel (``saved_model.pb``, for TensorFlow Serving users).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving import metrics
from serving.models.estimate import ESTIMATE_FILE, AccuracyEstimate
from serving.models.ood import OOD_FILE, OodFlag
from serving.models.runtime import TFLiteModel

log = logging.getLogger(__name__)
METADATA_FILE = "metadata.json"
RUNTIME_FILE = "model.tflite"
MODEL_INPUT_SHAPE = [28, 28, 1]  # what `serving.preprocessing` produces, whatever the architecture


@dataclass
class ServedModel:
    name: str
    version: int
    path: Path
    metadata: dict
    runtime: TFLiteModel
    class_names: list[str] = field(default_factory=list)
    ood: OodFlag | None = None
    estimate: AccuracyEstimate | None = None  # versions exported before 0.4.0 have none

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, classes) and out-of-distribution scores (N,), None without the flag."""
        outputs = self.runtime.predict(batch)
        return outputs["probabilities"], None if self.ood is None else self.ood.scores(outputs)

    def info(self) -> dict:
        """The course's fields first (version, name, description, number_of_parameters), then the rest."""
        meta = self.metadata
        return {
            "name": self.name,
            "version": self.version,
            "description": meta.get("description", ""),
            "number_of_parameters": meta.get("number_of_parameters"),
            "classes": self.class_names,
            "input_shape": meta.get("input_shape", [28, 28]),
            "input": "28x28 grayscale pixels 0-255 (JSON 'image'/'images') or a PNG/JPEG file",
            "metrics": meta.get("metrics", {}),
            "mlflow_run_id": meta.get("mlflow_run_id"),
            "created": meta.get("created"),
            "out_of_distribution": None if self.ood is None else {
                "threshold": self.ood.threshold,
                "meaning": "ood_score: the share of held-out garments that look more usual than this input "
                "(0-1); in_distribution is false above the threshold",
            },
        }


@dataclass
class FailedVersion:
    name: str
    version: int
    path: Path
    error: str


class ModelStore:
    """Every good version under the root. A broken one (unreadable metadata, a model LiteRT cannot run)
    is skipped with an error naming its directory, listed under `failed` and counted in /metrics, so
    one bad export never takes the other versions down."""

    def __init__(self, models: dict[str, dict[int, ServedModel]], failed: list[FailedVersion] | None = None) -> None:
        self.models = models
        self.failed = failed or []
        self.names = sorted({*models, *(f.name for f in self.failed)})
        self.ready = False

    @classmethod
    def discover(cls, root: Path) -> ModelStore:
        """Hidden directories are skipped: an export writes `.tmp-*` and renames it into place when done."""
        models: dict[str, dict[int, ServedModel]] = {}
        failed: list[FailedVersion] = []
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"model root {root} does not exist")
        for name_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for version_dir in sorted(p for p in name_dir.iterdir() if p.is_dir() and p.name.isdigit()):
                try:
                    model = load_version(name_dir.name, version_dir)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    failed.append(_failure(name_dir.name, version_dir, exc))
                    continue
                if model is not None:
                    models.setdefault(model.name, {})[model.version] = model
        store = cls(models, failed)
        if not models:
            raise FileNotFoundError(
                f"no servable models under {root} (expected <name>/<version>/{RUNTIME_FILE}){store.broken()}"
            )
        return store

    def broken(self) -> str:
        return "".join(f"; broken: {f.path}: {f.error}" for f in self.failed)

    def get(self, name: str, version: int | None) -> ServedModel | None:
        """`version=None` means the latest (highest) version."""
        versions = self.models.get(name)
        if not versions:
            return None
        return versions[max(versions)] if version is None else versions.get(version)

    def warm_up(self) -> None:
        """One real prediction per version before the server calls itself ready; a version whose model
        LiteRT cannot load or run is moved to `failed`. Ready when every model has a working version."""
        for name, versions in list(self.models.items()):
            for version, model in sorted(versions.items()):
                try:
                    probabilities, scores = model.predict(np.zeros((1, 28, 28, 1), np.float32))
                    if probabilities.shape != (1, len(model.class_names)) or not np.isfinite(probabilities).all():
                        raise ValueError(f"warm-up answered {probabilities!r}")
                    if scores is not None and (scores.shape != (1,) or not np.isfinite(scores).all()):
                        raise ValueError(f"out-of-distribution flag answered {scores!r}")
                except Exception as exc:  # LiteRT raises RuntimeError/ValueError for corrupt flatbuffers
                    self.failed.append(_failure(name, model.path, exc))
                    del versions[version]
            if not versions:
                del self.models[name]
        for failure in self.failed:
            metrics.MODELS_FAILED.labels(failure.name, str(failure.version)).set(1)
        if not self.models:  # nothing to serve: fail the boot loudly rather than sit unready
            raise RuntimeError(f"no model version could be loaded{self.broken()}")
        self.ready = all(name in self.models for name in self.names)

    def listing(self) -> list[dict]:
        failed: dict[str, list[dict]] = {}
        for f in self.failed:
            failed.setdefault(f.name, []).append({"version": f.version, "error": f.error})
        return [
            {
                "name": name,
                "versions": sorted(self.models.get(name, {})),
                "latest": max(self.models[name]) if name in self.models else None,
                **({"failed": failed[name]} if name in failed else {}),
            }
            for name in self.names
        ]


def _failure(name: str, version_dir: Path, exc: Exception) -> FailedVersion:
    log.error("skipping model version %s: %s: %s", version_dir, type(exc).__name__, exc)
    return FailedVersion(name, int(version_dir.name), version_dir, f"{type(exc).__name__}: {exc}")


def load_version(name: str, version_dir: Path) -> ServedModel | None:
    metadata_path, runtime_path = version_dir / METADATA_FILE, version_dir / RUNTIME_FILE
    ood_path, estimate_path = version_dir / OOD_FILE, version_dir / ESTIMATE_FILE
    if not metadata_path.is_file() or not runtime_path.is_file():
        log.warning("skipping %s: needs %s and %s", version_dir, METADATA_FILE, RUNTIME_FILE)
        return None
    metadata = json.loads(metadata_path.read_text())
    if not isinstance(metadata, dict):
        raise ValueError(f"{METADATA_FILE} is not a JSON object")
    wanted = metadata.get("model_input_shape", MODEL_INPUT_SHAPE)
    if wanted != MODEL_INPUT_SHAPE:  # any architecture works as long as it reads what the conversion makes
        raise ValueError(f"the model reads {wanted}; this server feeds it {MODEL_INPUT_SHAPE} (28x28 grayscale)")
    class_names = metadata["class_names"]
    if not isinstance(class_names, list) or not class_names or not all(isinstance(c, str) for c in class_names):
        raise ValueError("class_names must be a non-empty list of strings")
    return ServedModel(
        name=name,
        version=int(version_dir.name),
        path=version_dir,
        metadata=metadata,
        runtime=TFLiteModel(runtime_path),
        class_names=list(class_names),
        ood=OodFlag.load(ood_path) if ood_path.is_file() else None,
        estimate=AccuracyEstimate.load(estimate_path) if estimate_path.is_file() else None,
    )
