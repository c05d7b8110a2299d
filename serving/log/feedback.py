"""Who may label a prediction: signed prediction ids, one label per id, a token and a rate limit.

Feedback becomes training data, so it must only ever label predictions this server made. An id is
16 random hex digits followed by 16 hex digits of an HMAC over them, the model and the version: any
worker or replica holding the key verifies it without shared state, and a forged or reused-elsewhere
id is refused.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

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
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _signature(self, nonce: str, model: str, version: int) -> str:
        # one-shot HMAC (OpenSSL): the same value as hmac.new(...).hexdigest(), without its Python object
        return hmac.digest(self._key, f"{nonce}:{model}:{version}".encode(), "sha256").hex()[:16]

    def issue(self, model: str, version: int, n: int) -> list[str]:
        nonces = os.urandom(8 * n).hex()
        return [(nonce := nonces[i : i + 16]) + self._signature(nonce, model, version) for i in range(0, 16 * n, 16)]

    def verify(self, record_id: str, model: str, version: int) -> bool:
        if len(record_id) != 32:
            return False
        return hmac.compare_digest(record_id[16:], self._signature(record_id[:16], model, version))


class LabelledIds:
    """Ids that have taken a label: the first label wins, whichever worker, container or replica the
    second one reaches. A claim is an empty file made with O_CREAT|O_EXCL under the prediction-log
    directory (`labelled/<first two hex digits>/<id>`), so every process that mounts the directory agrees
    (gunicorn's workers, blue/green containers, a node's swarm replicas; replicas on several nodes agree
    when the directory is shared storage). The log's age bound removes old claims with old log files.
    If the directory cannot be written, claims fall back to this process's memory (bounded, oldest
    forgotten first) and the monitor still keeps only the first label per id."""

    DIRECTORY = "labelled"

    def __init__(self, log_dir: Path | None, capacity: int = 200_000) -> None:
        self._root = None if log_dir is None else Path(log_dir) / self.DIRECTORY
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def claim(self, record_id: str) -> bool:
        """True for the first label of `record_id` (a verified id: hex digits only)."""
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
