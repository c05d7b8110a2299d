"""The Flask app with its data plane and route table as typed attributes, and the accessors a route
handler uses to reach them for the request it is answering."""

from __future__ import annotations

from typing import cast

from flask import Flask, current_app

from serving.data_plane import DataPlane
from serving.http.route_table import Route, register


class ServingApp(Flask):
    """The Flask app with its data plane and its route table as typed attributes (no string-keyed
    `extensions`)."""

    def __init__(self, import_name: str, plane: DataPlane, routes: list[Route]) -> None:
        super().__init__(import_name)
        self.plane, self.routes = plane, routes
        register(self, routes)


def serving_app() -> ServingApp:
    """The app handling the current request."""
    return cast(ServingApp, current_app)


def data_plane() -> DataPlane:
    """The data plane of the app handling the current request."""
    return serving_app().plane
