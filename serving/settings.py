"""Server settings, read from the environment (prefix ``MLOPS_SERVE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLOPS_SERVE_", extra="ignore")

    model_root: Path = Field(default=Path("models"), description="holds <name>/<version>/ model directories")
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=2, ge=1, description="gunicorn worker processes")
    threads: int = Field(default=4, ge=1, description="threads per worker (keep-alive connections)")
    timeout: int = Field(default=30, ge=1, description="seconds before a stuck worker is restarted")
    graceful_timeout: int = Field(default=10, ge=1, description="seconds to finish requests on SIGTERM")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="larger requests get 413")
    reuse_port: bool = Field(default=False, description="SO_REUSEPORT: old and new server share the port")
    private_port: int | None = Field(default=None, description="extra port only this instance binds")
    prediction_log_dir: Path | None = Field(default=None, description="JSON Lines prediction log; unset: off")
    prediction_log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="rotate files at this size")
    prediction_log_inputs: bool = Field(default=False, description="also store each input (784 bytes, base64)")
    max_batch: int = Field(default=1024, ge=1, description="images per request")
