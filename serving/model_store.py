"""Discover every exported model version under a root: ``<root>/<name>/<version>/``.

Each version directory holds ``metadata.json``, ``model.tflite`` (what this server runs) and the
TensorFlow SavedModel (``saved_model.pb``, for TensorFlow Serving users).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.runtime import TFLiteModel

log = logging.getLogger(__name__)
METADATA_FILE = "metadata.json"
RUNTIME_FILE = "model.tflite"


@dataclass
class ServedModel:
    name: str
    version: int
    path: Path
    metadata: dict
    runtime: TFLiteModel
    class_names: list[str] = field(default_factory=list)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.runtime.predict(batch)

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
        }


class ModelStore:
    def __init__(self, models: dict[str, dict[int, ServedModel]]) -> None:
        self.models = models
        self.ready = False

    @classmethod
    def discover(cls, root: Path) -> ModelStore:
        """Hidden directories are skipped: an export writes `.tmp-*` and renames it into place when done."""
        models: dict[str, dict[int, ServedModel]] = {}
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"model root {root} does not exist")
        for name_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for version_dir in sorted(p for p in name_dir.iterdir() if p.is_dir() and p.name.isdigit()):
                model = load_version(name_dir.name, version_dir)
                if model is not None:
                    models.setdefault(model.name, {})[model.version] = model
        if not models:
            raise FileNotFoundError(f"no models under {root} (expected <name>/<version>/{RUNTIME_FILE})")
        return cls(models)

    def get(self, name: str, version: int | None) -> ServedModel | None:
        """`version=None` means the latest (highest) version."""
        versions = self.models.get(name)
        if not versions:
            return None
        return versions[max(versions)] if version is None else versions.get(version)

    def warm_up(self) -> None:
        """One real prediction per model and batch shape before the server calls itself ready."""
        for versions in self.models.values():
            for model in versions.values():
                probabilities = model.predict(np.zeros((1, 28, 28, 1), np.float32))
                if probabilities.shape != (1, len(model.class_names)) or not np.isfinite(probabilities).all():
                    raise RuntimeError(f"{model.name} v{model.version} answered warm-up with {probabilities!r}")
        self.ready = True

    def listing(self) -> list[dict]:
        return [
            {"name": name, "versions": sorted(versions), "latest": max(versions)}
            for name, versions in sorted(self.models.items())
        ]


def load_version(name: str, version_dir: Path) -> ServedModel | None:
    metadata_path, runtime_path = version_dir / METADATA_FILE, version_dir / RUNTIME_FILE
    if not metadata_path.is_file() or not runtime_path.is_file():
        log.warning("skipping %s: needs %s and %s", version_dir, METADATA_FILE, RUNTIME_FILE)
        return None
    metadata = json.loads(metadata_path.read_text())
    return ServedModel(
        name=name,
        version=int(version_dir.name),
        path=version_dir,
        metadata=metadata,
        runtime=TFLiteModel(runtime_path),
        class_names=list(metadata["class_names"]),
    )
