"""Open Inference Protocol (v2, as KServe, Triton and MLServer speak it) bodies, declared as types:
the routes in `serving.protocols.oip` validate with them and `serving.protocols.openapi` documents them.

Tensor data is left as it came (`Any`): it is converted by numpy in one step, never walked here.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

INPUT = "image"
OUTPUTS = {"probabilities": "FP32", "class_id": "INT64", "label": "BYTES"}  # name -> datatype
OOD_OUTPUTS = {"ood_score": "FP32", "in_distribution": "BOOL"}  # models exported with the flag

# The protocol's parameter values are scalars.
Parameters = dict[str, StrictBool | StrictInt | StrictFloat | StrictStr]


class RequestInput(BaseModel):
    """One input tensor: row-major `data` (flat or nested) in JSON, or `binary_data_size` bytes after
    the JSON header (binary tensor data extension)."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(description=f"'{INPUT}'")]
    shape: Annotated[list[Annotated[int, Field(ge=0)]], Field(description="[N, 28, 28], [N, 28, 28, 1] or [N, 784]")]
    datatype: Annotated[str, Field(description="UINT8 or FP32; pixel values 0-255 either way")]
    parameters: Parameters | None = None
    data: Annotated[Any, Field(description="the values, row-major; absent with binary_data_size")] = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(description=" | ".join({**OUTPUTS, **OOD_OUTPUTS}))]
    parameters: Annotated[Parameters | None, Field(description="binary_data: true for binary data")] = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    parameters: Annotated[Parameters | None, Field(description="binary_data_output: true for every output")] = None
    inputs: Annotated[list[RequestInput], Field(min_length=1)]
    outputs: Annotated[list[RequestOutput] | None, Field(description="default: all three")] = None


class TensorMetadata(TypedDict):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(TypedDict):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(TypedDict):
    name: str
    version: str
    extensions: list[str]


class ReadyResponse(TypedDict):
    name: NotRequired[str]
    ready: bool


class ResponseOutput(TypedDict):
    name: str
    shape: list[int]
    datatype: str
    parameters: NotRequired[Parameters]
    data: NotRequired[list]


class InferenceResponse(TypedDict):
    model_name: str
    model_version: str
    id: NotRequired[str]
    outputs: list[ResponseOutput]
