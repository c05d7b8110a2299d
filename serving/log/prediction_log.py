"""Prediction log: compact JSON Lines records of every prediction (and feedback), for drift monitoring.

A line holds one request: its images' ids, predicted classes, confidences and input statistics as
columns (`serving.log.records` defines the record types; the monitor expands them per prediction).

Each worker process writes its own file (no interleaving between processes) and rotates it by size
and at every `rotate_seconds` boundary of the clock (a minute by default, so a file never spans two
hours and capture ships it soon): `predictions-<host>-<pid>.jsonl`, rotated to
`predictions-<host>-<pid>-<opened, ns>.jsonl` and then compressed to `....jsonl.gz`; the directory's
total size and the rotated files' age are bounded (`serving.log.retention`). Beside the records, each
worker folds every minute's predictions into a summary per model version (`serving.log.summary`) and
writes it under `summaries/<model>/<version>/` once the minute is over.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson

from serving import metrics
from serving.log.capture import Capture
from serving.log.records import FeedbackLine, LogGapLine, PredictionsLine, ShadowLine
from serving.log.retention import SUMMARIES, compress, enforce_bounds
from serving.log.summary import TrafficSummary, minute_of, summary_directory, summary_name

log = logging.getLogger(__name__)
DARK_LEVEL = 0.1  # a pixel darker than 10% of full scale counts as background
SUMMARY_GRACE_SECONDS = 5  # a minute's summary is written this long after it ends (late requests' records)


def input_summary(batch: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics of model inputs (N, 28, 28, 1) in 0-1: what drift detection compares."""
    flat = batch.reshape(len(batch), -1)
    n = flat.shape[1]
    mean = flat.sum(axis=1) / n
    # E[x^2] - E[x]^2 with one dot product per image: several times cheaper than np.std on 784 pixels.
    mean_square = np.einsum("ij,ij->i", flat, flat) / n
    return {
        "mean": mean,
        "std": np.sqrt(np.maximum(mean_square - mean * mean, 0)),
        "dark_fraction": np.count_nonzero(flat < DARK_LEVEL, axis=1) / n,
    }


@dataclass
class _PendingPredictions:
    time: float
    ids: list[str]
    model: str
    version: int
    probabilities: np.ndarray
    images: np.ndarray  # model inputs (N, 28, 28, 1) in 0-1
    ood_scores: np.ndarray | None = None
    in_distribution: np.ndarray | None = None


class PredictionLog:
    """The request thread only appends its arrays to a pending list (about a microsecond). A daemon
    thread wakes every `flush_seconds` (or sooner when much is pending), computes the input statistics
    for everything pending in one vectorised pass, writes the JSON lines and flushes, so per-request
    numpy overhead is paid once per interval instead of once per request. `close()` drains it at
    worker exit.

    The log must never hurt serving: the pending list is bounded (`max_pending_images`; beyond it
    records are dropped and counted), and when the disk fails (full, read-only, gone) the writer
    warns once, counts the error, drops instead of queueing, and retries every `retry_seconds`
    until a write succeeds; the first line after a gap is a `log_gap` record with the number lost."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int = 10 * 1024 * 1024,
        store_inputs: bool = False,
        max_total_bytes: int = 2 * 1024**3,
        max_age_seconds: float = 30 * 86400,
        flush_seconds: float = 0.2,
        max_pending_images: int = 8192,
        retry_seconds: float = 1.0,
        rotate_seconds: float = 60,
        capture: Capture | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_total_bytes = max_total_bytes
        self.max_age_seconds = max_age_seconds
        self.store_inputs = store_inputs
        self.flush_seconds = flush_seconds
        self.max_pending_images = max_pending_images
        self.retry_seconds = retry_seconds
        self.rotate_seconds = rotate_seconds
        self.capture = capture  # ships what this log closes to the object store
        self.error: str | None = None  # set while writes fail: what /health/ready reports
        self._lock = threading.Lock()  # guards _pending, _pending_images, _dropped
        self._write_lock = threading.Lock()  # one writer at a time (flush thread, close)
        self._pending: list[_PendingPredictions | FeedbackLine | ShadowLine] = []
        self._pending_images = 0
        self._dropped = 0  # since the last successful write
        self._handle: BinaryIO | None = None
        self._opened_ns = 0
        self._summaries: dict[tuple[str, int, int], TrafficSummary] = {}  # (model, version, minute)
        self._classes: dict[tuple[str, int], int] = {}  # (model, version): class count, for feedback's summaries
        self._pid: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        atexit.register(self.close)

    @property
    def path(self) -> Path:
        return self.directory / f"predictions-{socket.gethostname()}-{os.getpid()}.jsonl"

    def _submit(self, item: _PendingPredictions | FeedbackLine | ShadowLine, images: int) -> None:
        with self._lock:
            if self._pid != os.getpid():  # first record in this (forked) process: start its writer
                self._start_writer()
            if self.error is not None or self._pending_images + images > self.max_pending_images:
                self._dropped += images
                metrics.LOG_DROPPED.inc(images)
                return
            self._pending.append(item)
            self._pending_images += images
            if self._pending_images * 4 >= self.max_pending_images:
                self._wake.set()  # a burst: write now rather than wait for the timer

    def _start_writer(self) -> None:
        self._pid = os.getpid()
        self._pending, self._pending_images = [], 0
        self._stop, self._wake = threading.Event(), threading.Event()
        self._writer = threading.Thread(target=self._flush_loop, name="prediction-log", daemon=True)
        self._writer.start()
        if self.capture is not None:
            self.capture.start()

    def start_in_worker(self) -> None:
        """New locks and this process's writer; gunicorn calls it in each worker once gevent patched
        `threading`. The locks made before (the app is preloaded in the master) are OS locks: a greenlet
        starting the writer while holding one yields to the hub, the next greenlet blocks the whole
        worker on that lock, and the worker hangs on its first concurrent requests."""
        self._lock, self._write_lock = threading.Lock(), threading.Lock()
        self._start_writer()

    def log_predictions(
        self,
        ids: list[str],
        model: str,
        version: int,
        probabilities: np.ndarray,
        batch: np.ndarray,
        ood_scores: np.ndarray | None = None,
        in_distribution: np.ndarray | None = None,
    ) -> None:
        pending = _PendingPredictions(
            time.time(), ids, model, version, probabilities, batch, ood_scores, in_distribution
        )
        self._submit(pending, len(ids))

    def log_feedback(
        self,
        record_id: str,
        model: str,
        version: int,
        class_id: int,
        reviewed: bool = False,
        answered: int | None = None,
        classes: int | None = None,
    ) -> None:
        """`answered`: the class the labelled prediction answered (read from its id), None if unknown;
        `classes`: the model's class count, which the minute's summary needs."""
        if classes is not None:
            self._classes[(model, version)] = classes
        record = FeedbackLine(
            type="feedback",
            time=time.time(),
            model=model,
            version=version,
            id=record_id,
            true_class_id=class_id,
            reviewed=reviewed,
        )
        if answered is not None:
            record["class_id"] = answered
        self._submit(record, 0)

    def log_shadow(self, record: ShadowLine) -> None:
        """A mirrored request's paired answers (`serving.mirror`)."""
        self._submit(record, 0)

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.retry_seconds if self.error else self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Write what is pending, rotate a file whose period is over and write the summaries of the
        minutes that are (`final`: every summary, as the worker exits)."""
        with self._lock:
            pending, self._pending, self._pending_images = self._pending, [], 0
            dropped = self._dropped
        with self._write_lock:
            if pending or self.error is not None:
                if not self._write_pending(pending, dropped):
                    return
            elif self._handle is not None and not self._handle.closed and self._period_over():
                with contextlib.suppress(OSError):  # the next write reopens and retries
                    self._retire([self._rotate()])
            self._write_summaries(None if final else time.time() - 60 - SUMMARY_GRACE_SECONDS)

    def _write_pending(self, pending: list[_PendingPredictions | FeedbackLine | ShadowLine], dropped: int) -> bool:
        lines = self._lines(pending)
        if dropped or self.error is not None:
            # say what is missing (this also probes a failed disk), on a fresh line in case a failure tore one
            gap = LogGapLine(type="log_gap", time=time.time(), dropped=dropped)
            lines.insert(0, b"\n" + orjson.dumps(gap) + b"\n")
        try:
            self._write(lines)
        except OSError as exc:
            self._fail(exc, sum(len(item.ids) for item in pending if isinstance(item, _PendingPredictions)))
            return False
        with self._lock:
            self._dropped -= dropped
        if self.error is not None:
            log.warning("prediction log %s writable again; %d records were dropped meanwhile", self.path, dropped)
            self.error = None
        return True

    def _period_over(self) -> bool:
        period = self.rotate_seconds * 1e9
        return time.time_ns() // period != self._opened_ns // period

    def _open(self) -> BinaryIO:
        """This process's file; one left by an earlier process with this pid (a restarted container) is
        rotated first, so a rotated file holds one period."""
        if self._pid_file_left_over():
            self._retire([self._rotate(self.path.stat().st_mtime_ns)])
        self._opened_ns = time.time_ns()
        return self.path.open("ab")

    def _pid_file_left_over(self) -> bool:
        return self._opened_ns == 0 and self.path.exists() and self.path.stat().st_size > 0

    def _rotate(self, opened_ns: int | None = None) -> Path:
        if self._handle is not None and not self._handle.closed:
            self._handle.flush()
            self._handle.close()
        self._handle = None
        return self.path.rename(self.path.with_name(f"{self.path.stem}-{opened_ns or self._opened_ns}.jsonl"))

    def _write(self, lines: list[bytes]) -> None:
        rotated = []
        if self._handle is not None and not self._handle.closed and self._period_over():
            rotated.append(self._rotate())
        if self._handle is None or self._handle.closed:
            self._handle = self._open()
        for line in lines:
            self._handle.write(line)
            if self._handle.tell() >= self.max_bytes:
                rotated.append(self._rotate())
                self._handle = self._open()
        self._handle.flush()
        if rotated:
            self._retire(rotated)

    def _write_summaries(self, ended_before: float | None) -> None:
        """The summaries of minutes that ended before `ended_before` (None: all), each under a name of its
        own; one that cannot be written stays in memory for the next try."""
        for key in [k for k in self._summaries if ended_before is None or k[2] + 60 <= ended_before]:
            summary = self._summaries[key]
            directory = summary_directory(self.directory / SUMMARIES, summary.model, summary.version)
            name = summary_name(summary, f"{socket.gethostname()}-{os.getpid()}", time.time_ns())
            try:
                directory.mkdir(parents=True, exist_ok=True)
                partial = directory / f".{name}.partial"
                partial.write_bytes(summary.to_json())
                partial.rename(directory / name)
            except OSError as exc:
                metrics.LOG_WRITE_ERRORS.inc()
                log.warning("prediction log: could not write the summary %s (%s)", name, exc)
                return
            del self._summaries[key]

    def _summary(self, model: str, version: int, timestamp: float, classes: int) -> TrafficSummary:
        key = (model, version, minute_of(timestamp))
        if key not in self._summaries:
            self._summaries[key] = TrafficSummary.empty(model, version, classes, key[2])
        return self._summaries[key]

    def _retire(self, rotated: list[Path]) -> None:
        """Compress what was just rotated, then keep the directory within its size and age bounds. The
        records are written already: a failure here loses none, and removing old files still runs (on a
        full disk it is what makes room)."""
        for path in rotated:
            try:
                compress(path)
                metrics.LOG_COMPRESSED.inc()
            except OSError as exc:  # left uncompressed; still counted and removed by the bounds
                log.warning("prediction log: could not compress %s (%s)", path.name, exc)
        try:
            removed = enforce_bounds(self.directory, self.max_total_bytes, self.max_age_seconds)
        except OSError as exc:
            log.warning("prediction log: could not apply its size and age bounds (%s)", exc)
            return
        metrics.LOG_REMOVED_FILES.inc(removed.files)
        metrics.LOG_REMOVED_BYTES.inc(removed.bytes)

    def _fail(self, exc: OSError, lost: int) -> None:
        metrics.LOG_WRITE_ERRORS.inc()
        with self._lock:
            self._dropped += lost
        metrics.LOG_DROPPED.inc(lost)
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()  # flushing the buffer fails too; those bytes are lost
            self._handle = None
        if self.error is None:  # one warning per incident, not per record
            log.warning("prediction log %s not writable (%s): dropping records until it is", self.path, exc)
        self.error = f"{type(exc).__name__}: {exc.strerror or exc}"

    def _lines(self, pending: list[_PendingPredictions | FeedbackLine | ShadowLine]) -> list[bytes]:
        """One line per request, columnar (one entry per image), so a batch of 256 costs one dump."""
        predictions = [item for item in pending if isinstance(item, _PendingPredictions)]
        if predictions:
            summary = input_summary(np.concatenate([item.images for item in predictions]))
        lines, row = [], 0
        folds: dict[tuple[str, int, int], list[tuple[_PendingPredictions, slice]]] = {}
        for item in pending:
            record: PredictionsLine | FeedbackLine | ShadowLine
            if isinstance(item, _PendingPredictions):
                class_ids = item.probabilities.argmax(axis=1)
                rows = slice(row, row + len(item.ids))
                row += len(item.ids)
                # numpy columns: orjson writes them as lists (OPT_SERIALIZE_NUMPY) without a Python loop
                record = PredictionsLine(
                    type="predictions",
                    time=item.time,
                    model=item.model,
                    version=item.version,
                    ids=item.ids,
                    class_id=class_ids,
                    confidence=item.probabilities[np.arange(len(item.ids)), class_ids],
                    mean=summary["mean"][rows],
                    std=summary["std"][rows],
                    dark_fraction=summary["dark_fraction"][rows],
                    probabilities=np.round(item.probabilities, 4),  # for the monitor's expected confusion matrix
                )
                folds.setdefault((item.model, item.version, minute_of(item.time)), []).append((item, rows))
                if item.ood_scores is not None and item.in_distribution is not None:
                    record["ood_score"] = item.ood_scores
                    record["in_distribution"] = item.in_distribution
                if self.store_inputs:
                    pixels = np.clip(np.rint(item.images[..., 0] * 255), 0, 255).astype(np.uint8)
                    record["pixels"] = [base64.b64encode(p.tobytes()).decode() for p in pixels]
            else:
                record = item
                if item["type"] == "feedback":
                    self._feedback_summary(item)
            lines.append(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        for key, parts in folds.items():
            self._fold(key, parts, summary)
        return lines

    def _fold(
        self, key: tuple[str, int, int], parts: list[tuple[_PendingPredictions, slice]], stats: dict[str, np.ndarray]
    ) -> None:
        """One minute's predictions of one version into its summary at once: per request it would cost
        several times the whole record's writing."""
        probabilities = np.concatenate([item.probabilities for item, _ in parts])
        rows = np.concatenate([np.arange(r.start, r.stop) for _, r in parts])
        class_ids = probabilities.argmax(axis=1)
        columns = {name: values[rows] for name, values in stats.items()}
        columns["confidence"] = probabilities[np.arange(len(class_ids)), class_ids]
        flags = [item.in_distribution for item, _ in parts]
        in_distribution: np.ndarray | None = None
        if all(flag is not None for flag in flags):
            in_distribution = np.concatenate(flags)  # type: ignore[arg-type]
        summary = self._summary(key[0], key[1], key[2], probabilities.shape[1])
        summary.add_predictions(class_ids, columns, probabilities, in_distribution)

    def _feedback_summary(self, record: FeedbackLine) -> None:
        classes = self._classes.get((record["model"], record["version"]))
        if classes is not None:
            summary = self._summary(record["model"], record["version"], record["time"], classes)
            summary.add_feedback(
                record["id"], record.get("class_id"), record["true_class_id"], bool(record.get("reviewed"))
            )

    def close(self) -> None:
        """Stop the writer, write what is pending and every summary, close the file (worker exit, tests)."""
        self._stop.set()
        self._wake.set()
        if self._pid == os.getpid():
            if self._writer is not None and self._writer is not threading.current_thread():
                self._writer.join(timeout=10)  # let a flush in progress finish before the last one
            self.flush(final=True)
        with self._write_lock, contextlib.suppress(OSError):  # the file closes: rotated, so capture ships it
            if self.path.exists() and self.path.stat().st_size > 0 and self._opened_ns:
                self._retire([self._rotate()])
            elif self._handle is not None and not self._handle.closed:
                self._handle.close()
        if self.capture is not None and self._pid == os.getpid():
            self.capture.close()
        self._pid = None
