"""The prediction log's record types, shared by the server that writes them and the monitor that
reads them (`tasks.monitoring.monitor`): one JSON object per line, told apart by `type`."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

import numpy as np

InputStat = Literal["mean", "std", "dark_fraction"]
INPUT_STATS: tuple[InputStat, ...] = ("mean", "std", "dark_fraction")
# The writer hands numpy columns to orjson (OPT_SERIALIZE_NUMPY); a reader gets lists.
Ints = list[int] | np.ndarray
Floats = list[float] | np.ndarray


class PredictionsLine(TypedDict):
    """One request's predictions as columns: entry i of each list belongs to image i."""

    type: Literal["predictions"]
    time: float
    model: str
    version: int
    ids: list[str]
    class_id: Ints
    confidence: Floats
    mean: Floats
    std: Floats
    dark_fraction: Floats
    ood_score: NotRequired[Floats]  # models exported with the out-of-distribution flag
    in_distribution: NotRequired[list[bool] | np.ndarray]
    probabilities: NotRequired[list[list[float]] | np.ndarray]  # (N, classes), 4 decimals; since 0.4.0
    pixels: NotRequired[list[str]]  # base64 of 28x28 uint8, with MLOPS_SERVE_PREDICTION_LOG_INPUTS


class FeedbackLine(TypedDict):
    type: Literal["feedback"]
    time: float
    model: str
    version: int
    id: str
    true_class_id: int
    reviewed: NotRequired[bool]  # a person chose the label (older records: unknown, treated as not)
    class_id: NotRequired[int]  # the class the prediction answered, read from its id (since 0.5.0)


class ShadowLine(TypedDict):
    """One mirrored request: production's answers and the shadow's, column by column (entry i: image i).
    `shadow_status` is the shadow's HTTP status; 0: no answer in time or no connection; -1: an answer
    that was not one prediction per image. The shadow's columns are there only when it answered."""

    type: Literal["shadow"]
    time: float
    model: str
    version: int  # production's version
    shadow_version: int
    ids: list[str]  # production's prediction ids: feedback on them labels both answers
    class_id: Ints
    confidence: Floats
    in_distribution: NotRequired[list[bool] | np.ndarray]
    seconds: float  # production's handling time
    shadow_status: int
    shadow_seconds: float  # the shadow's round trip, seen from production
    shadow_class_id: NotRequired[Ints]
    shadow_confidence: NotRequired[Floats]
    shadow_in_distribution: NotRequired[list[bool]]


class LogGapLine(TypedDict):
    """Written first after records were dropped (full disk, overload): how many are missing."""

    type: Literal["log_gap"]
    time: float
    dropped: int


class Prediction(TypedDict):
    """One image's prediction, as the monitor reads a `PredictionsLine`."""

    type: Literal["prediction"]
    time: float
    model: str
    version: int
    id: str
    class_id: int
    confidence: float
    mean: float
    std: float
    dark_fraction: float
    ood_score: NotRequired[float]
    in_distribution: NotRequired[bool]
    probabilities: NotRequired[list[float]]
    pixels: NotRequired[str]


Record = Prediction | FeedbackLine | LogGapLine | ShadowLine


def expand(line: PredictionsLine | FeedbackLine | LogGapLine | ShadowLine) -> list[Record]:
    """A columnar `predictions` line becomes one `prediction` record per image; others pass through."""
    if line["type"] != "predictions":
        return [line]
    predictions: list[Record] = []
    for i, record_id in enumerate(line["ids"]):
        item = Prediction(
            type="prediction",
            time=line["time"],
            model=line["model"],
            version=line["version"],
            id=record_id,
            class_id=line["class_id"][i],
            confidence=line["confidence"][i],
            mean=line["mean"][i],
            std=line["std"][i],
            dark_fraction=line["dark_fraction"][i],
        )
        if "ood_score" in line and "in_distribution" in line:
            item["ood_score"], item["in_distribution"] = line["ood_score"][i], bool(line["in_distribution"][i])
        if "probabilities" in line:
            item["probabilities"] = line["probabilities"][i]
        if "pixels" in line:
            item["pixels"] = line["pixels"][i]
        predictions.append(item)
    return predictions
