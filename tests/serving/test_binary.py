"""The batch paths without JSON pixel arrays: the Open Inference Protocol v2 (JSON and binary tensors)
and raw application/octet-stream pixels on the course's route, through Flask's test client. The real
`tritonclient` against the real server is in test_serving_gunicorn.py."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from serving.protocols.oip import HEADER_LENGTH, bytes_tensor


@pytest.fixture(scope="module")
def client(client_with):
    return client_with(max_batch=64)


@pytest.fixture(scope="module")
def images(small_dataset) -> tuple[np.ndarray, np.ndarray]:
    return small_dataset.x_test[:32], small_dataset.y_test[:32]


def course_answer(client, images: np.ndarray) -> dict:
    response = client.post("/models/clothes/v1", json={"images": images.tolist()})
    assert response.status_code == 200
    return response.json


def binary_request(tensors: bytes, header: dict) -> tuple[bytes, dict]:
    head = orjson.dumps(header)
    return head + tensors, {HEADER_LENGTH: str(len(head))}


def split_binary(response) -> tuple[dict, bytes]:
    size = int(response.headers[HEADER_LENGTH])
    body = response.get_data()
    return orjson.loads(body[:size]), body[size:]


def test_octet_stream_pixels_answer_like_json(client, images):
    x, _ = images
    response = client.post("/models/clothes/v1", data=x.tobytes(), content_type="application/octet-stream")
    assert response.status_code == 200
    expected = course_answer(client, x)
    assert np.allclose(response.json["result"], expected["result"], atol=1e-6)
    assert [p["label"] for p in response.json["predictions"]] == [p["label"] for p in expected["predictions"]]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [(b"\x00" * 783, 400, "N x 784 bytes"), (b"", 400, "got 0 bytes"), (b"\x00" * 784 * 65, 413, "at most 64")],
)
def test_octet_stream_errors(client, body, status, message):
    response = client.post("/models/clothes/v1", data=body, content_type="application/octet-stream")
    assert response.status_code == status
    assert message in response.json["error"]


def test_oip_metadata_health_and_readiness(client):
    assert client.get("/v2/health/live").json == {"live": True}
    assert client.get("/v2/health/ready").json == {"ready": True}
    assert client.get("/v2").json["extensions"] == ["binary_tensor_data"]
    meta = client.get("/v2/models/clothes").json
    assert meta["name"] == "clothes"
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 28, 28]}]
    plain = ["probabilities", "class_id", "label"]
    assert [o["name"] for o in meta["outputs"]] == [*plain, "ood_score", "in_distribution"]
    legacy = client.get("/v2/models/clothes/versions/1").json  # exported before the out-of-distribution flag
    assert legacy["name"] == "clothes"
    assert [o["name"] for o in legacy["outputs"]] == plain
    assert client.get("/v2/models/clothes/versions/1/ready").json == {"name": "clothes", "ready": True}
    assert client.get("/v2/models/clothes/versions/9").status_code == 404
    assert client.get("/v2/models/shoes/ready").json == {"error": "unknown model 'shoes'"}


@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
@pytest.mark.parametrize("shape_tail", [[28, 28], [28, 28, 1], [784]])
def test_oip_json_tensors_answer_like_the_course_route(client, images, datatype, shape_tail):
    x, _ = images
    data = x.astype(np.float32 if datatype == "FP32" else np.uint8)
    request = {
        "id": "req-7",
        "inputs": [
            {"name": "image", "datatype": datatype, "shape": [len(x), *shape_tail], "data": data.ravel().tolist()}
        ],
    }
    response = client.post("/v2/models/clothes/versions/1/infer", json=request)
    assert response.status_code == 200, response.json
    answer = response.json
    assert answer["model_name"] == "clothes"
    assert answer["model_version"] == "1"
    assert answer["id"] == "req-7"
    outputs = {o["name"]: o for o in answer["outputs"]}
    expected = course_answer(client, x)
    assert outputs["probabilities"]["shape"] == [len(x), 10]
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert np.allclose(np.reshape(outputs["probabilities"]["data"], (len(x), 10)), expected["result"], atol=1e-6)
    assert outputs["label"]["data"] == [p["label"] for p in expected["predictions"]]
    assert outputs["class_id"]["data"] == [p["class_id"] for p in expected["predictions"]]


def test_oip_nested_json_data(client, images):
    x, _ = images
    request = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [2, 28, 28], "data": x[:2].tolist()}]}
    outputs = {o["name"]: o for o in client.post("/v2/models/clothes/infer", json=request).json["outputs"]}
    assert outputs["class_id"]["data"] == [p["class_id"] for p in course_answer(client, x[:2])["predictions"]]


@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
def test_oip_binary_tensors_in_and_out(client, images, datatype):
    x, _ = images
    data = x.astype("<f4" if datatype == "FP32" else np.uint8)
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": datatype,
                "shape": list(x.shape),
                "parameters": {"binary_data_size": data.nbytes},
            }
        ],
        "outputs": [
            {"name": "label", "parameters": {"binary_data": True}},
            {"name": "probabilities", "parameters": {"binary_data": True}},
            {"name": "class_id"},
        ],
    }
    body, headers = binary_request(data.tobytes(), header)
    response = client.post("/v2/models/clothes/infer", data=body, headers=headers)
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "application/octet-stream"
    answer, tensors = split_binary(response)
    label, probabilities, class_id = answer["outputs"]
    expected = course_answer(client, x)
    labels = [p["label"] for p in expected["predictions"]]
    assert tensors[: label["parameters"]["binary_data_size"]] == bytes_tensor(labels)
    rest = tensors[label["parameters"]["binary_data_size"] :]
    assert len(rest) == probabilities["parameters"]["binary_data_size"] == len(x) * 10 * 4
    assert np.allclose(np.frombuffer(rest, "<f4").reshape(len(x), 10), expected["result"], atol=1e-6)
    assert class_id["data"] == [p["class_id"] for p in expected["predictions"]]
    assert "parameters" not in class_id


def test_oip_binary_data_output_for_every_output(client, images):
    x, _ = images
    header = {
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": [4, 784], "data": x[:4].ravel().tolist()}],
        "parameters": {"binary_data_output": True},
    }
    answer, tensors = split_binary(client.post("/v2/models/clothes/infer", json=header))
    sizes = [o["parameters"]["binary_data_size"] for o in answer["outputs"]]
    assert sizes[:2] == [4 * 10 * 4, 4 * 8]
    assert sum(sizes) == len(tensors)


def oip_error(client, body: bytes, headers: dict | None = None, content_type: str | None = None):
    response = client.post("/v2/models/clothes/infer", data=body, headers=headers or {}, content_type=content_type)
    return response.status_code, response.json["error"]


def image_input(**changes) -> dict:
    return {"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784, **changes}


@pytest.mark.parametrize(
    ("request_body", "status", "message"),
    [
        ({"inputs": [image_input(name="pixels")]}, 400, "expected one input named 'image'"),
        ({"inputs": [image_input(), image_input()]}, 400, "expected one input"),
        ({"inputs": [image_input(datatype="INT32")]}, 400, "UINT8 or FP32"),
        ({"inputs": [image_input(shape=[1, 27, 28])]}, 400, "has shape"),
        ({"inputs": [image_input(shape=[0, 28, 28], data=[])]}, 400, "has shape"),
        ({"inputs": [image_input(data=[0] * 783)]}, 400, "holds 783 values"),
        ({"inputs": [image_input(data=[256] * 784)]}, 400, "integers 0-255"),
        ({"inputs": [image_input(data=[0.5] * 784)]}, 400, "integers 0-255"),
        ({"inputs": [image_input(datatype="FP32", data=[300.0] * 784)]}, 400, "pixel values 0-255"),
        ({"inputs": [image_input(data=["1"] * 784)]}, 400, "must be numbers"),
        ({"inputs": [image_input(data=[True] * 784)]}, 400, "not booleans"),
        ({"inputs": [image_input(data=None)]}, 400, "needs 'data'"),
        ({"inputs": [image_input(shape=[65, 784], data=[0] * 784 * 65)]}, 413, "at most 64"),
        ({"inputs": [image_input()], "outputs": [{"name": "embedding"}]}, 400, "unknown outputs ['embedding']"),
        ({"inputs": []}, 400, "inputs"),
        ({"inputs": [image_input()], "surprise": 1}, 400, "surprise"),
    ],
)
def test_oip_errors_are_4xx_json(client, request_body, status, message):
    code, error = oip_error(client, orjson.dumps(request_body), content_type="application/json")
    assert code == status, error
    assert message in error, error


def test_oip_binary_errors(client):
    tensor = {"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "parameters": {"binary_data_size": 784}}
    body, headers = binary_request(b"\x00" * 700, {"inputs": [tensor]})
    assert oip_error(client, body, headers) == (
        400,
        "input 'image' of shape [1, 28, 28] is 784 bytes of UINT8: "
        "binary_data_size is 784 and 700 bytes follow the header "
        "(and no 'data' beside it)",
    )  # fewer bytes than declared
    body, headers = binary_request(b"\x00" * 784, {"inputs": [{**tensor, "parameters": {"binary_data_size": 700}}]})
    assert "binary_data_size is 700" in oip_error(client, body, headers)[1]
    assert "within the body" in oip_error(client, b"{}", {HEADER_LENGTH: "99"})[1]
    assert "within the body" in oip_error(client, b"{}", {HEADER_LENGTH: "-1"})[1]
    body, _ = binary_request(b"\x00" * 784, {"inputs": [image_input()]})
    assert "malformed JSON" in oip_error(client, body, content_type="application/json")[1]
    assert oip_error(client, b"{}", content_type="text/plain")[0] == 415
