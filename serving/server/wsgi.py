"""WSGI entry point for gunicorn: `gunicorn -c python:serving.server.gunicorn_config serving.server.wsgi:app`.

The app is built without warm-up: with `preload_app` this runs in the master, and LiteRT must not
start threads before fork. Each worker warms up in `post_worker_init` before it takes traffic.
"""

from serving.app import create_app

app = create_app(warm_up=False)
