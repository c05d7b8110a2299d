"""The inference server that goes into the image: no Prefect, MLflow or training imports here."""

from typing import Any


def create_app(*args: Any, **kwargs: Any) -> Any:
    """`serving.create_app(model_root)`; imported lazily so the pipeline can use the preprocessing
    without loading Flask."""
    from serving.app import create_app as _create_app

    return _create_app(*args, **kwargs)
