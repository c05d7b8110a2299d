"""The prediction log's disk stays bounded: a rotated file is gzip-compressed (JSON lines shrink about
tenfold), and rotated files beyond a total size or an age are removed, oldest first. A server at
2,500 predictions a second writes ~65 GB a day uncompressed; without this the disk fills.

Compression runs in the log's writer, in chunks that yield between them (a `time.sleep(0)`, which
under gevent hands the event loop back), so even a 10 MB file never stalls requests for long.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import time
from dataclasses import dataclass
from pathlib import Path

from serving.log.feedback import LabelledIds

SUMMARIES = "summaries"  # `serving.log.prediction_log` writes them there

CHUNK = 256 * 1024
# A rotated file: predictions-<host>-<pid>-<time_ns>.jsonl, compressed to ....jsonl.gz. The files workers
# are writing (predictions-<host>-<pid>.jsonl) are never removed.
ROTATED = re.compile(r"^predictions-.+-\d{19}\.jsonl(\.gz)?$")


def compress(path: Path) -> Path:
    """`path` -> `path.gz` (written under a temporary name, then renamed, so a reader never sees half a
    file); the original is removed."""
    target = path.with_name(path.name + ".gz")
    partial = path.with_name(path.name + ".gz.partial")
    with path.open("rb") as source, gzip.open(partial, "wb", compresslevel=6) as sink:
        while chunk := source.read(CHUNK):
            sink.write(chunk)
            time.sleep(0)  # yield: a greenlet hands the event loop back, a thread the GIL
    partial.rename(target)
    path.unlink()
    return target


@dataclass(frozen=True)
class Removed:
    files: int = 0
    bytes: int = 0


def enforce_bounds(directory: Path, max_total_bytes: int, max_age_seconds: float, now: float | None = None) -> Removed:
    """Remove rotated files older than `max_age_seconds`, then the oldest rotated files until every
    prediction-log file together fits in `max_total_bytes`. Workers may race on the same file: a file
    already gone counts for whoever removed it."""
    now = time.time() if now is None else now
    files = []
    for path in directory.glob("predictions-*"):
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    expire(directory / LabelledIds.DIRECTORY, "*/*", now - max_age_seconds)
    expire(directory / SUMMARIES, "*/*/*.json", now - max_age_seconds)
    removed_files = removed_bytes = 0
    for mtime, size, path in sorted(files):  # oldest first
        if not ROTATED.match(path.name):
            continue
        if total <= max_total_bytes and now - mtime <= max_age_seconds:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        else:
            removed_files, removed_bytes = removed_files + 1, removed_bytes + size
        total -= size
    return Removed(removed_files, removed_bytes)


def expire(root: Path, pattern: str, before: float) -> None:
    """Feedback claims (`serving.log.feedback.LabelledIds`) and minute summaries older than the oldest log
    worth keeping."""
    for path in root.glob(pattern) if root.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < before:
                path.unlink()
