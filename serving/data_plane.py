"""The one data plane every protocol adapter delegates to (as in KServe and MLServer): the served models,
prediction ids, the prediction log, feedback and the settings, built once by the app factory. The
adapters (`serving.protocols`: the course's contract, TF Serving, OIP) only translate their wire format
to these calls and back, and import none of each other. It knows no HTTP: what it declines it raises as
a domain error (`serving.errors`)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from serving import metrics
from serving.errors import AlreadyLabelled, FeedbackDisabled, ModelNotFound, PredictionNotFound
from serving.log.capture import Capture
from serving.log.feedback import LabelledIds, PredictionIds, RateLimit, load_key, secret_from_file
from serving.log.object_store import ObjectStore
from serving.log.prediction_log import PredictionLog
from serving.mirror import CONFIG_FILE, Mirror, Offered, ShadowConfig
from serving.models.store import ModelStore, ServedModel
from serving.settings import ServingSettings

T = TypeVar("T")


@dataclass(frozen=True)
class Predicted:
    """One request's predictions: what every protocol adapter translates into its wire format."""

    probabilities: np.ndarray  # (N, classes)
    ids: list[str]  # feedback handles; empty when neither the answer nor the log needs them
    ood_scores: np.ndarray | None  # (N,) in 0-1; None for a version exported without the flag
    in_distribution: np.ndarray | None  # (N,) bool


@dataclass
class DataPlane:
    settings: ServingSettings
    models: ModelStore
    ids: PredictionIds
    labelled: LabelledIds
    feedback_rate: RateLimit
    log: PredictionLog | None = None
    mirror: Mirror | None = None  # shadow traffic, when the prediction log is on (its records go there)
    # Where CPU-heavy request work runs; the gevent worker installs its thread pool (`serving.server.worker`).
    offload: Callable[..., Any] | None = None

    @classmethod
    def build(cls, settings: ServingSettings) -> DataPlane:
        log, mirror, claims_store = None, None, None
        if settings.prediction_log_dir is not None:
            capture = None
            if settings.capture_url:
                capture = Capture(
                    settings.prediction_log_dir,
                    ObjectStore(settings.capture_url, timeout=10, attempts=4),  # off the request path: retry
                    settings.node or socket.gethostname(),
                    settings.capture_interval,
                    abandoned_seconds=2 * settings.prediction_log_rotate_seconds + 60,
                )
                claims_store = ObjectStore(settings.capture_url, timeout=2, attempts=1)  # on the request path
            log = PredictionLog(
                settings.prediction_log_dir,
                settings.prediction_log_max_bytes,
                settings.prediction_log_inputs,
                max_total_bytes=settings.prediction_log_max_total_bytes,
                max_age_seconds=settings.prediction_log_max_age_days * 86400,
                rotate_seconds=settings.prediction_log_rotate_seconds,
                capture=capture,
            )
            mirror = Mirror(settings.shadow_config or settings.prediction_log_dir / CONFIG_FILE, log)
        secret = secret_from_file(settings.feedback_secret_file) or settings.feedback_secret
        return cls(
            settings=settings,
            models=ModelStore.discover(settings.model_root),
            ids=PredictionIds(load_key(secret, settings.prediction_log_dir)),
            labelled=LabelledIds(settings.prediction_log_dir, store=claims_store),
            feedback_rate=RateLimit(settings.feedback_per_minute),
            log=log,
            mirror=mirror,
        )

    def find(self, name: str, version: int | None) -> ServedModel:
        """`version` None: the highest; an unknown model or version names what there is."""
        model = self.models.get(name, version)
        if model is None:
            if name not in self.models.models:
                raise ModelNotFound(f"unknown model '{name}'")
            versions = sorted(self.models.models[name])
            raise ModelNotFound(f"model '{name}' has no version {version}; versions: {versions}")
        return model

    def predict(self, model: ServedModel, batch: np.ndarray, *, answer_ids: bool = True) -> Predicted:
        """Probabilities, the out-of-distribution flag, and one id per image, the handle for feedback on
        that prediction: issued when the answer carries them or the prediction log records them (an HMAC
        each, a fifth of a batch's cost)."""
        probabilities, scores = model.predict(batch)
        class_ids = probabilities.argmax(axis=1)
        counts = np.bincount(class_ids, minlength=len(model.class_names))
        for class_id in np.flatnonzero(counts):
            metrics.predictions(model.name, model.version, model.class_names[class_id]).inc(int(counts[class_id]))
        if model.estimate is not None:
            metrics.estimated_correct(model.name, model.version).inc(model.estimate.likely_right(probabilities))
        in_distribution = None
        if scores is not None and model.ood is not None:
            in_distribution = scores <= model.ood.threshold
            flagged = len(scores) - int(np.count_nonzero(in_distribution))
            if flagged:
                metrics.ood_predictions(model.name, model.version).inc(flagged)
        ids: list[str] = []
        if answer_ids or self.log is not None:
            ids = self.ids.issue(model.name, model.version, class_ids.tolist())
        if self.log is not None:
            self.log.log_predictions(ids, model.name, model.version, probabilities, batch, scores, in_distribution)
        return Predicted(probabilities, ids, scores, in_distribution)

    def mirrored(
        self,
        shadow: ShadowConfig,
        model: ServedModel,
        predicted: Predicted,
        body: bytes,
        content_type: str,
        started: float,
    ) -> Offered:
        """A classification as the mirror sends it again: the client's own body, production's answers."""
        class_ids = predicted.probabilities.argmax(axis=1)
        confidence = predicted.probabilities[np.arange(len(class_ids)), class_ids]
        return Offered(
            shadow,
            body,
            content_type,
            model.name,
            model.version,
            predicted.ids,
            class_ids,
            confidence,
            predicted.in_distribution,
            time.perf_counter() - started,
        )

    def record_feedback(self, model: ServedModel, prediction_id: str, class_id: int, reviewed: bool = False) -> None:
        """The true label of a prediction this server issued; the first label stands."""
        if self.log is None:
            raise FeedbackDisabled()
        if not self.ids.verify(prediction_id, model.name, model.version):
            made_by = f"{model.name} v{model.version}"
            raise PredictionNotFound(f"no prediction with id '{prediction_id}' was made by {made_by} here")
        if not self.labelled.claim(prediction_id):
            raise AlreadyLabelled(f"prediction '{prediction_id}' is already labelled; the first label stands")
        self.log.log_feedback(
            prediction_id,
            model.name,
            model.version,
            class_id,
            reviewed,
            answered=self.ids.answered(prediction_id),
            classes=len(model.class_names),
        )

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run CPU-heavy work (multipart parsing, image decoding) where it does not stall other requests:
        one native thread per gevent worker, so large uploads queue behind each other while the event loop
        keeps answering everything else. Elsewhere (threads, tests) a plain call."""
        return self.offload(function, *args) if self.offload else function(*args)
