"""The console scripts' command lines in one place: `python -m ops.cli_reference` renders their `--help`
into docs/cli.md, and `check` parses a command as the script would, without running it, so that every
command the docs show is known to be accepted (tests/test_docs_commands.py)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
from collections.abc import Callable

import cyclopts
from rich.console import Console

WIDTH = 110  # the rendered help's width, fixed so that the page does not depend on the terminal


def _flow_app(module: str) -> cyclopts.App:
    return importlib.import_module(module).app


def _cyclopts(module: str) -> Callable[[], cyclopts.App]:
    """A flow's command line; clothes-tune's starts with its cluster's options (its `meta` app)."""
    return lambda: _flow_app(module).meta if module == "flows.tune" else _flow_app(module)


def _argparse(module: str) -> Callable[[], argparse.ArgumentParser]:
    return lambda: importlib.import_module(module).argument_parser()


# pyproject.toml's [project.scripts], in the order a user meets them.
SCRIPTS: dict[str, Callable[[], cyclopts.App | argparse.ArgumentParser]] = {
    "clothes-pipeline": _cyclopts("flows.pipeline"),
    "clothes-classify": _argparse("serving.client"),
    "clothes-serve": _argparse("serving.__main__"),
    "clothes-stack": _argparse("ops.stack"),
    "clothes-rollback": _cyclopts("flows.rollback"),
    "clothes-monitor": _cyclopts("flows.monitor"),
    "clothes-tune": _cyclopts("flows.tune"),
    "clothes-node": _argparse("ops.node"),
}


class CommandRefused(ValueError):
    """The script would refuse these words; the message is what it would say."""


def check(script: str, words: list[str]) -> None:
    """Parse `words` as `script` would, running nothing; raise CommandRefused with its reason."""
    if script not in SCRIPTS:
        raise CommandRefused(f"{script} is not one of the project's commands ({', '.join(SCRIPTS)})")
    cli = SCRIPTS[script]()
    if isinstance(cli, argparse.ArgumentParser):
        said = io.StringIO()
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            try:
                cli.parse_args(words)
            except SystemExit as stopped:
                if stopped.code:
                    raise CommandRefused(said.getvalue().strip()) from None
        return
    try:
        if script == "clothes-tune":  # the cluster's options first, then the flow's own, as the script does
            _command, bound, _ = cli.parse_args(words, exit_on_error=False, print_error=False)
            tune = importlib.import_module("flows.tune")
            words = tune.flow_tokens(bound.arguments.get("tokens", ()), bound.arguments.get("space_file"))
            cli = tune.app
        cli.parse_args(words, exit_on_error=False, print_error=False)
    except Exception as refused:  # cyclopts' and pydantic's errors alike: what the user would read
        raise CommandRefused(f"{type(refused).__name__}: {refused}") from None


def help_text(script: str) -> str:
    cli = SCRIPTS[script]()
    if isinstance(cli, argparse.ArgumentParser):  # argparse reads its width from COLUMNS only
        previous = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = str(WIDTH)
        try:
            return cli.format_help()
        finally:
            if previous is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = previous
    console = Console(width=WIDTH, color_system=None, force_terminal=False, record=True, file=io.StringIO())
    cli.help_print([], console=console)
    if script == "clothes-tune":
        console.print("The flow's own options follow the cluster's:")
        _flow_app("flows.tune").help_print([], console=console)
    return console.export_text()


def render() -> str:
    pages = [
        "# Command-line reference\n",
        "Generated from each console script's `--help` by `python -m ops.cli_reference` (`make docs`); "
        "the scripts are installed into `.venv/bin/` by `make run` and `make test`. Every run parameter of a "
        "flow is a flag (`--train.epochs 5`) and also takes a whole section as JSON (`--train '{\"epochs\": 5}'`); "
        "the [configuration reference](configuration.md) says what each one means.\n",
    ]
    for script in SCRIPTS:
        text = "\n".join(line.rstrip() for line in help_text(script).strip().splitlines())
        pages.append(f"## {script}\n\n```text\n{text}\n```\n")
    return "\n".join(pages)


if __name__ == "__main__":
    print(render(), end="")
