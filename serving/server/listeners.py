"""The server's listening sockets, made before gunicorn starts and handed to it as `fd://` binds.

Why not gunicorn's own `reuse_port`: it makes every worker bind its own sockets, and a Unix socket refuses
SO_REUSEPORT (EOPNOTSUPP), so an instance sharing its port with twins could not also have a socket of its
own for its healthcheck. Here only the shared TCP port gets SO_REUSEPORT; gunicorn listens on all of them.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from serving.settings import ServingSettings


def tcp_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # old and new instance (or replicas) share the port; the kernel spreads connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def unix_socket(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket of a previous start
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    return sock


def bound_sockets(settings: ServingSettings) -> list[socket.socket]:
    """The public port (SO_REUSEPORT when configured), the private port the blue/green deployer checks,
    and the Unix socket the healthcheck asks: only this instance answers on the last two."""
    sockets = [tcp_socket(settings.host, settings.port, settings.reuse_port)]
    if settings.private_port:
        sockets.append(tcp_socket(settings.host, settings.private_port, reuse_port=False))
    if settings.health_socket:
        sockets.append(unix_socket(settings.health_socket))
    return sockets


def gunicorn_binds(settings: ServingSettings) -> list[str]:
    """`fd://N` binds; gunicorn takes each descriptor over (and closes ours), so the socket objects let go."""
    binds = []
    for sock in bound_sockets(settings):
        fd = sock.detach()
        os.set_inheritable(fd, True)
        binds.append(f"fd://{fd}")
    return binds
