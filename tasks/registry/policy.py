"""The registry policy: a candidate enters as `challenger`; `champion` moves only after the release
stage proved the candidate's image, and a rollback moves it back."""

from __future__ import annotations

import json

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from serving.preprocessing import to_model_input
from tasks.data.dataset import Dataset
from tasks.evaluation.gates import GateResult, as_records
from tasks.evaluation.metrics import Evaluation
from tasks.params import ModelRef, TrainParams, Trigger
from tasks.tracking import CHALLENGER, CHAMPION, champion_version

MODEL_CARD = "model_card.json"
CARD_FORMAT = 1  # `format` in every card; a reader of another format refuses it
# Pinned so MLflow does not spend ~10 s inferring requirements by importing the model.
MODEL_PIP_REQUIREMENTS = ["tensorflow-cpu==2.21.*", "keras>=3.10,<4", "numpy<3"]


def log_candidate_model(model, example_pixels: np.ndarray) -> str:
    """Log the Keras model (TensorFlow flavour) with signature and input example into the active run;
    return its model URI."""
    import keras

    # MLflow checks the example by predicting it; Keras would print a step bar into the run's console.
    keras.config.disable_interactive_logging()
    example = to_model_input(example_pixels)
    signature = infer_signature(example, np.asarray(model(example, training=False)))
    info = mlflow.tensorflow.log_model(
        model, name="model", signature=signature, input_example=example, pip_requirements=MODEL_PIP_REQUIREMENTS
    )
    return info.model_uri


def logged_model_uri(run_id: str) -> str | None:
    """The model a run already logged (a retried registration logs it once), or None."""
    run = MlflowClient().get_run(run_id)
    found = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = 'model'",
        output_format="list",
    )
    return found[0].model_uri if found else None


def run_version(name: str, run_id: str) -> ModelRef | None:
    """The version registered from `run_id`, if any: a retry after the version was made reuses it."""
    found = MlflowClient().search_model_versions(f"name = '{name}' AND run_id = '{run_id}'")
    return ModelRef(name, min(int(v.version) for v in found)) if found else None


def register_candidate(
    model_uri: str, name: str, tags: dict[str, str], description: str = "", run_id: str | None = None
) -> ModelRef:
    """The registry version of `model_uri` with alias `challenger`; `champion` only moves after the smoke
    test. Safe to repeat: the version `run_id` already registered is reused, the rest is set again."""
    client = MlflowClient()
    try:
        client.create_registered_model(name, description="Fashion-MNIST clothes classifier")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    ref = run_version(name, run_id) if run_id else None
    if ref is None:
        ref = ModelRef(name, int(mlflow.register_model(model_uri, name, tags=tags).version))
    if description:
        client.update_model_version(name, str(ref.version), description=description)
    client.set_registered_model_alias(name, CHALLENGER, str(ref.version))
    return ref


def model_card(
    run_id: str,
    commit: str,
    dataset: Dataset,
    evaluation: Evaluation,
    gates: list[GateResult],
    train: TrainParams,
    trigger: Trigger,
) -> dict:
    """Everything known about a candidate at registration, kept whole as `model_card.json` in its run:
    the registry shows only the few tags of `version_tags`."""
    return {
        "format": CARD_FORMAT,
        "run_id": run_id,
        "git_commit": commit,
        "trigger": trigger.model_dump(),
        "data": {
            "source": dataset.source,
            "digest": dataset.digest,
            "class_names": list(dataset.class_names),
            "train_examples": len(dataset.y_train),
            "test_examples": len(dataset.y_test),
        },
        "test": {"accuracy": evaluation.accuracy, "macro_f1": evaluation.macro_f1},
        "gates": as_records(gates),
        "train": train.flat(),
    }


def version_tags(card: dict) -> dict[str, str]:
    """The few tags a user filters or compares versions on in the registry page."""
    failed = [gate["name"] for gate in card["gates"] if not gate["passed"]]
    return {
        "gates": "fail: " + ", ".join(failed) if failed else "pass",
        "test_accuracy": f"{card['test']['accuracy']:.4f}",
        "data.digest": card["data"]["digest"],
        "git_commit": card["git_commit"],
        "trigger": card["trigger"]["kind"],
        "run_id": card["run_id"],
    }


def card_of(version: ModelVersion) -> dict:
    return checked_card(
        mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{MODEL_CARD}"), f"{version.name} v{version.version}"
    )


def checked_card(card: dict, whose: str) -> dict:
    """`card` when it is of the format this code reads (cards of 0.1.x say none: they are format 1)."""
    if card.get("format", 1) != CARD_FORMAT:
        raise ValueError(
            f"the {MODEL_CARD} of {whose} has format {card['format']}; this code reads format {CARD_FORMAT}"
        )
    return card


def promote_version(ref: ModelRef, tags: dict[str, str], record_previous: bool = True) -> ModelRef | None:
    """Move `champion` to `ref`; returns the version that held it. `previous_champion` on the new
    champion is what a rollback returns to (a rollback itself does not overwrite it)."""
    client = MlflowClient()
    previous = champion_version(ref.name)
    previous_ref = ModelRef(ref.name, int(previous.version)) if previous else None
    if previous is not None and previous_ref == ref:  # a retry after the alias moved: the one it recorded
        recorded = previous.tags.get("previous_champion")
        previous_ref = ModelRef(ref.name, int(recorded)) if recorded else None
    all_tags = dict(tags)
    if record_previous and previous_ref and previous_ref != ref:
        all_tags["previous_champion"] = str(previous_ref.version)
    for key, value in all_tags.items():
        client.set_model_version_tag(ref.name, str(ref.version), key, value)
    client.set_registered_model_alias(ref.name, CHAMPION, str(ref.version))
    return previous_ref


def trained_alike(card: dict, digest: str, train: TrainParams, commit: str) -> bool:
    """True when a version's card names the same data, training parameters and code: training again would
    make the same model (training is seeded), so there is nothing new to register."""
    return (
        commit != "unknown"
        and card.get("git_commit") == commit
        and card.get("data", {}).get("digest") == digest
        and card.get("train") == json.loads(json.dumps(train.flat()))
    )


@task(name="find-unchanged-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def unchanged_champion_task(name: str, digest: str, train: TrainParams, commit: str) -> ModelRef | None:
    """The champion, when this run would train it again: same data digest, parameters and code."""
    version = champion_version(name)
    if version is None or not trained_alike(card_of(version), digest, train, commit):
        return None
    return ModelRef(name, int(version.version))


@task(name="find-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def champion_version_task(name: str) -> ModelVersion | None:
    """`champion_version` with retries: the release reads it before deploying, to restore on failure."""
    return champion_version(name)


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def register_task(run_id: str, model, dataset: Dataset, name: str, card: dict) -> ModelRef:
    """Into the active run: the model and its card; then the registry version with the card's few tags.
    Retried, it logs the model and registers the version once (each step finds what a failed attempt did)."""
    model_uri = logged_model_uri(run_id) or log_candidate_model(model, dataset.x_test[:1])
    mlflow.log_dict(card, MODEL_CARD)
    ref = register_candidate(model_uri, name, version_tags(card), version_description(card), run_id)
    MlflowClient().set_tag(run_id, "candidate_status", f"registered as {ref}")
    get_run_logger().info("registered %s with alias '%s'", ref, CHALLENGER)
    return ref


def version_description(card: dict) -> str:
    train = ", ".join(f"{k}={v}" for k, v in card["train"].items())
    data = card["data"]
    return (
        f"Trained in run {card['run_id']} (trigger: {card['trigger']['kind']}) on data {data['digest'][:12]} "
        f"({data['train_examples']} training examples): test accuracy {card['test']['accuracy']:.4f}. "
        f"Training: {train}. Everything else: {MODEL_CARD} in the run's artifacts."
    )
