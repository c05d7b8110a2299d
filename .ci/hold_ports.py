"""Listen on the given loopback ports until killed, answering nothing: CI's stand-in for what users have
running while they run the tests (production on 8080, the stack's Prefect and MLflow servers)."""

import signal
import socket
import sys

held = []
for port in map(int, sys.argv[1:]):
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:  # something listens there already: held either way
        print(f"== 127.0.0.1:{port} is held by another process already", flush=True)
        continue
    sock.listen()
    held.append(sock)
print(f"== holding 127.0.0.1 ports {[s.getsockname()[1] for s in held]}", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
