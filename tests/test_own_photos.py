"""Train on your own photos (docs/own-photos.md): the pipeline on `examples/own-photos/` (class folders of
PNG/JPEG files; train/ and test/ splits), and the exported model served with the folders' class names."""

from __future__ import annotations

import pytest

from flows.pipeline import train_and_deploy
from serving import create_app
from tasks.params import ContainerParams, DataSpec, GateThresholds, TrainParams
from tests.conftest import REPO

pytestmark = pytest.mark.slow
OWN_PHOTOS = REPO / "examples" / "own-photos"
# 100 training images cannot reach the Fashion-MNIST gates: this test is about the mechanics.
NO_GATES = GateThresholds(min_accuracy=0, min_class_recall=0, max_regression=1, min_slice_accuracy={},
                          max_slice_regression=1, min_ood_auroc=0, min_ood_detection=0, max_ood_flagged=1)  # fmt: skip


def test_a_model_trained_on_a_folder_of_photos_serves_its_folder_names(
    prefect_harness, mlflow_store, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLOPS_MODEL_ROOT", str(tmp_path / "models"))
    summary = train_and_deploy(
        data=DataSpec(source="image-folder", path=OWN_PHOTOS, holdout_size=10),
        train=TrainParams(epochs=3, batch_size=16),
        thresholds=NO_GATES,
        model_name="own-clothes",
        container=ContainerParams(enabled=False),
    )
    classes = sorted(p.name for p in (OWN_PHOTOS / "train").iterdir())
    assert summary["model_name"] == "own-clothes" and summary["export_dir"].endswith("own-clothes/1")

    client = create_app(tmp_path / "models").test_client()
    assert client.get("/models/own-clothes/v1").json["classes"] == classes
    photo = next((OWN_PHOTOS / "test" / "sneaker").iterdir())
    answer = client.post("/models/own-clothes/latest", data=photo.read_bytes(), content_type="image/jpeg").json
    (prediction,) = answer["predictions"]
    assert prediction["label"] in classes and len(answer["result"][0]) == len(classes)
