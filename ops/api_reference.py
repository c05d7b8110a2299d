"""docs/api/openapi.json: the server's OpenAPI document as a production server with the Fashion-MNIST
model answers it at `/openapi.json`, written from the same route table and schemas (`serving.protocols.openapi`) so
the rendered API reference (docs/api.md) cannot drift from the code: `make docs` writes it, and a test
fails when the committed file differs from what this prints."""

from __future__ import annotations

import json
import sys

from serving.app import ROUTES
from serving.protocols.openapi import openapi_document
from serving.settings import ServingSettings
from tasks.data.dataset import FASHION_MNIST_CLASSES


def render() -> str:
    listing = [{"name": "clothes", "versions": [1], "latest": 1}]
    document = openapi_document(ROUTES, listing, list(FASHION_MNIST_CLASSES), ServingSettings().max_batch)
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
