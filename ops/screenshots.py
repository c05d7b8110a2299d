"""Headless-Chromium screenshots of the running stack's UIs: the MLflow experiment page (runs), the
registry page of the model and the newest train-and-deploy flow run in Prefect. For docs and for
checking what a user sees after an upgrade of either UI, without a desktop."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tasks.settings import mlflow_ui_link

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


class ScreenshotError(RuntimeError):
    """Something a user must fix first; the message says what."""


def find_chromium() -> str:
    for name in CHROMIUM:
        if path := shutil.which(name):
            return path
    raise ScreenshotError("no Chromium found: `apt-get install chromium` (Debian) installs it")


def _get_json(url: str, body: dict | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except OSError as exc:
        raise ScreenshotError(f"{url} does not answer ({exc}); is the stack up (`make up`)?") from exc


def pages(mlflow_url: str, prefect_api: str, experiment: str, model: str) -> dict[str, str]:
    """name -> URL of each page worth a picture, found through the two servers' APIs."""
    query = urllib.parse.urlencode({"experiment_name": experiment})
    experiment_id = _get_json(f"{mlflow_url}/api/2.0/mlflow/experiments/get-by-name?{query}")["experiment"][
        "experiment_id"
    ]
    finished = {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]}}
    runs = _get_json(
        f"{prefect_api}/flow_runs/filter",
        {
            "flows": {"name": {"any_": ["train-and-deploy"]}},
            "flow_runs": {"state": finished},
            "sort": "END_TIME_DESC",
            "limit": 1,
        },
    )
    if not runs:
        raise ScreenshotError(
            "no finished train-and-deploy run yet: `prefect deployment run 'train-and-deploy/weekly'`"
        )
    return {
        "mlflow-experiment": mlflow_ui_link(mlflow_url, f"experiments/{experiment_id}"),
        "mlflow-registry": mlflow_ui_link(mlflow_url, f"models/{model}"),
        "prefect-flow-run": f"{prefect_api.removesuffix('/api')}/runs/flow-run/{runs[0]['id']}",
    }


def capture(chromium: str, url: str, path: Path, size: tuple[int, int] = (1600, 1000), wait_ms: int = 20_000) -> Path:
    """One PNG of `url` after `wait_ms` of the page's own (virtual) time, so the single-page apps have
    fetched and rendered their data."""
    with tempfile.TemporaryDirectory() as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={path}",
            url,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if result.returncode != 0 or not path.is_file():
        raise ScreenshotError(f"chromium could not capture {url}: {result.stderr[-500:]}")
    return path


def take_screenshots(mlflow_url: str, prefect_api: str, out_dir: Path, experiment: str, model: str) -> list[Path]:
    chromium = find_chromium()
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        capture(chromium, url, out_dir / f"{name}.png")
        for name, url in pages(mlflow_url, prefect_api, experiment, model).items()
    ]
