"""The production HTTP server: gunicorn's configuration, its buffering gevent worker, its listening
sockets and the WSGI entry point."""
