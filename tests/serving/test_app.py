"""Every route, input format and error code of the server, through Flask's test client."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
from PIL import Image

from serving import create_app
from serving.http.ui import UI_ENDPOINTS
from serving.settings import ServingSettings
from tests.conftest import REPO

IMAGES = sorted((REPO / "examples" / "images").glob("*.png"))


def png_bytes(pixels: np.ndarray, mode: str = "L", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def example_pixels(index: int = 0) -> np.ndarray:
    return np.asarray(Image.open(IMAGES[index]))


def test_model_listing_and_course_metadata(client):
    assert client.get("/models").json == {"models": [{"name": "clothes", "versions": [1, 2], "latest": 2}]}
    info = client.get("/models/clothes/v1").json
    assert {"version": 1, "name": "clothes", "number_of_parameters": 61_706}.items() <= info.items()
    assert info["description"]
    assert len(info["classes"]) == 10
    assert client.get("/models/clothes/latest").json["version"] == 2


def test_classify_single_json_image(client):
    answer = client.post("/models/clothes/v1", json={"image": example_pixels().tolist()}).json
    assert answer["model"] == {"name": "clothes", "version": 1}
    probabilities = np.asarray(answer["result"])
    assert probabilities.shape == (1, 10)
    assert np.isclose(probabilities.sum(), 1, atol=1e-5)
    (prediction,) = answer["predictions"]
    assert prediction["class_id"] == int(probabilities.argmax())
    assert prediction["confidence"] == pytest.approx(probabilities.max())
    assert prediction["label"] == client.get("/models/clothes/v1").json["classes"][prediction["class_id"]]


def test_batch_png_jpeg_and_multipart_agree(client):
    pixels = example_pixels(3)
    by_json = client.post("/models/clothes/latest", json={"images": [pixels.tolist()] * 3}).json
    assert len(by_json["predictions"]) == 3
    by_png = client.post("/models/clothes/latest", data=png_bytes(pixels), content_type="image/png").json
    assert np.allclose(by_png["result"][0], by_json["result"][0], atol=1e-6)  # PNG is lossless
    by_jpeg = client.post("/models/clothes/latest", data=png_bytes(pixels, fmt="JPEG"), content_type="image/jpeg").json
    (jpeg_prediction,) = by_jpeg["predictions"]  # lossy: close to the pixels' answer, not equal
    assert np.isclose(sum(by_jpeg["result"][0]), 1, atol=1e-4)
    assert by_jpeg["model"]["version"] == 2
    assert jpeg_prediction["class_id"] == int(np.argmax(by_jpeg["result"][0]))
    assert np.abs(np.subtract(by_jpeg["result"][0], by_json["result"][0])).max() < 0.5
    upload = client.post(
        "/models/clothes/v2",
        data={"file": [(io.BytesIO(png_bytes(pixels)), "a.png"), (io.BytesIO(png_bytes(pixels)), "b.png")]},
        content_type="multipart/form-data",
    ).json
    assert [p["class_id"] for p in upload["predictions"]] == [by_json["predictions"][0]["class_id"]] * 2


def test_any_size_and_colour_is_converted(client):
    big_rgb = np.asarray(Image.fromarray(example_pixels(5)).resize((280, 280)).convert("RGB"))
    answer = client.post("/models/clothes/v1", data=png_bytes(big_rgb, mode="RGB"), content_type="image/png")
    original = client.post("/models/clothes/v1", json={"image": example_pixels(5).tolist()}).json
    assert answer.status_code == 200
    assert len(answer.json["predictions"]) == 1
    assert answer.json["predictions"][0]["label"] == original["predictions"][0]["label"]


def test_a_product_photo_is_read_as_the_dataset_image_it_came_from(app, client):
    pixels = example_pixels(7)
    photo = np.asarray(Image.fromarray(255 - pixels).resize((320, 320), Image.Resampling.BICUBIC).convert("RGB"))
    as_photo = client.post("/models/clothes/v1", data=png_bytes(photo, "RGB", "JPEG"), content_type="image/jpeg")
    (prediction,) = as_photo.json["predictions"]
    assert prediction["preprocessing"] == {"inverted": True, "trimmed": True, "resized": True}
    as_dataset = client.post("/models/clothes/v1", json={"image": pixels.tolist()}).json["predictions"][0]
    assert as_dataset["preprocessing"] == {"inverted": False, "trimmed": False, "resized": False}
    assert prediction["class_id"] == as_dataset["class_id"]
    original = app.plane.settings
    app.plane.settings = original.model_copy(update={"preprocess": False})  # as it was before
    try:
        squeezed = client.post("/models/clothes/v1", data=png_bytes(photo, "RGB", "JPEG"), content_type="image/jpeg")
    finally:
        app.plane.settings = original
    assert squeezed.json["predictions"][0]["preprocessing"] == {"inverted": False, "trimmed": False, "resized": False}


def test_channel_axis_is_accepted(client):
    with_axis = client.post("/models/clothes/v1", json={"image": example_pixels()[..., np.newaxis].tolist()}).json
    without = client.post("/models/clothes/v1", json={"image": example_pixels().tolist()}).json
    assert np.allclose(with_axis["result"], without["result"], atol=1e-6)


def test_tensorflow_serving_api(client):
    x = (example_pixels() / 255.0)[..., np.newaxis]
    status = client.get("/v1/models/clothes").json["model_version_status"]
    assert [s["version"] for s in status] == ["1", "2"]
    assert status[0]["state"] == "AVAILABLE"
    assert client.get("/v1/models/clothes/versions/2").json["model_version_status"][0]["version"] == "2"
    latest = client.post("/v1/models/clothes:predict", json={"instances": [x.tolist()]}).json
    pinned = client.post("/v1/models/clothes/versions/1:predict", json={"instances": [{"image": x.tolist()}]}).json
    course = client.post("/models/clothes/v1", json={"image": example_pixels().tolist()}).json
    assert np.allclose(latest["predictions"], course["result"], atol=1e-6)
    assert np.allclose(pinned["predictions"], course["result"], atol=1e-6)
    columnar = client.post("/v1/models/clothes:predict", json={"inputs": [x.tolist()]}).json
    assert np.allclose(columnar["predictions"], course["result"], atol=1e-6)


ZEROS = np.zeros((28, 28)).tolist()


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "fragment"),
    [
        ("/models/clothes/v1", {"data": b"{", "content_type": "application/json"}, 400, "malformed JSON"),
        ("/models/clothes/v1", {"data": b'{"image": NaN}', "content_type": "application/json"}, 400, "malformed"),
        ("/models/clothes/v1", {"json": [1, 2]}, 400, "exactly one of"),
        ("/models/clothes/v1", {"json": {"image": ZEROS, "images": [ZEROS]}}, 400, "exactly one of"),
        ("/models/clothes/v1", {"json": {"img": ZEROS}}, 400, "exactly one of"),
        ("/models/clothes/v1", {"json": {"image": [[0] * 28] * 27}}, 400, "got shape [27, 28]"),
        ("/models/clothes/v1", {"json": {"image": [[0] * 28] * 27 + [[0] * 27]}}, 400, "rows of equal length"),
        ("/models/clothes/v1", {"json": {"image": [["a"] * 28] * 28}}, 400, "nested list of numbers"),
        ("/models/clothes/v1", {"json": {"image": "pixels"}}, 400, "nested list"),
        ("/models/clothes/v1", {"json": {"image": [[256] * 28] * 28}}, 400, "between 0 and 255"),
        ("/models/clothes/v1", {"json": {"image": [[-1] * 28] * 28}}, 400, "between 0 and 255"),
        (
            "/models/clothes/v1",
            {"data": b'{"image": [[1e400' + b", 0" * 27 + b"]]}", "content_type": "application/json"},
            400,
            "number is infinity",
        ),
        ("/models/clothes/v1", {"json": {"images": []}}, 400, "at least one image"),
        ("/models/clothes/v1", {"json": {"images": ZEROS}}, 400, "N x 28 x 28"),
        ("/models/clothes/v1", {"data": b"not a png", "content_type": "image/png"}, 400, "could not decode"),
        ("/models/clothes/v1", {"data": b"", "content_type": "image/jpeg"}, 400, "empty image"),
        ("/models/clothes/v1", {"data": {}, "content_type": "multipart/form-data"}, 400, "'file' fields"),
        ("/models/clothes/v9", {"json": {"image": ZEROS}}, 404, "no version 9"),
        ("/models/shoes/v1", {"json": {"image": ZEROS}}, 404, "unknown model 'shoes'"),
        ("/models/clothes/vX", {"json": {"image": ZEROS}}, 404, "no such route"),
        ("/v1/models/shoes:predict", {"json": {"instances": []}}, 404, "unknown model"),
        ("/models/clothes/v1", {"data": b"x", "content_type": "text/plain"}, 415, "unsupported content type"),
        ("/models/clothes/v1", {"data": b"x"}, 415, "unsupported content type"),
        ("/v1/models/clothes:predict", {"data": b"x", "content_type": "image/png"}, 415, "application/json"),
        ("/v1/models/clothes:predict", {"json": {"instances": [[[2.0] * 28] * 28]}}, 400, "between 0 and 1"),
        ("/v1/models/clothes:predict", {"json": {"instances": [{"x": ZEROS}]}}, 400, "single input 'image'"),
        ("/models/clothes/v1", {"json": {"images": [ZEROS] * 1025}}, 413, "at most 1024 images"),
    ],
)
def test_client_mistakes_get_clear_json_errors(client, path, kwargs, status, fragment):
    response = client.post(path, **kwargs)
    assert response.status_code == status
    assert response.is_json
    assert fragment in response.json["error"]


def test_wrong_method_is_405(client):
    response = client.delete("/models/clothes/v1")
    assert response.status_code == 405
    assert "error" in response.json
    assert client.post("/models").status_code == 405


def test_body_over_the_limit_is_413(model_root):
    small = create_app(model_root, ServingSettings(max_body_bytes=4096)).test_client()
    response = small.post("/models/clothes/v1", json={"images": [ZEROS] * 10})
    assert response.status_code == 413
    assert "over 4096 bytes" in response.json["error"]


def test_health_readiness_waits_for_warm_up(model_root):
    app = create_app(model_root, warm_up=False)
    client = app.test_client()
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 503
    app.plane.models.warm_up()
    assert client.get("/health/ready").json["status"] == "ready"


def test_metrics_count_requests_and_predicted_classes(client):
    client.post("/models/clothes/v2", json={"image": example_pixels().tolist()})
    text = client.get("/metrics").data.decode()
    assert "clothes_predictions_total{label=" in text
    assert 'model="clothes"' in text
    assert 'version="2"' in text
    assert 'clothes_http_request_duration_seconds_bucket{endpoint="/models/<name>/v<int:version>"' in text


def estimated_correct(client, version: int) -> float:
    found = re.search(
        rf'clothes_estimated_correct_total{{model="clothes",version="{version}"}} (\S+)', client.get("/metrics").text
    )
    return float(found.group(1)) if found else 0.0


def test_metrics_count_the_answers_likely_right_for_versions_exported_with_the_estimate(client, model_root):
    threshold = json.loads((model_root / "clothes" / "2" / "estimate.json").read_text())["threshold"]
    images = np.random.default_rng(5).integers(0, 256, (40, 28, 28)).tolist()  # noise: some confident, some not
    before = estimated_correct(client, 2), estimated_correct(client, 1)
    answers = client.post("/models/clothes/v2", json={"images": images}).json["predictions"]
    answers += client.post("/models/clothes/v2", json={"image": example_pixels().tolist()}).json["predictions"]
    client.post("/models/clothes/v1", json={"images": images})  # exported without the estimate
    likely_right = sum(answer["confidence"] > threshold for answer in answers)
    assert likely_right > 0
    assert estimated_correct(client, 2) - before[0] == likely_right
    assert estimated_correct(client, 1) == before[1] == 0.0


def test_openapi_document_lists_every_route(client, app):
    document = client.get("/openapi.json").json
    assert document["openapi"].startswith("3.")
    served = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint not in UI_ENDPOINTS}
    documented = {p.replace("{", "<").replace("}", ">") for p in document["paths"]} | {"/openapi.json"}
    normalise = {r.replace("<int:version>", "<version>").replace("<model:name>", "<name>") for r in served}
    assert normalise == documented


def test_serving_imports_nothing_from_the_pipeline():
    code = (
        "import sys, serving.app, serving.client, serving.server.gunicorn_config, serving.__main__;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'prefect', 'mlflow', 'tensorflow', 'keras', 'tasks', 'flows'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/models/clothes/v1", {"image": ZEROS}),
        ("/models/clothes/v1", {"images": [ZEROS, ZEROS]}),
        ("/models/clothes/v1", {"image": [[[0]] * 28] * 28}),
        ("/models/clothes/v1", {"image": ZEROS, "note": "extra fields are ignored"}),
        ("/models/clothes/v1", {"image": ZEROS, "images": [ZEROS]}),
        ("/models/clothes/v1", {"images": []}),
        ("/models/clothes/v1", {"image": [[0] * 28] * 27}),
        ("/models/clothes/v1", {"image": [[300] * 28] * 28}),
        ("/models/clothes/v1", {"img": ZEROS}),
        ("/models/clothes/v1", [ZEROS]),
        ("/v1/models/clothes:predict", {"instances": [ZEROS]}),
        ("/v1/models/clothes:predict", {"inputs": [{"image": ZEROS}]}),
        ("/v1/models/clothes:predict", {"instances": [[[2] * 28] * 28]}),
        ("/v1/models/clothes:predict", {"instances": [ZEROS], "inputs": [ZEROS]}),
    ],
)
def test_the_documented_schemas_are_the_ones_the_server_applies(client, path, body):
    """Every body is judged the same by the OpenAPI document and the server: valid -> 200, invalid -> 400."""
    document = client.get("/openapi.json").json
    route = {
        "/models/clothes/v1": "/models/{name}/v{version}",
        "/v1/models/clothes:predict": "/v1/models/{name}:predict",
    }
    post = document["paths"][route[path]]["post"]
    schema = {**post["requestBody"]["content"]["application/json"]["schema"], "components": document["components"]}
    documented_valid = jsonschema.Draft202012Validator(schema).is_valid(body)
    response = client.post(path, json=body)
    assert response.status_code == (200 if documented_valid else 400), response.json
    if documented_valid:
        answer_schema = post["responses"]["200"]["content"]["application/json"]["schema"]
        assert jsonschema.Draft202012Validator({**answer_schema, "components": document["components"]}).is_valid(
            response.json
        )


def test_clothes_serve_moves_to_the_next_free_port_when_its_own_is_taken():
    from serving.__main__ import first_free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        assert first_free_port("127.0.0.1", port) not in (port, None)
    assert first_free_port("127.0.0.1", port) == port
