from __future__ import annotations

import json

import numpy as np
import pytest

from serving.models.runtime import TFLiteModel
from serving.models.store import ModelStore
from serving.preprocessing import to_model_input
from tasks.data.dataset import FASHION_MNIST_CLASSES
from tasks.data.sources import load_fashion_mnist
from tasks.release import export as export_module
from tasks.release.export import build_metadata, export_model


def test_export_writes_tf_serving_layout_and_metadata(model_root):
    version_dir = model_root / "clothes" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables").is_dir()
    assert (version_dir / "model.tflite").is_file()
    metadata = json.loads((version_dir / "metadata.json").read_text())
    assert metadata["number_of_parameters"] == 61_706
    assert metadata["class_names"] == list(FASHION_MNIST_CLASSES)
    assert metadata["version"] == 1
    assert not [p for p in (model_root / "clothes").iterdir() if p.name.startswith(".")]


def test_saved_model_serves_the_same_predictions(model_root, trained_model):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_root / "clothes" / "1"))
    x = to_model_input(np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype(np.uint8))
    served = loaded.signatures["serving_default"](tf.constant(x))
    assert np.allclose(next(iter(served.values())).numpy(), trained_model(x).numpy(), atol=1e-5)


def test_litert_runtime_matches_keras_on_the_whole_test_set(model_root, trained_model, fashion_dir):
    x = to_model_input(load_fashion_mnist(fashion_dir).x_test)
    expected = trained_model.predict(x, batch_size=2000, verbose=0)
    runtime = TFLiteModel(model_root / "clothes" / "1" / "model.tflite")
    got = np.concatenate([runtime.predict(x[i : i + 1000])["probabilities"] for i in range(0, len(x), 1000)])
    assert np.abs(got - expected).max() <= 1e-5
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    first = runtime.predict(x[:1])["probabilities"]  # batch size changes back and forth
    assert np.allclose(first, expected[:1], atol=1e-5)


def test_failed_export_leaves_nothing_behind(tmp_path, trained_model, monkeypatch):
    def broken(*_):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export_module, "convert_to_tflite", broken)
    metadata = build_metadata(trained_model, "clothes", 7, FASHION_MNIST_CLASSES, None, {})
    with pytest.raises(RuntimeError, match="converter crashed"):
        export_model(trained_model, tmp_path, metadata)
    assert list((tmp_path / "clothes").iterdir()) == []


def test_re_export_replaces_a_version_whole(tmp_path, trained_model):
    metadata = build_metadata(trained_model, "clothes", 3, FASHION_MNIST_CLASSES, "first", {})
    export_model(trained_model, tmp_path, metadata)
    (tmp_path / "clothes" / "3" / "stale-file").write_text("x")
    export_model(trained_model, tmp_path, {**metadata, "mlflow_run_id": "second"})
    version_dir = tmp_path / "clothes" / "3"
    assert not (version_dir / "stale-file").exists()
    assert json.loads((version_dir / "metadata.json").read_text())["mlflow_run_id"] == "second"
    assert sorted(p.name for p in (tmp_path / "clothes").iterdir()) == ["3"]


def test_store_ignores_half_written_versions(model_root, tmp_path):
    import shutil

    shutil.copytree(model_root, tmp_path / "root")
    (tmp_path / "root" / "clothes" / ".tmp-9-abc").mkdir()
    (tmp_path / "root" / "clothes" / "8").mkdir()  # no files yet
    store = ModelStore.discover(tmp_path / "root")
    assert sorted(store.models["clothes"]) == [1, 2]
