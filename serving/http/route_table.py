"""Every HTTP route of the server as one table of records: the app registers its Flask rules from it and
`serving.protocols.openapi` documents its paths, parameters and error statuses from it, so what is served and what
is documented cannot drift apart (tests/serving/test_statuses.py sends a request for every documented
status and gets it). Each protocol adapter declares its rows beside its handlers."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask
from werkzeug.routing import BaseConverter

_VARIABLE = re.compile(r"<(?:\w+:)?(\w+)>")
# Answered for the server, not by a handler: a request body that does not arrive in time (the gevent
# worker, serving.server.worker) and one over MLOPS_SERVE_MAX_BODY_BYTES (Werkzeug, before the handler reads it).
BODY_ERRORS = (408, 413)


class ModelNameConverter(BaseConverter):
    """A model name never holds ':', so `/v1/models/clothes:predict` is never read as a model named
    'clothes:predict' (whose GET would otherwise make 405 answers list GET as allowed)."""

    regex = "[^/:]+"


@dataclass(frozen=True)
class Route:
    rule: str  # Flask's rule, e.g. "/models/<name>/v<int:version>"
    method: str  # "GET" or "POST"
    view: Callable[..., Any]
    doc: str  # the operation `serving.protocols.openapi` documents for it (summary, bodies, success answer)
    errors: tuple[int, ...] = ()  # every error status it answers besides BODY_ERRORS

    @property
    def path(self) -> str:
        """The OpenAPI path template: `/models/{name}/v{version}`."""
        return _VARIABLE.sub(r"{\1}", self.rule)

    @property
    def variables(self) -> list[str]:
        return _VARIABLE.findall(self.rule)

    @property
    def statuses(self) -> tuple[int, ...]:
        """Every error status documented for it: its own, plus the body errors of a route that reads one."""
        return tuple(sorted(set(self.errors) | (set(BODY_ERRORS) if self.method == "POST" else set())))


def register(app: Flask, routes: list[Route]) -> None:
    app.url_map.converters["model"] = ModelNameConverter
    for route in routes:
        endpoint = f"{route.view.__module__.rsplit('.', 1)[-1]}.{route.view.__name__}"
        app.add_url_rule(route.rule, endpoint, route.view, methods=[route.method])
