"""Every status the OpenAPI document promises for a route is one the route really answers: the cases come
from the server's own route table (`serving.app.ROUTES`), the same table `/openapi.json` is made from, so a
newly documented status without a request that produces it fails here."""

from __future__ import annotations

import re

import numpy as np
import pytest

from serving import create_app
from serving.app import ROUTES
from serving.http.route_table import Route
from serving.settings import ServingSettings

TOKEN = "let-me-label"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# 408 is answered by the gevent worker when a body does not arrive in time: tests/serving/test_reliability.py.
CASES = [(route, status) for route in ROUTES for status in route.statuses if status != 408]


def url(route: Route, name: str = "clothes") -> str:
    values = {"name": name, "version": "1"}
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], route.rule)


@pytest.fixture(scope="module")
def apps(model_root, tmp_path_factory):
    """One app per condition a status needs: feedback on (token), a small body limit, a tight feedback rate,
    and one not warmed up yet."""

    def app(**settings):
        log = tmp_path_factory.mktemp("prediction-log")
        return create_app(model_root, ServingSettings(prediction_log_dir=log, feedback_token=TOKEN, **settings))

    return {
        "main": app(),
        "small": app(max_body_bytes=4096),
        "rate": app(feedback_per_minute=1),
        "cold": create_app(model_root, warm_up=False),
    }


def prediction_id(client) -> str:
    answer = client.post("/models/clothes/v1", json={"image": np.zeros((28, 28), int).tolist()}).json
    return answer["predictions"][0]["id"]


def send(route: Route, status: int, apps: dict):
    """The request that must get `status` from `route`."""
    method = route.method.lower()
    if status == 404:
        return getattr(apps["main"].test_client(), method)(url(route, name="shoes"), headers=AUTH, json={})
    if status == 503:
        return apps["cold"].test_client().get(url(route))
    if status == 413:
        body = b'{"image": [' + b"0, " * 4000 + b"0]}"
        return apps["small"].test_client().post(url(route), data=body, content_type="application/json", headers=AUTH)
    client = apps["main"].test_client()
    if status == 415:
        return client.post(url(route), data=b"pixels", content_type="text/plain", headers=AUTH)
    if status == 400:
        return client.post(url(route), json={"nonsense": 1}, headers=AUTH)
    if status == 401:
        return client.post(url(route), json={"id": prediction_id(client), "class_id": 1})
    if status == 409:
        labelled = {"id": prediction_id(client), "class_id": 1}
        assert client.post(url(route), json=labelled, headers=AUTH).status_code == 202
        return client.post(url(route), json=labelled, headers=AUTH)
    if status == 429:
        limited = apps["rate"].test_client()
        labelled = {"id": prediction_id(limited), "class_id": 1}
        assert limited.post(url(route), json=labelled, headers=AUTH).status_code == 202
        return limited.post(url(route), json=labelled, headers=AUTH)
    raise AssertionError(f"no request is known to produce {status}: add one, or stop documenting it")


@pytest.mark.parametrize(("route", "status"), CASES, ids=[f"{r.method} {r.rule} {s}" for r, s in CASES])
def test_every_documented_status_is_answered(route, status, apps):
    response = send(route, status, apps)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.json
    if status == 503:  # not ready: the readiness body, not an error
        assert body.get("status") == "not ready" or body.get("ready") is False, body
    else:
        assert isinstance(body.get("error"), str), body
        assert body["error"], body


def test_the_document_lists_exactly_the_table(client):
    paths = client.get("/openapi.json").json["paths"]
    documented = {
        (p, m.upper(), int(s))
        for p, item in paths.items()
        for m, op in item.items()
        if m != "parameters"
        for s in op["responses"]
        if int(s) >= 400
    }
    assert documented == {(r.path, r.method, s) for r in ROUTES for s in r.statuses}


def test_every_domain_error_has_its_status():
    """A new kind of error is mapped on purpose, not answered with the fallback."""
    from serving import errors
    from serving.http.errors import STATUS

    kinds = {k for k in vars(errors).values() if isinstance(k, type) and issubclass(k, errors.ServingError)}
    assert kinds - {errors.ServingError} == set(STATUS)
