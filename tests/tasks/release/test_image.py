"""The server settings a release bakes into its image: written where the server reads them, under the
environment, and kept on the image so a rebuild keeps them."""

from __future__ import annotations

import json

from serving.settings import IMAGE_SETTINGS_FILE, ServingSettings
from tasks.release.image import SERVING_LABEL, baked_settings, build_context
from tests.conftest import REPO


def test_the_releases_server_settings_are_what_the_server_reads_in_its_image(tmp_path, monkeypatch):
    (tmp_path / "wheels").mkdir()
    token = 'a "quoted" # token'
    serving = {"preprocess": "false", "max_batch": "64", "feedback_token": token}
    context = build_context(tmp_path, [], tmp_path / "wheels", ["flask"], serving)
    baked = context / "serving.env"
    for name in ("MLOPS_SERVE_PREPROCESS", "MLOPS_SERVE_MAX_BATCH", "MLOPS_SERVE_FEEDBACK_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    read = ServingSettings(_env_file=baked)  # type: ignore[call-arg]
    assert (read.preprocess, read.max_batch, read.feedback_token) == (False, 64, token)
    monkeypatch.setenv("MLOPS_SERVE_MAX_BATCH", "8")  # what a deployment sets wins
    assert ServingSettings(_env_file=baked).max_batch == 8  # type: ignore[call-arg]
    assert f"COPY serving.env {IMAGE_SETTINGS_FILE}" in (REPO / "Dockerfile.serve").read_text()


def test_an_image_without_settings_bakes_an_empty_file_and_a_rebuild_keeps_what_it_was_given(tmp_path):
    (tmp_path / "wheels").mkdir()
    assert (build_context(tmp_path, [], tmp_path / "wheels", ["flask"]) / "serving.env").read_text() == ""
    assert baked_settings({SERVING_LABEL: json.dumps({"workers": "4"})}) == {"workers": "4"}
    assert baked_settings({"other": "label"}) == {} == baked_settings(None)  # images before the label
