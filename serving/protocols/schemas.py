"""Request and response bodies, declared once as types: the routes validate requests with them and
`serving.protocols.openapi` generates /openapi.json from them, so the document cannot drift from the server.

Pixel arrays are validated by numpy (`serving.preprocessing`), 100x faster than walking 784 numbers
per image in Python; the types carry the JSON Schema that describes them. Limits that are server
settings (images per request) are answered with 413 and described, not validated by the schema.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, NotRequired

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from serving.errors import ImageTooLarge, InvalidInput
from serving.preprocessing import IMAGE_SIZE, Preprocessing, pixels_from_nested

BATCH_LIMIT = "at most MLOPS_SERVE_MAX_BATCH images (default 1024); more: 413"


def _image_schema(maximum: float, channel: bool = False) -> dict:
    """28x28 numbers in 0..maximum, or 28x28x1 with `channel`."""
    pixel: dict = {"type": "number", "minimum": 0, "maximum": maximum}
    if channel:
        pixel = {"type": "array", "minItems": 1, "maxItems": 1, "items": pixel}
    row = {"type": "array", "minItems": IMAGE_SIZE, "maxItems": IMAGE_SIZE, "items": pixel}
    return {"type": "array", "minItems": IMAGE_SIZE, "maxItems": IMAGE_SIZE, "items": row}


def _batch_schema(maximum: float, named: bool = False) -> list[dict]:
    """A batch holds images of one form: all 28x28 or all 28x28x1 (with `named`, as {"image": ...})."""
    forms = []
    for channel in (False, True):
        item = _image_schema(maximum, channel)
        if named:
            item = {
                "type": "object",
                "required": ["image"],
                "additionalProperties": False,
                "properties": {"image": item},
            }
        forms.append({"type": "array", "minItems": 1, "items": item})
    return forms


def check_batch_size(items: object, max_batch: int | None) -> None:
    """The per-request image limit (MLOPS_SERVE_MAX_BATCH): a list's length or a count of images."""
    count = len(items) if isinstance(items, list) else items
    if isinstance(count, int) and max_batch is not None and count > max_batch:
        raise ImageTooLarge(f"at most {max_batch} images per request, got {count}")


def _one_image(value: Any) -> np.ndarray:
    return pixels_from_nested(value, batch=False)


def _images(value: Any, info: ValidationInfo) -> np.ndarray:
    check_batch_size(value, (info.context or {}).get("max_batch"))
    return pixels_from_nested(value, batch=True)


def _instances(value: Any, info: ValidationInfo) -> np.ndarray:
    """TF Serving instances: model inputs in 0-1, bare or named `{"image": ...}`; returns (N, 28, 28)."""
    if isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
        if not all(set(i) == {"image"} for i in value):
            raise InvalidInput("named instances must have the single input 'image'")
        value = [i["image"] for i in value]
    check_batch_size(value, (info.context or {}).get("max_batch"))
    return pixels_from_nested(value, batch=True, max_value=1.0)


Image = Annotated[
    np.ndarray,
    PlainValidator(_one_image),
    WithJsonSchema({"anyOf": [_image_schema(255), _image_schema(255, channel=True)], "description": "pixels 0-255"}),
]
ImageBatch = Annotated[
    np.ndarray, PlainValidator(_images), WithJsonSchema({"anyOf": _batch_schema(255), "description": BATCH_LIMIT})
]
Instances = Annotated[
    np.ndarray,
    PlainValidator(_instances),
    WithJsonSchema({"anyOf": [*_batch_schema(1.0), *_batch_schema(1.0, named=True)], "description": BATCH_LIMIT}),
]


def _others_not_allowed(schema: dict[str, Any], cls: type) -> None:
    fields = [name for name in cls.alternatives if name not in cls.model_fields]  # type: ignore[attr-defined]
    schema["not"] = {"required": fields}


class _OneOf(BaseModel):
    """A body holding exactly one of `alternatives`: the one field its subclass declares."""

    alternatives: ClassVar[tuple[str, ...]] = ()
    model_config = ConfigDict(arbitrary_types_allowed=True, json_schema_extra=_others_not_allowed)

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if isinstance(data, dict) and sum(name in data for name in cls.alternatives) != 1:
            names = " or ".join(map(repr, cls.alternatives))
            raise ValueError(f"JSON body must be an object with exactly one of {names}")
        return data


class OneImage(_OneOf):
    """One image: 28x28 (or 28x28x1) pixel values 0-255 (validated into a batch of one)."""

    alternatives = ("image", "images")
    image: Image


class Images(_OneOf):
    """A batch of images, each 28x28 (or 28x28x1) pixel values 0-255."""

    alternatives = ("image", "images")
    images: ImageBatch


# TF Serving's two request formats; model inputs scaled to 0-1, one input so the same array in both.
class TFServingInstances(_OneOf):
    alternatives = ("instances", "inputs")
    instances: Annotated[Instances, Field(description="row format: one model input per instance")]


class TFServingInputs(_OneOf):
    alternatives = ("instances", "inputs")
    inputs: Annotated[Instances, Field(description="columnar format")]


def _union(first: tuple[str, type], second: tuple[str, type], message: str) -> Any:
    """Exactly one of two bodies, chosen by which field the object holds."""

    def which(value: Any) -> str | None:
        if isinstance(value, dict):
            return next((key for key, _model in (first, second) if key in value), None)
        return None

    members = tuple(Annotated[model, Tag(key)] for key, model in (first, second))
    return Annotated[
        members[0] | members[1], Discriminator(which, custom_error_type="body", custom_error_message=message)
    ]


ClassifyRequest = TypeAdapter(
    _union(
        ("image", OneImage),
        ("images", Images),
        "JSON body must be an object with exactly one of 'image' (28x28) or 'images'",
    ),
)
TFServingRequest = TypeAdapter(
    _union(
        ("instances", TFServingInstances),
        ("inputs", TFServingInputs),
        "JSON body must be an object with exactly one of 'instances' or 'inputs'",
    ),
)


def _integral(value: Any) -> Any:
    """JSON Schema's integers include 3.0; booleans and strings stay errors (strict below)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class FeedbackRequest(BaseModel):
    """The true label of an earlier prediction, by the id its answer carried: `label` or `class_id`."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": ["label"]}, {"required": ["class_id"]}]})

    # Any string is checked against the ids this server issued (unknown: 404), so the pattern only documents.
    id: Annotated[
        str, WithJsonSchema({"type": "string", "pattern": "^[0-9a-f]{32}([0-9a-f]{4})?$", "description": "as issued"})
    ]
    label: Annotated[str | None, WithJsonSchema({"type": "string", "description": "a class name"})] = None
    class_id: Annotated[
        Annotated[int, Field(strict=True)] | None,
        BeforeValidator(_integral),
        WithJsonSchema({"type": "integer", "minimum": 0}),
    ] = None
    reviewed: Annotated[
        bool,
        Field(
            strict=True,
            description="a person looked at the image and chose the label: only then does feedback on "
            "a prediction flagged out of distribution (in_distribution false) become training data",
        ),
    ] = False

    @model_validator(mode="after")
    def _label_given(self) -> FeedbackRequest:
        if self.label is None and self.class_id is None:
            raise ValueError("feedback needs 'label' (a class name) or 'class_id'")
        return self


# Responses: plain dicts on the hot path (orjson writes them), typed for mypy and the document.
class ModelVersionRef(TypedDict):
    name: str
    version: int


class Prediction(TypedDict):
    id: Annotated[str, Field(description="handle for feedback")]
    label: str
    class_id: int
    confidence: float
    ood_score: Annotated[
        float | None,
        Field(
            description="0-1: the share of held-out garments that look more usual than this input "
            "(null: a model version exported without the out-of-distribution flag)"
        ),
    ]
    in_distribution: Annotated[
        bool | None,
        Field(
            description="false: the input does not look like the clothing the model knows; treat the label "
            "with suspicion (null: no flag)"
        ),
    ]
    preprocessing: Annotated[
        Preprocessing, Field(description="what turned the input into the dataset's form (all false: nothing)")
    ]
    input: NotRequired[
        Annotated[list[list[int]], Field(description="with ?input=true: the 28x28 pixels 0-255 the model saw")]
    ]


class PredictionResponse(TypedDict):
    model: ModelVersionRef
    result: Annotated[list[list[float]], Field(description="class probabilities, one row per image")]
    predictions: list[Prediction]


class FeedbackAccepted(TypedDict):
    status: str
    id: str
    class_id: int


class TFServingResponse(TypedDict):
    predictions: list[list[float]]
    ood_score: NotRequired[
        Annotated[list[float], Field(description="beside TF Serving's own key (which its clients read), one per image")]
    ]
    in_distribution: NotRequired[list[bool]]


class ErrorResponse(TypedDict):
    error: str


def validate(adapter: TypeAdapter | type[BaseModel], payload: Any, **context: Any) -> Any:
    """The typed body, or InvalidInput naming what is wrong (ImageTooLarge: a limit, answered 413)."""
    try:
        if isinstance(adapter, TypeAdapter):
            return adapter.validate_python(payload, context=context)
        return adapter.model_validate(payload, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for error in errors:
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, InvalidInput):
                raise cause from None
        first = errors[0]
        if first["type"] == "model_type":
            raise InvalidInput("the body must be a JSON object") from None
        location = first["loc"][1:] if isinstance(adapter, TypeAdapter) else first["loc"]  # [0]: the union's tag
        where = ".".join(str(part) for part in location)
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidInput(f"{where}: {message}" if where else message) from None
