"""Who may label a prediction: signed prediction ids, one label per id, a token and a rate limit.

Feedback becomes training data, so it must only ever label predictions this server made. An id is
16 random hex digits, 4 of the class the server answered and 16 of an HMAC over them, the model and
the version: any worker or replica holding the key verifies it without shared state, a forged or
reused-elsewhere id is refused, and a label's prediction is known without looking it up (the monitor
counts right and wrong answers from per-minute summaries alone). Ids of 32 digits (no class; servers
before 0.5.0) still verify.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from serving import metrics
from serving.log.object_store import ObjectStore, StoreError

log = logging.getLogger(__name__)
KEY_FILE = ".prediction-id-key"


def secret_from_file(path: Path | None) -> str | None:
    """The key of a mounted secret file, so replicas on every node share it; configured but unreadable
    or empty stops the server's start (ids would not verify across replicas)."""
    if path is None:
        return None
    secret = Path(path).read_text().strip()
    if not secret:
        raise ValueError(f"the feedback secret file {path} is empty")
    return secret


def load_key(secret: str | None, key_dir: Path | None) -> bytes:
    """The configured secret; else a key kept beside the prediction log (so ids survive restarts and
    blue/green swaps that mount the same directory); else a random key for this server's life."""
    if secret:
        return secret.encode()
    if key_dir is None:
        return os.urandom(32)
    path = Path(key_dir) / KEY_FILE
    key = os.urandom(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with contextlib.suppress(OSError, ValueError):
            return bytes.fromhex(path.read_text().strip())
        return key  # unreadable: ids are valid for this server's life only
    except OSError:
        return key
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex())
    except OSError:  # a full or failing log disk must not keep the server from starting
        with contextlib.suppress(OSError):
            path.unlink()
    return key


class PredictionIds:
    NONCE, CLASS, SIGNATURE = 16, 4, 16

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _signature(self, message: str) -> str:
        # one-shot HMAC (OpenSSL): the same value as hmac.new(...).hexdigest(), without its Python object
        return hmac.digest(self._key, message.encode(), "sha256").hex()[: self.SIGNATURE]

    def issue(self, model: str, version: int, class_ids: Sequence[int]) -> list[str]:
        """One id per answer, naming the class answered (below 65,536 classes)."""
        nonces = os.urandom(8 * len(class_ids)).hex()
        ids = []
        for i, class_id in enumerate(class_ids):
            body = f"{nonces[16 * i : 16 * i + 16]}{int(class_id):04x}"
            ids.append(body + self._signature(f"{body}:{model}:{version}"))
        return ids

    def verify(self, record_id: str, model: str, version: int) -> bool:
        if len(record_id) == self.NONCE + self.CLASS + self.SIGNATURE:
            body, signature = record_id[: -self.SIGNATURE], record_id[-self.SIGNATURE :]
            return hmac.compare_digest(signature, self._signature(f"{body}:{model}:{version}"))
        if len(record_id) == self.NONCE + self.SIGNATURE:  # issued before 0.5.0: nonce and signature only
            nonce, signature = record_id[: self.NONCE], record_id[self.NONCE :]
            return hmac.compare_digest(signature, self._signature(f"{nonce}:{model}:{version}"))
        return False

    @classmethod
    def answered(cls, record_id: str) -> int | None:
        """The class a verified id's prediction answered; None for an id issued before 0.5.0."""
        if len(record_id) != cls.NONCE + cls.CLASS + cls.SIGNATURE:
            return None
        return int(record_id[cls.NONCE : cls.NONCE + cls.CLASS], 16)


class LabelledIds:
    """Ids that have taken a label: the first label wins, whichever worker, container, replica or node the
    second one reaches. On a node, a claim is an empty file made with O_CREAT|O_EXCL under the
    prediction-log directory (`labelled/<first two hex digits>/<id>`), so every process that mounts the
    directory agrees (gunicorn's workers, blue/green containers, a node's swarm replicas). With an object
    store (`capture_url`), a claim the node grants is then made in the store by a conditional write
    (`labels/<first two hex digits>/<id>`, If-None-Match: *), so every node agrees. The log's age bound
    removes old local claims with old log files. When the directory cannot be written, claims fall back to
    this process's memory (bounded, oldest forgotten first); when the store does not answer, to the node's
    claim (counted in /metrics): the monitor still keeps only the first label per id."""

    DIRECTORY = "labelled"

    def __init__(self, log_dir: Path | None, capacity: int = 200_000, store: ObjectStore | None = None) -> None:
        self._root = None if log_dir is None else Path(log_dir) / self.DIRECTORY
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._store = store

    def claim(self, record_id: str) -> bool:
        """True for the first label of `record_id` (a verified id: hex digits only)."""
        return self._claim_here(record_id) and self._claim_everywhere(record_id)

    def _claim_everywhere(self, record_id: str) -> bool:
        if self._store is None:
            return True
        try:
            return self._store.put_if_absent(self._store.key("labels", record_id[:2], record_id))
        except StoreError as exc:
            metrics.CLAIM_FALLBACKS.inc()
            log.warning("feedback: the store did not take the claim of %s (%s); the node's stands", record_id, exc)
            return True

    def _claim_here(self, record_id: str) -> bool:
        if self._root is not None:
            shard = self._root / record_id[:2]
            try:
                shard.mkdir(parents=True, exist_ok=True)
                os.close(os.open(shard / record_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                return True
            except FileExistsError:
                return False
            except OSError:
                pass  # the log disk fails: this process's memory, below
        with self._lock:
            if record_id in self._seen:
                return False
            self._seen[record_id] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True


class RateLimit:
    """Token bucket: `per_minute` requests a minute on average, bursts up to a tenth of that."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute / 10.0)
        self._tokens = self.capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def retry_after(self) -> int:
        return max(1, int((1 - self._tokens) / self.rate + 0.999))


def bearer_token(header: str | None) -> str | None:
    if header is None:
        return None
    with contextlib.suppress(ValueError):
        scheme, token = header.split(" ", 1)
        if scheme.lower() == "bearer":
            return token.strip()
    return None
