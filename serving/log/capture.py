"""Capture: every replica ships its closed prediction-log files and minute summaries to the object store,
where the monitor reads every node's traffic together (as SageMaker's data capture does to S3).

Layout under the store's prefix (a file's hour is the hour it was opened; summaries, their minute's):
    predictions/date=<YYYY-MM-DD>/hour=<HH>/node=<node>/predictions-<host>-<pid>-<opened ns>.jsonl.gz
    summaries/model=<name>/version=<v>/date=<YYYY-MM-DD>/hour=<HH>/node=<node>/<minute>-<host>-<pid>-<ns>.json
Raw files hold every model a worker serves (one file per worker keeps the request path as it is);
summaries are per model version, which is what the monitor reads. Names carry the node, the container's
host name and the process, so no two writers ever share a key.

A thread in each worker looks every `interval` seconds, off the request path. A file leaves the local disk
only after the store confirmed it (one PUT, whole or nothing); while the store is down, slow or refusing
the credentials, files wait within the log's disk bounds (`clothes_capture_pending_*` in /metrics) and the
thread backs off, then ships the backlog oldest first. Workers of a node share the directory: a file is
taken under an exclusive `flock`, so two workers never ship the same file; files of a worker that died
are shipped by the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from serving import metrics
from serving.log.object_store import ObjectStore, StoreError
from serving.log.retention import ROTATED, SUMMARIES, compress

log = logging.getLogger(__name__)
CURRENT = re.compile(r"^predictions-(?P<writer>.+-\d+)\.jsonl$")  # a file a worker writes into
OPENED = re.compile(r"-(?P<ns>\d{19})\.jsonl(\.gz)?$")
UNCOMPRESSED_GRACE_SECONDS = 600  # a rotated file not gzipped by then will not be (compression failed)


def partition(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return f"date={moment:%Y-%m-%d}/hour={moment:%H}"


class Capture:
    def __init__(
        self,
        directory: Path,
        store: ObjectStore,
        node: str,
        interval: float = 5,
        max_backoff: float = 60,
        abandoned_seconds: float = 180,
    ) -> None:
        self.directory = Path(directory)
        self.store = store
        self.node = node
        self.interval = interval
        self.max_backoff = max_backoff
        self.abandoned_seconds = abandoned_seconds  # an unrotated file untouched this long has no writer
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def start(self) -> None:
        """This process's shipping thread (again after a fork)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="capture", daemon=True)
        self._thread.start()

    def close(self, deadline_seconds: float = 5) -> None:
        """Stop the thread and ship what is waiting, for at most `deadline_seconds` (a worker's exit)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=deadline_seconds)
        end = time.monotonic() + deadline_seconds
        while self._pid == os.getpid() and time.monotonic() < end:  # a store error: again, until the deadline
            try:
                self.ship(deadline=end)
                break
            except StoreError:
                time.sleep(0.2)
        self._pid = None

    def _loop(self) -> None:
        failures = 0
        while not self._stop.wait(min(self.max_backoff, self.interval * 2**failures)):
            try:
                self.ship(stop=self._stop)
            except StoreError as exc:
                failures = min(failures + 1, 10)
                metrics.CAPTURE_ERRORS.inc()
                if self.error is None:  # one warning per incident
                    log.warning("capture: %s does not take files (%s); they wait on disk", self.store.url, exc)
                self.error = str(exc)
                continue
            except Exception:  # the thread must outlive any surprise; the next look retries
                log.exception("capture: unexpected failure; retrying")
                failures = min(failures + 1, 10)
                continue
            if self.error is not None:
                log.warning("capture: the store %s takes files again", self.store.url)
            self.error, failures = None, 0

    def waiting(self) -> list[Path]:
        """Files to ship, summaries first (what the monitor reads), then prediction logs oldest first."""
        self._rotate_abandoned()
        summaries = sorted((self.directory / SUMMARIES).glob("*/*/*.json"))
        now = time.time()
        logs = []
        for path in self.directory.glob("predictions-*"):
            if not ROTATED.match(path.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                if path.suffix == ".gz" or now - path.stat().st_mtime > UNCOMPRESSED_GRACE_SECONDS:
                    logs.append(path)
        return [*summaries, *sorted(logs, key=lambda p: p.name.rsplit("-", 1)[-1])]

    def ship(self, deadline: float | None = None, stop: threading.Event | None = None) -> int:
        """Ship everything waiting (until `deadline`, monotonic, or `stop`); the number of files shipped.
        A store error stops the pass: the rest waits for the next."""
        waiting = self.waiting()
        self._count_waiting(waiting)
        shipped: set[Path] = set()
        try:
            for path in waiting:
                if (deadline is not None and time.monotonic() > deadline) or (stop is not None and stop.is_set()):
                    break  # `close` ships the rest itself once this thread has returned
                if self._ship_one(path):
                    shipped.add(path)
        finally:
            if shipped:
                self._count_waiting([path for path in waiting if path not in shipped])
        return len(shipped)

    def key_for(self, path: Path) -> str:
        if path.parent.parent.parent.name == SUMMARIES:  # summaries/<model>/<version>/<minute>-....json
            minute = int(path.name.split("-", 1)[0])
            model, version = path.parent.parent.name, path.parent.name
            where = f"model={model}/version={version}/{partition(minute)}"
            return self.store.key(SUMMARIES, where, f"node={self.node}", path.name)
        opened = OPENED.search(path.name)
        timestamp = int(opened["ns"]) / 1e9 if opened else path.stat().st_mtime
        return self.store.key("predictions", partition(timestamp), f"node={self.node}", path.name)

    def _ship_one(self, path: Path) -> bool:
        """Upload one file under an exclusive lock, then remove it; False if another worker has it or
        had it already."""
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            if os.fstat(handle.fileno()).st_nlink == 0:  # shipped (or removed by the disk bound) meanwhile
                return False
            body = handle.read()
            self.store.put(self.key_for(path), body)
            path.unlink(missing_ok=True)
        metrics.CAPTURE_FILES.inc()
        metrics.CAPTURE_BYTES.inc(len(body))
        metrics.CAPTURE_LAST_SUCCESS.set(time.time())
        return True

    def _rotate_abandoned(self) -> None:
        """A worker that died (killed, out of memory) leaves its file unrotated, and no later process has
        its pid: rotated and compressed here so it ships too."""
        now = time.time()
        for path in self.directory.glob("predictions-*.jsonl"):
            if not CURRENT.match(path.name) or ROTATED.match(path.name):
                continue
            try:
                stat = path.stat()
                if now - stat.st_mtime < self.abandoned_seconds:
                    continue
                rotated = path.rename(path.with_name(f"{path.stem}-{stat.st_mtime_ns}.jsonl"))
                compress(rotated)
            except OSError:
                continue

    def _count_waiting(self, waiting: list[Path]) -> None:
        sizes = []
        for path in waiting:
            with contextlib.suppress(FileNotFoundError):
                sizes.append(path.stat().st_size)
        metrics.CAPTURE_WAITING_FILES.set(len(sizes))
        metrics.CAPTURE_WAITING_BYTES.set(sum(sizes))
