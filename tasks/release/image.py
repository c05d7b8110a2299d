"""Build the serving image: an offline wheelhouse, a minimal build context, Docker's classic builder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.release.docker_engine import LABEL, ContainerStageError
from tasks.settings import PROJECT_DIR

# tensorflow-cpu and friends ship manylinux_2_27/2_28 only and pip does not fill in lower tags itself.
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "linux_x86_64",
)
Log = Callable[[str], None]
SERVING_LABEL = f"{LABEL}.serving"  # the server settings baked in, as JSON


@dataclass
class ImageInfo:
    tag: str
    id: str
    size_mb: float
    build_seconds: float


def serving_requirements(project_dir: Path = PROJECT_DIR) -> list[str]:
    """The `serving` extra of pyproject.toml: the only packages the image gets."""
    with (project_dir / "pyproject.toml").open("rb") as handle:
        return list(tomllib.load(handle)["project"]["optional-dependencies"]["serving"])


def ensure_wheelhouse(wheelhouse: Path, requirements: list[str], constraints: Path) -> Path:
    """Download the serving wheels once (pinned by constraints.txt); rebuilt only when those change.
    Air-gapped machines can fill the directory by other means: the build itself never needs a network."""
    key = hashlib.sha256(("\n".join(requirements) + constraints.read_text()).encode()).hexdigest()
    stamp = wheelhouse / ".requirements-sha256"
    if stamp.is_file() and stamp.read_text() == key:
        return wheelhouse
    wheelhouse.mkdir(parents=True, exist_ok=True)
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "-d",
        str(wheelhouse),
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        *platforms,
        "-c",
        str(constraints),
        *requirements,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise ContainerStageError(f"could not prepare the wheelhouse in {wheelhouse}:\n{result.stderr[-2000:]}")
    stamp.write_text(key)
    return wheelhouse


def build_context(
    workdir: Path,
    model_dirs: list[Path],
    wheelhouse: Path,
    requirements: list[str],
    serving: dict[str, str] | None = None,
    project_dir: Path = PROJECT_DIR,
) -> Path:
    """Only what the image needs: Dockerfile, requirements, wheels, serving/, the server settings the
    release bakes in (`serving.settings.IMAGE_SETTINGS_FILE`) and the model versions."""
    context = workdir / "context"
    context.mkdir(parents=True)
    (context / "serving.env").write_text(settings_file(serving or {}))
    shutil.copy2(project_dir / "Dockerfile.serve", context / "Dockerfile.serve")
    shutil.copy2(project_dir / "constraints.txt", context / "constraints.txt")
    (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
    shutil.copytree(project_dir / "serving", context / "serving", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        wheelhouse, context / "wheelhouse", copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".*")
    )
    for model_dir in model_dirs:  # <root>/<name>/<version>
        shutil.copytree(model_dir, context / "models" / model_dir.parent.name / model_dir.name)
    return context


def settings_file(serving: dict[str, str]) -> str:
    """`serving` as the dotenv lines the server reads (values quoted: spaces and # stay theirs)."""
    return "".join(f"MLOPS_SERVE_{name.upper()}={json.dumps(value)}\n" for name, value in sorted(serving.items()))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_image(
    client, context: Path, tag: str, base_image: str, labels: dict[str, str], log: Log, nocache: bool = False
) -> tuple[str, float]:
    """Build with the classic builder and stream its log; return (image id, seconds).

    The dependency stage stays in Docker's cache, so a model-only change rebuilds one small layer."""
    started = time.perf_counter()
    image_id = None
    for chunk in client.api.build(
        path=str(context),
        dockerfile="Dockerfile.serve",
        tag=tag,
        buildargs={"BASE_IMAGE": base_image},
        labels=labels,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
        nocache=nocache,
    ):
        if "stream" in chunk and chunk["stream"].strip():
            log(chunk["stream"].rstrip())
        if "error" in chunk:
            raise ContainerStageError(f"image build failed: {chunk['error'].strip()}")
        if "ID" in chunk.get("aux", {}):
            image_id = chunk["aux"]["ID"]
    if image_id is None:
        image_id = client.images.get(tag).id
    return image_id, time.perf_counter() - started


def build_serving_image(
    client,
    model_dirs: list[Path],
    tag: str,
    *,
    wheelhouse_dir: Path,
    base_image: str,
    labels: dict[str, str] | None = None,
    log: Log = lambda _line: None,
    nocache: bool = False,
    serving: dict[str, str] | None = None,
) -> tuple[str, float]:
    """The whole recipe: the serving wheels (downloaded once), a throwaway minimal context, the build;
    returns (image id, seconds). `serving`: server settings baked in, also kept as the label
    `SERVING_LABEL` so a rebuild of the image keeps them."""
    requirements = serving_requirements()
    wheelhouse = ensure_wheelhouse(wheelhouse_dir, requirements, PROJECT_DIR / "constraints.txt")
    labels = {**(labels or {}), SERVING_LABEL: json.dumps(serving or {}, sort_keys=True)}
    with tempfile.TemporaryDirectory(prefix="clothes-build-") as tmp:
        context = build_context(Path(tmp), [Path(d) for d in model_dirs], wheelhouse, requirements, serving)
        return build_image(client, context, tag, base_image, labels, log, nocache=nocache)


def baked_settings(image_labels: dict[str, str] | None) -> dict[str, str]:
    """The server settings an image was built with (none for images from before they were labelled)."""
    return json.loads((image_labels or {}).get(SERVING_LABEL, "{}"))
