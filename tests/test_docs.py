"""The docs cannot drift from the code: the configuration page is regenerated and compared, every setting
and run parameter says what it is, the README stays a quickstart and its links resolve."""

from __future__ import annotations

import re

import pytest

from ops import api_reference, cli_reference
from ops.config_reference import RUN_PARAMETERS, render
from serving.settings import ServingSettings
from tasks.params import Architecture
from tasks.settings import Settings
from tests.conftest import REPO

MODELS = (
    ServingSettings,
    Settings,
    *[type(getattr(Settings(), name)) for name in Settings.model_fields if name not in ("data_dir",)],
    *RUN_PARAMETERS,
    Architecture,
)


@pytest.mark.parametrize(
    ("page", "rendered"),
    [("configuration.md", render), ("cli.md", cli_reference.render), ("api/openapi.json", api_reference.render)],
)
def test_the_generated_reference_pages_are_what_the_code_says(page, rendered):
    committed = (REPO / "docs" / page).read_text()
    assert committed == rendered(), f"docs/{page} is stale: run `make docs`"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_setting_and_parameter_says_what_it_is(model):
    assert model.__doc__, f"{model.__name__} needs a docstring: its first paragraph heads its table"
    missing = [name for name, field in model.model_fields.items() if not field.description]
    assert not missing, f"{model.__name__}: fields without a description: {missing}"


def test_the_readme_is_a_quickstart_whose_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "CONTRIBUTING.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not there"
