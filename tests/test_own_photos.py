"""Train on your own photos (docs/own-photos.md): the page's own command, as written, on
`examples/own-photos/` (class folders of PNG/JPEG files; train/ and test/ splits) passes the gates it
sets, and the exported model serves with the folders' class names."""

from __future__ import annotations

import re
import shlex

import pytest

from flows.pipeline import app as pipeline_app
from flows.pipeline import train_and_deploy
from serving import create_app
from tasks.params import ContainerParams
from tests.conftest import REPO

pytestmark = pytest.mark.slow
OWN_PHOTOS = REPO / "examples" / "own-photos"


def documented_parameters() -> dict:
    """The flow parameters of the page's `make run ARGS="..."`, parsed by the pipeline's command line."""
    page = (REPO / "docs" / "own-photos.md").read_text().replace("\\\n", " ")
    (args,) = re.findall(r'make run ARGS="(.*?)"\n', page)
    _command, bound, _unused = pipeline_app.parse_args(shlex.split(args), exit_on_error=False, print_error=False)
    parameters = dict(bound.arguments)
    data = parameters["data"]
    parameters["data"] = data.model_copy(update={"path": REPO / data.path})  # the page's path is the checkout's
    return parameters


DOCUMENTED = documented_parameters()


def test_the_documented_command_trains_passes_its_gates_and_serves_its_folder_names(
    prefect_harness, mlflow_store, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLOPS_MODEL_ROOT", str(tmp_path / "models"))
    summary = train_and_deploy(**{**DOCUMENTED, "container": ContainerParams(enabled=False)})
    classes = sorted(p.name for p in (OWN_PHOTOS / "train").iterdir())
    assert summary["model_name"] == "own-clothes"
    assert summary["export_dir"].endswith("own-clothes/1")

    client = create_app(tmp_path / "models").test_client()
    assert client.get("/models/own-clothes/v1").json["classes"] == classes
    photo = next((OWN_PHOTOS / "test" / "sneaker").iterdir())
    answer = client.post("/models/own-clothes/latest", data=photo.read_bytes(), content_type="image/jpeg").json
    (prediction,) = answer["predictions"]
    assert prediction["label"] in classes
    assert len(answer["result"][0]) == len(classes)
