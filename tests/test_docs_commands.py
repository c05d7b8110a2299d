"""Every command the docs show is one the project accepts: the shell blocks and inline commands of
README.md, CONTRIBUTING.md and docs/ are parsed with the real command lines, without training anything.
`make X` must be a Makefile target and its ARGS the pipeline's (or the search's) flags; `clothes-*` the
console script's options; `prefect deployment run` a deployment of prefect.yaml with parameters its flow
validates; `curl` of the server a route the server has, for that method."""

from __future__ import annotations

import itertools
import json
import re
import shlex

import pytest
import yaml
from flask import Flask
from prefect.exceptions import ParameterTypeError
from werkzeug.exceptions import MethodNotAllowed, NotFound

from flows.monitor import monitor_drift
from flows.pipeline import train_and_deploy
from flows.rollback import rollback
from flows.tune import tune
from ops.cli_reference import SCRIPTS, CommandRefused, check
from serving.app import ROUTES
from serving.http.route_table import register
from tests.conftest import REPO

PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
FLOWS = {flow.name: flow for flow in (train_and_deploy, monitor_drift, rollback, tune)}
MAKE_ARGS = {"run": "clothes-pipeline", "tune": "clothes-tune", "bench-photos": None}  # make X ARGS=... -> script
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")  # VAR=value before a command


def shell_commands(text: str) -> list[str]:
    """Each command of the page's shell blocks (continuations joined, comments and output dropped), and
    each inline `code` that is a command of the project's."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                commands.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for inline in re.findall(r"`([^`\n]+)`", prose):
        if not {"*", "<"} & set(inline) and re.match(
            r"(\.venv/bin/)?(clothes-\w+ |make (run|tune) ARGS=)|--(train|data|thresholds|container)\.", inline
        ):
            commands.append(inline)
    return commands


def words_of(command: str) -> list[str]:
    """The command's words up to a pipe or a comment; placeholders like <file> kept as words."""
    words = shlex.split(command.split(" | ")[0], comments=True)
    while words and ASSIGNMENT.match(words[0]):
        words.pop(0)
    return words


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))


def deployments() -> set[str]:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return {f"{d['entrypoint'].split(':')[1].replace('_', '-')}/{d['name']}" for d in config["deployments"]}


def check_make(words: list[str]) -> None:
    targets = [w for w in words[1:] if "=" not in w]
    unknown = set(targets) - makefile_targets()
    assert not unknown, f"no such make target: {unknown}"
    args = next((w.split("=", 1)[1] for w in words if w.startswith("ARGS=")), None)
    script = MAKE_ARGS.get(targets[0]) if targets else None
    if args is not None and script:
        check(script, shlex.split(args))


def check_prefect(words: list[str]) -> None:
    if words[1:3] != ["deployment", "run"]:
        return
    name = words[3]
    assert name in deployments(), f"{name} is not a deployment of prefect.yaml ({sorted(deployments())})"
    parameters = {}
    for flag, value in itertools.pairwise(words):
        if flag == "--param":
            key, _, raw = value.partition("=")
            parameters[key] = json.loads(raw)
    FLOWS[name.split("/")[0]].validate_parameters(parameters)


def check_curl(words: list[str]) -> None:
    url = next((w for w in words if w.startswith("http://") and ":8080" in w), None)
    if url is None:
        return
    method = "POST" if {"-F", "-d", "--data", "--data-binary"} & set(words) else "GET"
    if "-X" in words:
        method = words[words.index("-X") + 1]
    path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
    server = Flask("docs")
    register(server, ROUTES)
    routes = server.url_map.bind("127.0.0.1")
    try:
        routes.match(path.split("?")[0], method=method)
    except (NotFound, MethodNotAllowed) as exc:
        raise AssertionError(f"the server has no {method} {path}: {exc.name}") from None


def check_flag(words: list[str]) -> None:
    """A flag named in prose, alone (`--data.holdout-size`: it must exist) or with its value."""
    refusals = []
    for script in ("clothes-pipeline", "clothes-tune"):
        try:
            return check(script, words)
        except CommandRefused as refused:
            if len(words) == 1 and "requires an argument" in str(refused):
                return None
            refusals.append(refused)
    raise refusals[0]


def check_command(command: str) -> None:
    words = words_of(command)
    if not words:
        return
    program = words[0].removeprefix(".venv/bin/")
    if program == "make":
        check_make(words)
    elif program in SCRIPTS:
        check(program, words[1:])
    elif words[0].startswith("--"):  # a flag quoted in prose: the pipeline's, or the search's
        check_flag(words)
    elif program == "prefect":
        check_prefect(words)
    elif program == "curl":
        check_curl(words)


CASES = [(page, command) for page in PAGES for command in shell_commands(page.read_text())]


@pytest.mark.parametrize(("page", "command"), CASES, ids=[f"{p.name}: {c[:60]}" for p, c in CASES])
def test_every_documented_command_is_accepted(page, command):
    try:
        check_command(command)
    except CommandRefused as refused:
        pytest.fail(f"{page.name}: `{command}` is refused: {refused}", pytrace=False)


@pytest.mark.parametrize(
    "command",
    [
        'make run ARGS="--train.architecture.convs-per-blok 2"',
        "make runn",
        ".venv/bin/clothes-stack upp",
        "prefect deployment run 'train-and-deploy/weekly' --param train='{\"epoch\": 5}'",
        "curl -X DELETE http://127.0.0.1:8080/models/clothes/v1",
        "--train.epochs many",
    ],
)
def test_a_misspelt_or_refused_command_fails_the_check(command):
    with pytest.raises((CommandRefused, AssertionError, ParameterTypeError)):
        check_command(command)


def test_every_console_script_is_checked():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert sorted(scripts) == sorted(SCRIPTS)
