"""Reading the prediction log back: every worker's files, rotated and compressed ones included, as
the record types `serving.log.records` defines. The drift monitor and the shadow analysis read it."""

from __future__ import annotations

import gzip
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from serving.log.capture import OPENED, partition
from serving.log.object_store import ObjectStore
from serving.log.records import FeedbackLine, Record, expand

HOUR = 3600


def log_files(log_dir: Path) -> list[Path]:
    """Every worker's files, the ones written into and the rotated ones, compressed or not."""
    return sorted([*Path(log_dir).glob("predictions-*.jsonl"), *Path(log_dir).glob("predictions-*.jsonl.gz")])


def file_lines(name: str, data: bytes) -> list[bytes]:
    """A log file's lines, whether it was compressed (`name` ends in .gz) or not."""
    return (gzip.decompress(data) if name.endswith(".gz") else data).splitlines()


def parse_lines(
    lines: Iterable[bytes], since: float, until: float, types: frozenset[str] | None = None
) -> list[Record]:
    """The records of `lines` in the window (of `types` only, when given: other lines are not parsed);
    torn lines are skipped."""
    markers = [f'"type":"{kind}"'.encode() for kind in types] if types else None
    records: list[Record] = []
    for line in lines:
        if markers and not any(marker in line for marker in markers):
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        wanted = types is None or record.get("type") in types
        if isinstance(record, dict) and wanted and since <= record.get("time", 0) <= until:
            records.extend(expand(record))  # type: ignore[arg-type]
    return records


def read_file(path: Path, since: float) -> list[bytes] | None:
    """The file's lines; None when it was last written before `since` or is gone (rotated away,
    shipped or removed by the log's bounds while this reads)."""
    try:
        if path.stat().st_mtime < since:
            return None
        return file_lines(path.name, path.read_bytes())
    except (FileNotFoundError, EOFError, gzip.BadGzipFile):
        return None


def read_records(log_dir: Path, since: float, until: float | None = None) -> list[Record]:
    """Every record in the window from every worker's files, rotated and compressed ones included."""
    until = until or time.time()
    records: list[Record] = []
    for path in log_files(log_dir):
        records.extend(parse_lines(read_file(path, since) or (), since, until))
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


def hours(since: float, until: float) -> Iterator[float]:
    """The start of every hour the window touches."""
    hour = since // HOUR * HOUR
    while hour <= until:
        yield hour
        hour += HOUR


def shipped_logs(store: ObjectStore, since: float, until: float) -> Iterator[str]:
    """Keys of every shipped prediction-log file that may hold the window (files opened up to an hour
    before it: a file spans at most its rotation period)."""
    for hour in hours(since - HOUR, until):
        for key in store.keys(store.key("predictions", partition(hour)) + "/"):
            opened = OPENED.search(key)
            if opened is None or since - HOUR <= int(opened["ns"]) / 1e9 <= until:
                yield key


def file_id(name: str) -> str:
    """A log file's name wherever it is: local (compressed yet or not) or shipped."""
    return name.rsplit("/", 1)[-1].removesuffix(".gz")


class GrowingWindow:
    """The records of `types` since `since`, read again and again while traffic flows (a shadow release's
    analysis at every interval): the files workers write into are read each time; a closed file
    (compressed here, or shipped to the store, where capture moves it and removes it here) never
    changes, so it is parsed once, wherever it is found first. A file both here and in the store
    counts once."""

    def __init__(self, log_dir: Path, store: ObjectStore | None, since: float, types: frozenset[str]) -> None:
        self.log_dir, self.store, self.since, self.types = Path(log_dir), store, since, types
        self._closed: dict[str, list[Record]] = {}  # file id -> its records

    def read(self) -> list[Record]:
        until = time.time()
        records: list[Record] = []
        here: set[str] = set()
        for path in log_files(self.log_dir):  # before the store's listing: a file shipped meanwhile is there
            name = file_id(path.name)
            if name not in self._closed:
                lines = read_file(path, self.since)
                if lines is None:
                    continue
                parsed = parse_lines(lines, self.since, until, self.types)
                if path.name.endswith(".gz"):
                    self._closed[name] = parsed
                records.extend(parsed)
            else:
                records.extend(self._closed[name])
            here.add(name)
        if self.store is not None:
            for key in shipped_logs(self.store, self.since, until):
                name = file_id(key)
                if name in here:
                    continue
                if name not in self._closed:
                    lines = file_lines(key, self.store.get(key))
                    self._closed[name] = parse_lines(lines, self.since, math.inf, self.types)
                records.extend(self._closed[name])
        return unique(records)


def unique(records: list[Record]) -> list[Record]:
    """Each record once: a file written into here when it was read may be rotated, shipped and listed in
    the store before the store is read."""
    seen: set[tuple] = set()
    kept: list[Record] = []
    for record in records:
        ids = record.get("ids") or [record.get("id")]
        key = (record["type"], record["time"], *ids)  # type: ignore[misc]
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept
