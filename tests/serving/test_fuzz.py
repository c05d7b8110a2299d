"""Thousands of malformed requests: the server answers every one with a JSON 4xx, never a 5xx."""

from __future__ import annotations

import json
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PATHS = [
    "/models",
    "/models/clothes/v1",
    "/models/clothes/v2",
    "/models/clothes/latest",
    "/models/clothes/v0",
    "/models/other/v1",
    "/v1/models/clothes",
    "/v1/models/clothes:predict",
    "/v1/models/clothes/versions/1:predict",
    "/v1/models/clothes/versions/7",
    "/health/ready",
    "/metrics",
    "/openapi.json",
    "/models/clothes/v1/feedback",
    "/v2",
    "/v2/health/ready",
    "/v2/models/clothes",
    "/v2/models/clothes/infer",
    "/v2/models/clothes/versions/1/infer",
    "/v2/models/clothes/versions/9/ready",
    "/v2/models/other/infer",
]
CONTENT_TYPES = [
    "application/json",
    "image/png",
    "image/jpeg",
    "multipart/form-data",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/json; charset=latin-1",
    "",
    "image/gif",
    "application/octet-stream",
]
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=60,
)
nearly_images = st.builds(
    lambda rows, cols, value: [[value] * cols for _ in range(rows)],
    st.integers(0, 30),
    st.integers(0, 30),
    json_scalars,
)
oip_inputs = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["image", "x"]),
        "datatype": st.sampled_from(["UINT8", "FP32", "INT8", ""]),
        "shape": st.lists(st.integers(-1, 800), max_size=4) | json_values,
    },
    optional={
        "data": nearly_images | st.lists(json_scalars, max_size=800) | json_values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": json_scalars}),
    },
)
bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "image": nearly_images,
            "images": st.lists(nearly_images, max_size=3),
            "instances": st.lists(nearly_images, max_size=3),
        },
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"inputs": st.lists(oip_inputs, max_size=2)},
        optional={
            "outputs": st.lists(
                st.fixed_dictionaries({"name": st.text(max_size=14)}, optional={"parameters": json_values})
            ),
            "parameters": json_values,
            "id": json_scalars,
        },
    ).map(lambda v: json.dumps(v).encode()),
)
# Open Inference Protocol: a JSON header followed by binary tensors, split where this header says.
printable = st.characters(min_codepoint=33, max_codepoint=126)
header_lengths = st.none() | st.integers(-5, 3000).map(str) | st.text(printable, max_size=6)


@pytest.fixture(scope="module")
def client(client_with, tmp_path_factory):
    """Prediction log on, so the feedback route is fuzzed too."""
    return client_with(prediction_log_dir=tmp_path_factory.mktemp("prediction-log"))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    # Arbitrary text, percent-encoded as an HTTP client sends it.
    path=st.sampled_from(PATHS) | st.text(max_size=40).map(lambda t: "/" + quote(t.lstrip("/"), safe="/:")),
    content_type=st.sampled_from(CONTENT_TYPES),
    body=bodies,
    header_length=header_lengths,
)
def test_no_request_makes_a_5xx(client, method, path, content_type, body, header_length):
    headers = {"Inference-Header-Content-Length": header_length} if header_length is not None else {}
    response = client.open(path, method=method, data=body, content_type=content_type or None, headers=headers)
    assert response.status_code < 500, (response.status_code, response.data[:200])
    if response.status_code >= 400:
        assert response.is_json
        assert isinstance(response.json["error"], str)
        assert response.json["error"]


def test_server_still_classifies_after_the_fuzzing(client):
    answer = client.post("/models/clothes/v1", json={"image": np.full((28, 28), 30).tolist()})
    assert answer.status_code == 200
    assert len(answer.json["predictions"]) == 1
