"""What the server declines, said in its own terms: the data plane, the model store and the request
readers raise these; the HTTP edge (`serving.http.errors`) maps each kind to its status in one table,
as MLServer and KServe do, so nothing below the edge knows HTTP."""

from __future__ import annotations


class ServingError(Exception):
    """A request the server declines; `message` is what the client reads."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError, ValueError):
    """The client sent something that is not a valid image, batch of images or request body."""


class ImageTooLarge(InvalidInput):
    """An image (or a request's images) would cost more pixels to decode than the budget allows."""


class BodyTooLarge(ServingError):
    """A request body over the server's limit."""


class UnsupportedMediaType(ServingError):
    """A content type the route does not read."""


class ModelNotFound(ServingError):
    """No such model, or no such version of it, on this server."""


class PredictionNotFound(ServingError):
    """Feedback for a prediction id this server did not issue for that model version."""


class FeedbackDisabled(ServingError):
    """This server keeps no prediction log, so there is nothing to attach a label to."""

    def __init__(self) -> None:
        super().__init__(
            "this server does not log predictions (MLOPS_SERVE_PREDICTION_LOG_DIR), so it takes no feedback"
        )


class AlreadyLabelled(ServingError):
    """The prediction has a label; the first one stands."""


class Unauthorized(ServingError):
    """The route needs a bearer token and the request has none or another."""


class RateLimited(ServingError):
    """Too many requests of this kind; `retry_after` seconds until one is allowed again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
