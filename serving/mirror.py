"""Shadow traffic: a sampled share of production's classifications is sent again, as the client sent
it, to a candidate running beside production (a shadow that answers no user), and each pair of answers
is written to the prediction log as one `shadow` record for the release's analysis.

Nothing a client can reach starts, stops or redirects it: the release writes a small JSON file into
the deployment's own prediction-log directory (`shadow.json`: url, model, sample, timeout), which each
worker re-reads when it changes. The mirror never hurts production: a request is offered only after
its answer was sent (WSGI close), through a bounded queue that drops and counts when full, and one
sender per worker with a short timeout; a slow, dead or failing shadow only shows in the records."""

from __future__ import annotations

import http.client
import logging
import os
import queue
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from serving import metrics
from serving.log.prediction_log import PredictionLog
from serving.log.records import ShadowLine

log = logging.getLogger(__name__)
CONFIG_FILE = "shadow.json"


@dataclass(frozen=True)
class ShadowConfig:
    """Where and how much to mirror; the release writes it, the server only reads it."""

    url: str  # the shadow's base URL, e.g. http://127.0.0.1:41234
    model: str  # only this model's classifications are mirrored
    version: int  # the candidate version the shadow serves
    sample: float  # share of requests mirrored, 0-1
    timeout: float = 2.0  # seconds the sender waits for the shadow's answer

    @classmethod
    def from_file(cls, path: Path) -> ShadowConfig | None:
        """The configuration, or None when there is none or it is not valid (said once in the log)."""
        try:
            raw = orjson.loads(path.read_bytes())
            config = cls(
                url=str(raw["url"]).rstrip("/"),
                model=str(raw["model"]),
                version=int(raw["version"]),
                sample=float(raw["sample"]),
                timeout=float(raw.get("timeout", 2.0)),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("shadow configuration %s not valid (%s): not mirroring", path, exc)
            return None
        if not config.url.startswith(("http://", "https://")) or not 0 <= config.sample <= 1:
            log.warning("shadow configuration %s: url must be http(s) and sample within 0-1: not mirroring", path)
            return None
        return config


@dataclass
class Offered:
    """One classification production answered, waiting to be sent to the shadow."""

    config: ShadowConfig
    body: bytes
    content_type: str
    model: str
    version: int
    ids: list[str]
    class_id: np.ndarray
    confidence: np.ndarray
    in_distribution: np.ndarray | None
    seconds: float  # production's own handling time


class Mirror:
    """Per worker: the configuration (re-read at most every `check_seconds`), the bounded queue and the
    sender thread, made lazily in the process that mirrors (after gunicorn's fork and gevent's patching)."""

    def __init__(
        self, config_path: Path, prediction_log: PredictionLog, max_queue: int = 64, check_seconds: float = 2.0
    ) -> None:
        self.config_path = config_path
        self.prediction_log = prediction_log
        self.max_queue = max_queue
        self.check_seconds = check_seconds
        self._config: ShadowConfig | None = None
        self._checked = 0.0
        self._mtime: float | None = None
        self._queue: queue.Queue[Offered] | None = None
        self._pid: int | None = None

    def config(self) -> ShadowConfig | None:
        now = time.monotonic()
        if now - self._checked >= self.check_seconds:
            self._checked = now
            try:
                mtime: float | None = self.config_path.stat().st_mtime
            except OSError:
                mtime = None
            if mtime != self._mtime:
                self._mtime = mtime
                self._config = ShadowConfig.from_file(self.config_path) if mtime is not None else None
        return self._config

    def wants(self, model: str) -> ShadowConfig | None:
        """The configuration when this request of `model` is to be mirrored (sampled), else None."""
        config = self.config()
        if config is None or config.model != model or random.random() >= config.sample:
            return None
        return config

    def offer(self, item: Offered) -> None:
        """Queue a classification for the shadow; never blocks: a full queue drops and counts it."""
        if self._pid != os.getpid():
            self._start()
        assert self._queue is not None
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            metrics.SHADOW_DROPPED.inc()

    def _start(self) -> None:
        """This process's queue and sender, made at its first mirrored request: in a gunicorn worker that
        is after the fork and after gevent patched `threading` and `queue`."""
        self._queue = queue.Queue(self.max_queue)
        self._pid = os.getpid()
        threading.Thread(target=self._send_loop, args=(self._queue,), name="shadow-mirror", daemon=True).start()

    def _send_loop(self, jobs: queue.Queue[Offered]) -> None:
        shadow = Connection()
        while True:
            item = jobs.get()
            try:
                self.prediction_log.log_shadow(paired_record(item, *shadow.send(item)))
            except Exception:  # a bug here must not end the sender: the next request is mirrored again
                log.exception("shadow mirror: could not pair a request")


class Connection:
    """One kept-alive connection to the shadow per sender (a new one per request costs production more
    CPU than the request itself); opened again after any failure or when the shadow changes."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.connection: http.client.HTTPConnection | None = None

    def open(self, config: ShadowConfig) -> http.client.HTTPConnection:
        if self.connection is None or self.url != config.url:
            self.close()
            parts = urllib.parse.urlsplit(config.url)
            kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            self.connection, self.url = kind(parts.netloc, timeout=config.timeout), config.url
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None

    def send(self, item: Offered) -> tuple[int, float, list[dict] | None]:
        """(status, seconds, predictions), counted in /metrics: status 0 when the shadow did not answer in
        time or refused the connection, -1 when its 200 was not one prediction per image."""
        config = item.config
        path = f"{urllib.parse.urlsplit(config.url).path}/models/{config.model}/v{config.version}"
        started = time.perf_counter()
        try:
            connection = self.open(config)
            connection.request("POST", path, item.body, {"Content-Type": item.content_type})
            response = connection.getresponse()
            status, body = response.status, response.read()
            if response.will_close:
                self.close()
        except (OSError, http.client.HTTPException, ValueError):  # refused, reset, timed out
            self.close()
            status, body = 0, b""
        seconds = time.perf_counter() - started
        predictions = shadow_predictions(body, len(item.ids)) if status == 200 else None
        if status == 200 and predictions is None:
            status = -1  # answered 200 with something that is not one prediction per image
        metrics.SHADOW_MIRRORED.inc()
        if status != 200:
            metrics.SHADOW_ERRORS.inc()
        return status, seconds, predictions


def shadow_predictions(body: bytes, images: int) -> list[dict] | None:
    """The shadow's predictions, one per image sent, each with a class id and a confidence; else None."""
    try:
        predictions = orjson.loads(body).get("predictions")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(predictions, list) or len(predictions) != images:
        return None
    usable = all(isinstance(p, dict) and isinstance(p.get("class_id"), int) for p in predictions)
    return predictions if usable else None


def paired_record(item: Offered, status: int, seconds: float, predictions: list[dict] | None) -> ShadowLine:
    """Production's and the shadow's answers to one request, column by column (one entry per image)."""
    record = ShadowLine(
        type="shadow",
        time=time.time(),
        model=item.model,
        version=item.version,
        shadow_version=item.config.version,
        ids=item.ids,
        class_id=item.class_id,
        confidence=item.confidence,
        seconds=item.seconds,
        shadow_status=status,
        shadow_seconds=seconds,
    )
    if item.in_distribution is not None:
        record["in_distribution"] = item.in_distribution
    if predictions is not None:
        record["shadow_class_id"] = [p["class_id"] for p in predictions]
        record["shadow_confidence"] = [float(p.get("confidence", 0.0)) for p in predictions]
        flags = [p.get("in_distribution") for p in predictions]
        if all(isinstance(f, bool) for f in flags):
            record["shadow_in_distribution"] = [bool(f) for f in flags]  # all bools already
    return record
