"""Reading the prediction log back: every worker's files, rotated and compressed ones included, as
the record types `serving.log.records` defines. The drift monitor and the shadow analysis read it."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterable
from pathlib import Path

import orjson

from serving.log.records import FeedbackLine, Record, expand


def read_records(log_dir: Path, since: float, until: float | None = None) -> list[Record]:
    """Every record in the window from every worker's files, rotated and compressed ones included; torn
    last lines are skipped, and so are files removed by the log's bounds while this reads."""
    until = until or time.time()
    records: list[Record] = []
    for path in sorted([*Path(log_dir).glob("predictions-*.jsonl"), *Path(log_dir).glob("predictions-*.jsonl.gz")]):
        try:
            if path.stat().st_mtime < since:
                continue
            with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
                lines = list(handle)
        except (FileNotFoundError, EOFError):
            continue
        for line in lines:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and since <= record.get("time", 0) <= until:
                records.extend(expand(record))  # type: ignore[arg-type]
    return records


def first_feedback(records: Iterable[Record]) -> list[FeedbackLine]:
    """The first feedback on each prediction id; later ones (from another worker) are ignored, as the
    server ignores them."""
    first: dict[str, FeedbackLine] = {}
    for record in sorted((r for r in records if r["type"] == "feedback"), key=lambda r: r["time"]):
        first.setdefault(record["id"], record)
    return list(first.values())


def first_labels(records: Iterable[Record]) -> dict[str, int]:
    """The first label given to each prediction id."""
    return {record["id"]: record["true_class_id"] for record in first_feedback(records)}
