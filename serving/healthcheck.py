"""`python -m serving.healthcheck`: exit 0 when this container's server is ready (Docker HEALTHCHECK).

It asks through the instance's own Unix socket when there is one: replicas that share a port with
SO_REUSEPORT would otherwise answer for each other, and swarm would roll on before a new one is ready."""

import http.client
import socket
import sys

from serving.settings import ServingSettings


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def connection(settings: ServingSettings, timeout: float) -> http.client.HTTPConnection:
    if settings.health_socket:
        return UnixConnection(str(settings.health_socket), timeout)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    return http.client.HTTPConnection(host, settings.port, timeout=timeout)


def main() -> int:
    try:
        conn = connection(ServingSettings(), timeout=2)
        conn.request("GET", "/health/ready")
        return 0 if conn.getresponse().status == 200 else 1
    except (OSError, http.client.HTTPException):
        return 1


if __name__ == "__main__":
    sys.exit(main())
