"""wrk (Debian package `wrk`) as the benchmarks' load generator: one request repeated at a fixed
concurrency for a fixed time, its throughput, latency percentiles and failures parsed from the report."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
WRK_SCRIPT = """wrk.method = "POST"
{headers}
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
"""


@dataclass
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass
class Load:
    """One request, repeated: its body, content type and extra headers; `images` per request."""

    body: Path
    content_type: str
    images: int = 1
    headers: dict[str, str] | None = None
    delay_ms: float | None = None  # each connection waits this long before its next request: a paced load

    def script(self) -> Path:
        headers = {"Content-Type": self.content_type, **(self.headers or {})}
        lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script = WRK_SCRIPT.format(headers=lines, body=self.body)
        if self.delay_ms is not None:
            script += f"function delay()\n  return {self.delay_ms:.3f}\nend\n"
        path = self.body.with_name(f"{self.body.stem}-{self.delay_ms or 0:g}.lua")
        path.write_text(script)
        return path


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * UNITS[unit]


def wrk_command(url: str, load: Load, connections: int, seconds: float) -> list[str]:
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(load.script()), url]


def run_wrk(url: str, load: Load, connections: int, seconds: float) -> LoadResult:
    command = wrk_command(url, load, connections, seconds)
    return parse_report(
        subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    )


def parse_report(out: str) -> LoadResult:
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.MULTILINE))  # "1.14s " has a trailing space
    if "99" not in percentiles:
        raise RuntimeError(f"no latency distribution in wrk's output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return LoadResult(
        requests_per_s=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),
        errors=(int(errors.group(1)) if errors else 0)
        + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    )
