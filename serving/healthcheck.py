"""`python -m serving.healthcheck`: exit 0 when this container's server is ready (Docker HEALTHCHECK)."""

import sys
import urllib.request

from serving.settings import ServingSettings


def main() -> int:
    settings = ServingSettings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    try:
        with urllib.request.urlopen(f"http://{host}:{settings.port}/health/ready", timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
