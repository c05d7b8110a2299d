"""Client library and CLI: read image files, preprocess like the dataset, ask the server, print labels.

Standard library only (plus the shared preprocessing), so it is cheap to vendor into other tools.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.preprocessing import load_image_file, pixels_from_nested

DEFAULT_URL = os.environ.get("CLOTHES_URL", "http://127.0.0.1:8080/models/clothes/latest")


class ClientError(RuntimeError):
    """The server refused the request or could not be reached; the message carries its reason."""


@dataclass(frozen=True)
class Prediction:
    label: str
    class_id: int
    confidence: float
    probabilities: list[float]


def _as_pixels(item: str | os.PathLike | np.ndarray) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return pixels_from_nested(item.tolist(), batch=False)[0]
    return load_image_file(str(item)).astype(np.float32)


def classify_many(
    items: Sequence[str | os.PathLike | np.ndarray], url: str = DEFAULT_URL, timeout: float = 30.0
) -> list[Prediction]:
    """One request for the whole batch: file paths or 28x28 arrays of 0-255 pixels."""
    images = [_as_pixels(item).astype(np.uint8).tolist() for item in items]
    body = json.dumps({"images": images}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            reason = json.load(exc).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        raise ClientError(f"{url} answered {exc.code}: {reason}") from exc
    except (urllib.error.URLError, TimeoutError) as exc:
        raise ClientError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from exc
    return [
        Prediction(p["label"], p["class_id"], p["confidence"], probs)
        for p, probs in zip(answer["predictions"], answer["result"], strict=True)
    ]


def classify(item: str | os.PathLike | np.ndarray, url: str = DEFAULT_URL, timeout: float = 30.0) -> Prediction:
    return classify_many([item], url, timeout)[0]


def argument_parser() -> argparse.ArgumentParser:
    """The command line, apart from running it: the docs' commands are checked against it."""
    parser = argparse.ArgumentParser(prog="clothes-classify", description="Classify clothing images.")
    parser.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"model endpoint (default {DEFAULT_URL}; $CLOTHES_URL)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser()
    args = parser.parse_args(argv)
    try:
        predictions = classify_many(args.images, args.url)
    except (ClientError, OSError, ValueError) as exc:
        print(f"clothes-classify: {exc}", file=sys.stderr)
        return 1
    for path, prediction in zip(args.images, predictions, strict=True):
        if args.json:
            print(
                json.dumps(
                    {
                        "file": str(path),
                        "label": prediction.label,
                        "class_id": prediction.class_id,
                        "confidence": prediction.confidence,
                    }
                )
            )
        else:
            print(f"{path}: {prediction.label} ({prediction.confidence:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
