"""The champion judged on this run's own test split and hold-out, image by image, so that every gate
comparing the candidate with it is paired."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.data.dataset import Dataset
from tasks.evaluation.gates import ChampionScore
from tasks.evaluation.holdout import correct_answers
from tasks.evaluation.metrics import predict_probabilities
from tasks.evaluation.slices import Slices
from tasks.params import ModelRef
from tasks.tracking import champion_version, load_model_version


@task(name="evaluate-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def champion_score_task(name: str, dataset: Dataset, slices: Slices) -> ChampionScore | None:
    """The champion re-evaluated on this run's test set and hold-out, so the regression gates compare
    like with like."""
    version = champion_version(name)
    logger = get_run_logger()
    if version is None:
        logger.info("no champion for model '%s' yet", name)
        return None
    ref = ModelRef(name, int(version.version))
    model = load_model_version(ref)
    predicted = predict_probabilities(model, dataset.x_test).argmax(axis=1)
    score = ChampionScore(ref, correct_answers(model, dataset, slices, predicted), predicted)
    logger.info("champion v%s scores %.4f on this test set", ref.version, score.accuracy)
    return score
