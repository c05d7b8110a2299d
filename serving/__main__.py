"""`clothes-serve` / `python -m serving`: run the production server (gunicorn) on a model root."""

from __future__ import annotations

import argparse
import os
import socket
import sys

DEFAULT_PORT = 8080


def first_free_port(host: str, start: int, tries: int = 50) -> int:
    """The first port from `start` that `host` can bind now (a quick check: the server binds it next)."""
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port in {start}-{start + tries - 1} on {host}; choose one with --port")


def argument_parser() -> argparse.ArgumentParser:
    """The command line, apart from running it: the docs' commands are checked against it."""
    parser = argparse.ArgumentParser(
        prog="clothes-serve", description="Serve every model version under a model root with gunicorn."
    )
    parser.add_argument("--model-root", help="directory holding <name>/<version>/ (MLOPS_SERVE_MODEL_ROOT)")
    parser.add_argument("--host", help="bind address (MLOPS_SERVE_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (MLOPS_SERVE_PORT, default 8080)")
    parser.add_argument("--workers", type=int, help="worker processes (MLOPS_SERVE_WORKERS, default 2)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if args.port is None and "MLOPS_SERVE_PORT" not in os.environ:  # no port asked for: the first free one
        host = args.host or os.environ.get("MLOPS_SERVE_HOST", "0.0.0.0")
        args.port = first_free_port(host, DEFAULT_PORT)
        if args.port != DEFAULT_PORT:
            print(
                f"port {DEFAULT_PORT} is in use (production from `make run`? `make status` says; "
                f"`.venv/bin/clothes-stack down --serving` stops it): serving on {host}:{args.port}",
                file=sys.stderr,
                flush=True,
            )
    for option, env in (("model_root", "MODEL_ROOT"), ("host", "HOST"), ("port", "PORT"), ("workers", "WORKERS")):
        if getattr(args, option) is not None:
            os.environ[f"MLOPS_SERVE_{env}"] = str(getattr(args, option))
    gunicorn = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:serving.server.gunicorn_config",
        "serving.server.wsgi:app",
    ]
    os.execv(sys.executable, gunicorn)


if __name__ == "__main__":
    main()
