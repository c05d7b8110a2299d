"""gunicorn worker that reads each request whole, within deadlines, before the app sees it.

Why: a threaded worker hands a connection to a thread as soon as its first byte arrives, so a few
clients trickling headers or a body one byte at a time hold every thread and the server stops
answering. This worker is gunicorn's gevent worker (one greenlet per connection, so a slow client
costs a socket, not a thread) plus two bounds that gevent alone lacks:

- headers (and the idle time before them on a keep-alive connection) within ``header_timeout``
  seconds: gunicorn's own keep-alive timeout around the header parser; the connection is then closed;
- the body within ``body_timeout`` seconds, read here into memory (at most ``max_body_bytes``):
  a trickling body gets 408, an oversized one (declared or chunked) 413, both as JSON.

Only then is the request dispatched, so the app never blocks on a client's network.

And one fairness rule gevent lacks: after each request, a connection waits until every other ready
connection has had its turn. Without it, a keep-alive client whose next request is already in the
socket is served again straight away while the others wait (measured at c=8 on 2 workers: p99 55-95 ms
with it missing, 12-22 ms with it).
"""

from __future__ import annotations

import contextlib
import io

import gevent
import orjson
from gunicorn import util
from gunicorn.http.body import Body
from gunicorn.workers.ggevent import GeventWorker

from serving.data_plane import DataPlane
from serving.settings import ServingSettings

READ_CHUNK = 1024 * 1024
RECV_SIZE = 64 * 1024  # gunicorn's default of 8 KiB costs ~4x the CPU on multi-megabyte bodies


def json_error(status: str, message: str) -> bytes:
    """A whole HTTP response `{"error": message}` that closes the connection, for answers the worker gives
    itself, outside the app."""
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin1") + body


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own error answers (431 for oversized headers, 400 for a malformed request line, ...) as
    JSON like every other answer of this server, instead of its HTML page."""
    util.write_nonblock(sock, json_error(f"{status_int} {reason}", mesg or reason))


def _reply_and_close(sock, status: str, message: str) -> None:
    """Answer before the app runs, then close: the rest of the request is not worth reading."""
    with contextlib.suppress(OSError):  # the client may be gone
        sock.sendall(json_error(status, message))
    raise StopIteration  # gunicorn's worker closes the connection on this


class BufferingGeventWorker(GeventWorker):
    def run(self) -> None:
        util.write_error = write_json_error  # gunicorn looks it up at each error; this process only
        # The app's own settings: the limits enforced here are the ones it documents.
        plane: DataPlane = self.wsgi.plane
        self.serving_settings: ServingSettings = plane.settings
        # Image decoding runs in one native thread per worker (DataPlane.run), off the event loop.
        pool = gevent.get_hub().threadpool
        pool.maxsize = 1
        plane.offload = lambda function, *args: pool.apply(function, args)
        self.open_connections = 0
        super().run()

    def handle(self, listener, client, addr):
        self.open_connections += 1
        try:
            super().handle(listener, client, addr)
        finally:
            self.open_connections -= 1

    def handle_request(self, listener_name, req, sock, addr):
        settings = self.serving_settings
        limit = settings.max_body_bytes
        if req.body is not None:
            declared = next((v for k, v in req.headers if k == "CONTENT-LENGTH"), None)
            if declared is not None and declared.isdigit() and int(declared) > limit:
                _reply_and_close(sock, "413 Payload Too Large", f"request body over {limit} bytes")
            data = None
            with gevent.Timeout(settings.body_timeout, False):
                data = _read_at_most(req.body, limit + 1)
            if data is None:
                _reply_and_close(
                    sock, "408 Request Timeout", f"request body not received within {settings.body_timeout:g} s"
                )
            if len(data) > limit:
                _reply_and_close(sock, "413 Payload Too Large", f"request body over {limit} bytes")
            req.body = Body(io.BytesIO(data))
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            if self.open_connections > 1:
                gevent.idle()  # the other connections' turn (fairness, see the module's docstring)


def _read_at_most(body: Body, limit: int) -> bytes:
    """Straight from gunicorn's length/chunked reader in 1 MiB steps (its `Body` wrapper re-buffers
    every KiB, several times the CPU), yielding between steps so other requests keep moving."""
    reader = body.reader
    unreader = getattr(reader, "unreader", None)
    if unreader is not None and hasattr(unreader, "mxchunk"):
        unreader.mxchunk = RECV_SIZE
    chunks, size = [], 0
    while size < limit:
        chunk = reader.read(min(READ_CHUNK, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        gevent.sleep(0)
    return b"".join(chunks)
