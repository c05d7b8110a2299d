"""`clothes-serve` / `python -m serving`: run the production server (gunicorn) on a model root."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve every model version under a model root with gunicorn.")
    parser.add_argument("--model-root", help="directory holding <name>/<version>/ (MLOPS_SERVE_MODEL_ROOT)")
    parser.add_argument("--host", help="bind address (MLOPS_SERVE_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (MLOPS_SERVE_PORT, default 8080)")
    parser.add_argument("--workers", type=int, help="worker processes (MLOPS_SERVE_WORKERS, default 2)")
    args = parser.parse_args(argv)
    for option, env in (("model_root", "MODEL_ROOT"), ("host", "HOST"), ("port", "PORT"), ("workers", "WORKERS")):
        if getattr(args, option) is not None:
            os.environ[f"MLOPS_SERVE_{env}"] = str(getattr(args, option))
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "python:serving.gunicorn_config", "serving.wsgi:app"]
    os.execv(sys.executable, gunicorn)


if __name__ == "__main__":
    main()
