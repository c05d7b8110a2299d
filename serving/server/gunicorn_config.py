"""gunicorn settings, read from the same MLOPS_SERVE_* environment as the app. Importing this file binds
nothing: the listening sockets are made in the master's `on_starting` hook (see serving.server.listeners)."""

import os
import shutil
import tempfile

from serving.server.listeners import gunicorn_binds
from serving.settings import ServingSettings

_settings = ServingSettings()

# Must be set before prometheus_client creates the metrics (the preloaded app imports them).
_own_metrics_dir = None
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    _own_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="clothes-prometheus-")

workers = _settings.workers
# gevent worker that reads each request whole before dispatch: slow clients cost a socket, not a thread.
worker_class = "serving.server.worker.BufferingGeventWorker"
worker_connections = _settings.worker_connections
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.header_timeout  # the worker bounds reading headers (and idling) by this
preload_app = True
control_socket_disable = True  # no gunicornc control socket (needs a writable home)
accesslog = None
errorlog = "-"
loglevel = "info"


def on_starting(server):
    """The listening sockets, made once in the master right before gunicorn creates its listeners from
    `bind`: a module that binds when imported fails any import while the port is taken."""
    server.cfg.set("bind", gunicorn_binds(_settings))


def post_worker_init(worker):
    """Warm every model in this worker before it accepts requests (ready only after that), and start its
    prediction log writer with gevent's locks."""
    worker.wsgi.plane.models.warm_up()
    if worker.wsgi.plane.log is not None:
        worker.wsgi.plane.log.start_in_worker()


def worker_exit(server, worker):
    """Flush the prediction log before the worker goes."""
    if worker.wsgi.plane.log is not None:
        worker.wsgi.plane.log.close()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """The per-start metrics directory goes with the server."""
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
