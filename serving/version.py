"""The package's version: pyproject.toml reads it, the server reports it (`GET /v2`)."""

__version__ = "0.5.1"
