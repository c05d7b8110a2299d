"""Prometheus metrics; in multi-process mode (gunicorn sets PROMETHEUS_MULTIPROC_DIR) every worker
writes to shared files so /metrics shows the whole server, not one worker."""

from __future__ import annotations

import os
from functools import cache, lru_cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

REQUESTS = Counter("clothes_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "clothes_http_request_duration_seconds",
    "Request latency",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PREDICTIONS = Counter("clothes_predictions_total", "Predicted images per class", ["model", "version", "label"])
ESTIMATED_CORRECT = Counter(
    "clothes_estimated_correct",
    "Classified images estimated right without labels (confidence above the model's ATC threshold); "
    "its rate over clothes_predictions_total's is the estimated accuracy",
    ["model", "version"],
)
OOD_PREDICTIONS = Counter(
    "clothes_ood_predictions",
    "Images flagged as not like the training garments (in_distribution false)",
    ["model", "version"],
)


@lru_cache(maxsize=1024)  # bounded: the method is whatever the client sent
def requests(endpoint: str, method: str, status: int) -> Counter:
    """The labelled child, looked up once: `labels()` costs ~10 us on every request otherwise."""
    return REQUESTS.labels(endpoint, method, str(status))


@cache
def latency(endpoint: str) -> Histogram:
    return LATENCY.labels(endpoint)


@cache
def predictions(model: str, version: int, label: str) -> Counter:
    return PREDICTIONS.labels(model, str(version), label)


@cache
def estimated_correct(model: str, version: int) -> Counter:
    return ESTIMATED_CORRECT.labels(model, str(version))


@cache
def ood_predictions(model: str, version: int) -> Counter:
    return OOD_PREDICTIONS.labels(model, str(version))


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


LOG_DROPPED = Counter("clothes_prediction_log_dropped_total", "Predictions not written to the prediction log")
LOG_WRITE_ERRORS = Counter("clothes_prediction_log_write_errors_total", "Failed prediction-log writes")
LOG_COMPRESSED = Counter("clothes_prediction_log_compressed_files_total", "Rotated prediction-log files gzipped")
LOG_REMOVED_FILES = Counter(
    "clothes_prediction_log_removed_files_total", "Rotated prediction-log files removed (size or age bound)"
)
LOG_REMOVED_BYTES = Counter("clothes_prediction_log_removed_bytes_total", "Bytes of prediction-log files removed")
MODELS_FAILED = Gauge(
    "clothes_model_versions_failed",
    "Model versions that could not be loaded",
    ["model", "version"],
    multiprocess_mode="max",
)
SHADOW_MIRRORED = Counter("clothes_shadow_mirrored_total", "Classifications sent again to the shadow")
SHADOW_DROPPED = Counter("clothes_shadow_dropped_total", "Classifications not mirrored: the mirror's queue was full")
SHADOW_ERRORS = Counter(
    "clothes_shadow_errors_total", "Mirrored classifications the shadow did not answer with 200 in time"
)
CAPTURE_FILES = Counter("clothes_capture_shipped_files_total", "Prediction logs and summaries shipped to the store")
CAPTURE_BYTES = Counter("clothes_capture_shipped_bytes_total", "Bytes shipped to the store")
CAPTURE_ERRORS = Counter("clothes_capture_errors_total", "Shipping passes the store refused or did not answer")
CAPTURE_WAITING_FILES = Gauge(
    "clothes_capture_waiting_files", "Files on the local disk waiting for the store", multiprocess_mode="livemax"
)
CAPTURE_WAITING_BYTES = Gauge(
    "clothes_capture_waiting_bytes", "Bytes on the local disk waiting for the store", multiprocess_mode="livemax"
)
CAPTURE_LAST_SUCCESS = Gauge(
    "clothes_capture_last_success_timestamp_seconds", "When the store last took a file", multiprocess_mode="max"
)
CLAIM_FALLBACKS = Counter(
    "clothes_feedback_claim_fallbacks_total", "Feedback claims decided on this node alone: the store did not answer"
)
