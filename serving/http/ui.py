"""What a person opens in a browser: the upload page at `/` (static files of `serving/static/`, which
call the public API like any client) and Swagger UI at `/docs/` over `/openapi.json`. Swagger UI's
assets ship inside the `flask-swagger-ui` package, so nothing is fetched from the network, and both
work in the read-only image."""

from __future__ import annotations

from flask import Flask
from flask_swagger_ui import get_swaggerui_blueprint

DOCS = "/docs"
# Endpoints that are pages, not API: the OpenAPI document leaves them out.
UI_ENDPOINTS = frozenset({"static", "upload_page", "swagger_ui.show"})


def register_ui(app: Flask) -> None:
    app.add_url_rule("/", "upload_page", lambda: app.send_static_file("index.html"))
    app.register_blueprint(
        get_swaggerui_blueprint(DOCS, "/openapi.json", config={"app_name": "Clothes classifier API"})
    )
