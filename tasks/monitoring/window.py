"""A window of served traffic as the monitor reads it: the minute summaries of every node (from the
object store, where capture ships them, plus what this machine's log directory still holds), merged;
and, for retraining only, the logged inputs of the window's labelled predictions.

Its cost grows with the window's minutes times the workers writing (one small file each), not with
the traffic: an hour of two nodes' full rate is a few hundred files of a few kilobytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from serving.log.capture import partition
from serving.log.object_store import ObjectStore
from serving.log.reader import file_lines, hours, read_records, shipped_logs
from serving.log.records import FeedbackLine, Prediction, Record, expand
from serving.log.retention import SUMMARIES
from serving.log.summary import TrafficSummary, minute_of, summary_directory
from tasks.params import ModelRef

QUOTED_ID = re.compile(rb'"([0-9a-f]{32}(?:[0-9a-f]{4})?)"')  # a prediction id as JSON writes it
READERS = 8  # the store's GETs in parallel


def in_window(minute: int, since: float, until: float) -> bool:
    """A minute belongs to the window when it overlaps it."""
    return minute_of(since) <= minute <= until


def minute_in_name(name: str) -> int:
    return int(name.split("-", 1)[0])


def read_summary(
    log_dir: Path | None, store: ObjectStore | None, ref: ModelRef, since: float, until: float, classes: int
) -> TrafficSummary | None:
    """Every worker's summaries of `ref` for the window's minutes, merged; None: no traffic at all. A file
    both here and in the store (shipped while this read) counts once: names are unique per writer."""
    found: dict[str, bytes | str] = {}  # file name -> its bytes (local) or its key (store)
    if store is not None:
        for hour in hours(since, until):
            prefix = store.key(SUMMARIES, f"model={ref.name}", f"version={ref.version}", partition(hour)) + "/"
            for key in store.keys(prefix):
                name = key.rsplit("/", 1)[-1]
                if in_window(minute_in_name(name), since, until):
                    found[name] = key
    if log_dir is not None:
        for path in summary_directory(Path(log_dir) / SUMMARIES, ref.name, ref.version).glob("*.json"):
            if in_window(minute_in_name(path.name), since, until):
                try:
                    found[path.name] = path.read_bytes()
                except FileNotFoundError:  # shipped meanwhile: the store's listing may have it
                    continue
    keys = [value for value in found.values() if isinstance(value, str)]
    fetched = dict(zip(keys, _fetch(store, keys), strict=True)) if keys else {}
    merged: TrafficSummary | None = None
    for value in found.values():
        summary = TrafficSummary.from_json(fetched[value] if isinstance(value, str) else value)
        if summary.classes != classes:
            continue  # not this model's class list: a summary written by another export of the name
        merged = summary if merged is None else merged.merge(summary)
    return merged


def _fetch(store: ObjectStore | None, keys: list[str]) -> list[bytes]:
    if store is None:
        return []
    with ThreadPoolExecutor(READERS) as pool:
        return list(pool.map(store.get, keys))


def labelled_records(
    log_dir: Path | None, store: ObjectStore | None, summary: TrafficSummary, since: float, until: float
) -> list[Record]:
    """The window's labelled predictions with their logged inputs, and their first labels: what retraining
    learns from. Only lines naming a labelled id are parsed, so a window costs reading its raw files once."""
    labels: dict[str, FeedbackLine] = {}
    for record_id, true_class, reviewed in summary.labels:
        labels.setdefault(
            record_id,
            FeedbackLine(
                type="feedback",
                time=summary.first,
                model=summary.model,
                version=summary.version,
                id=record_id,
                true_class_id=true_class,
                reviewed=reviewed,
            ),
        )
    if not labels:
        return []
    wanted = set(labels)
    predictions: dict[str, Prediction] = {}

    def keep(records: Iterable[Record]) -> None:
        ours = (summary.model, summary.version)
        for item in records:
            if item["type"] == "prediction" and item["id"] in wanted and (item["model"], item["version"]) == ours:
                predictions[item["id"]] = item

    if log_dir is not None:
        keep(read_records(Path(log_dir), since, until))
    for line in _store_lines(store, since, until) if store is not None else ():
        if b'"pixels"' not in line or wanted.isdisjoint(i.decode() for i in QUOTED_ID.findall(line)):
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if since <= record.get("time", 0) <= until:
            keep(expand(record))
    return [*predictions.values(), *(labels[record_id] for record_id in predictions)]


def _store_lines(store: ObjectStore, since: float, until: float) -> Iterator[bytes]:
    """Lines of the window's shipped files, one file in memory at a time."""
    for key in shipped_logs(store, since, until):
        yield from file_lines(key, store.get(key))
