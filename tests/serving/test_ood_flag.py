"""The out-of-distribution flag as clients see it: in the course API's answers, as extra outputs of the TF
Serving and OIP answers, and counted in /metrics; a version exported without it answers without it."""

from __future__ import annotations

import numpy as np
import pytest

LATEST = "/models/clothes/v2"  # exported with the flag; v1 without it


@pytest.fixture(scope="module")
def test_split(fashion_mnist):
    return fashion_mnist.x_test[:2], fashion_mnist.y_test[:2]


def test_answers_carry_the_flag(client, test_split):
    garment = test_split[0][0].tolist()
    noise = np.random.default_rng(0).integers(0, 256, (28, 28)).tolist()
    answer = client.post(LATEST, json={"images": [garment, noise]}).get_json()
    first, second = answer["predictions"]
    assert 0 <= first["ood_score"] <= 1
    assert first["in_distribution"] is True
    assert second["in_distribution"] is False
    assert second["ood_score"] > first["ood_score"]
    legacy = client.post("/models/clothes/v1", json={"image": garment}).get_json()["predictions"][0]
    assert legacy["ood_score"] is None
    assert legacy["in_distribution"] is None
    assert client.get(LATEST).get_json()["out_of_distribution"]["threshold"] > 0.5
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'clothes_ood_predictions_total{model="clothes",version="2"}' in metrics


def test_tf_serving_and_oip_carry_it_as_extra_outputs(client, test_split):
    instances = (test_split[0][:2] / 255).tolist()
    tfs = client.post("/v1/models/clothes/versions/2:predict", json={"instances": instances}).get_json()
    assert len(tfs["predictions"]) == 2
    assert len(tfs["ood_score"]) == 2
    assert tfs["in_distribution"] == [True, True]
    body = {
        "inputs": [
            {"name": "image", "datatype": "UINT8", "shape": [2, 28, 28], "data": test_split[0][:2].ravel().tolist()}
        ]
    }
    outputs = {
        o["name"]: o for o in client.post("/v2/models/clothes/versions/2/infer", json=body).get_json()["outputs"]
    }
    assert set(outputs) == {"probabilities", "class_id", "label", "ood_score", "in_distribution"}
    assert outputs["in_distribution"]["datatype"] == "BOOL"
    assert outputs["in_distribution"]["data"] == [True, True]
    only = client.post("/v2/models/clothes/versions/2/infer", json={**body, "outputs": [{"name": "probabilities"}]})
    assert [o["name"] for o in only.get_json()["outputs"]] == ["probabilities"]
    legacy = client.post("/v2/models/clothes/versions/1/infer", json={**body, "outputs": [{"name": "ood_score"}]})
    assert legacy.status_code == 400
    assert "ood_score" in legacy.get_json()["error"]
    metadata = client.get("/v2/models/clothes/versions/2").get_json()
    assert {"name": "ood_score", "datatype": "FP32", "shape": [-1]} in metadata["outputs"]
