"""Server settings, read from the environment (prefix ``MLOPS_SERVE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.preprocessing import MAX_IMAGE_PIXELS

# Settings a release bakes into its image (`container.serving`): under the environment, which wins.
IMAGE_SETTINGS_FILE = Path("/etc/clothes/serving.env")


class ServingSettings(BaseSettings):
    """The inference server's own settings: the image carries nothing of the pipeline's. Read from the
    environment, then from /etc/clothes/serving.env, where a release bakes the settings it was given
    (`container.serving`) into its image."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_SERVE_", extra="ignore", env_file=IMAGE_SETTINGS_FILE)

    model_root: Path = Field(default=Path("models"), description="holds <name>/<version>/ model directories")
    host: str = Field(default="0.0.0.0", description="the address to listen on (`make serve`: 127.0.0.1)")
    port: int = Field(default=8080, ge=1, le=65535, description="the port to listen on")
    workers: int = Field(default=2, ge=1, description="gunicorn worker processes")
    timeout: int = Field(default=30, ge=1, description="seconds before a stuck worker is restarted")
    graceful_timeout: int = Field(default=10, ge=1, description="seconds to finish requests on SIGTERM")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="larger requests get 413")
    reuse_port: bool = Field(default=False, description="SO_REUSEPORT: old and new server share the port")
    private_port: int | None = Field(default=None, description="extra port only this instance binds")
    health_socket: Path | None = Field(
        default=None, description="Unix socket only this instance binds; the healthcheck asks there, never a twin"
    )
    prediction_log_dir: Path | None = Field(default=None, description="JSON Lines prediction log; unset: off")
    prediction_log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="rotate files at this size")
    prediction_log_max_total_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="all prediction-log files together; the oldest rotated go first"
    )
    prediction_log_max_age_days: float = Field(default=30, gt=0, description="rotated files older than this go")
    prediction_log_rotate_seconds: float = Field(
        default=60, ge=1, description="also rotate at every multiple of this on the clock (at most an hour)", le=3600
    )
    capture_url: str | None = Field(
        default=None,
        description="s3://<bucket>/<prefix> every replica ships its closed prediction logs and minute summaries "
        "to, and claims labelled ids in; endpoint and credentials: the AWS_* variables (AWS_ENDPOINT_URL_S3, "
        "AWS_SHARED_CREDENTIALS_FILE, ...); unset: local only",
    )
    capture_interval: float = Field(default=5, gt=0, description="seconds between looks for files to ship")
    node: str | None = Field(
        default=None, description="this machine's name in captured files' keys (swarm: the node's); unset: host name"
    )
    shadow_config: Path | None = Field(
        default=None,
        description="the file a release writes to mirror a sample of classifications to a shadow "
        "(re-read when it changes); unset: shadow.json in the prediction-log directory",
    )
    prediction_log_inputs: bool = Field(default=False, description="also store each input (784 bytes, base64)")
    preprocess: bool = Field(
        default=True,
        description="convert every image to the dataset's form (negate light backgrounds, trim, scale, centre); "
        "false: squeeze the whole frame to 28x28",
    )
    max_batch: int = Field(default=1024, ge=1, description="images (JSON) or files (multipart) per request")
    header_timeout: int = Field(
        default=5, gt=0, description="seconds to receive a request's headers (and keep-alive idle time)"
    )
    body_timeout: float = Field(default=10, gt=0, description="seconds to receive a request's body; then 408")
    worker_connections: int = Field(default=512, ge=1, description="open connections per worker")
    max_image_pixels: int = Field(
        default=MAX_IMAGE_PIXELS, ge=784, description="decoded pixels per image file (JPEG: after DCT downscaling)"
    )
    max_request_pixels: int = Field(
        default=2_000_000, ge=784, description="decoded pixels of all image files in one request"
    )
    feedback_token: str | None = Field(default=None, description="bearer token feedback must carry; unset: none")
    feedback_secret: str | None = Field(
        default=None, description="HMAC key of prediction ids (shared by all workers/replicas); unset: random per start"
    )
    feedback_secret_file: Path | None = Field(
        default=None, description="file holding that key (a mounted Docker/Kubernetes secret); wins over the above"
    )
    feedback_per_minute: int = Field(default=600, ge=1, description="feedback requests per minute per worker")

    @model_validator(mode="after")
    def _capture_needs_the_log(self) -> ServingSettings:
        if self.capture_url and self.prediction_log_dir is None:
            raise ValueError("capture_url ships the prediction log: set prediction_log_dir too")
        return self
