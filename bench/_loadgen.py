"""Load generators: replay one pre-signed HTTP request over N keep-alive connections for S seconds.

`run_wrk` drives `wrk` with bench/_load.lua (which counts non-2xx answers and prints one
`BENCH_RESULT {json}` line); `run_python` is the fallback, an asyncio client (uvloop when
installed) in the benchmark's own process, less accurate because it competes for the cores.
`choose_client` picks one. A request the server refuses to see twice (a sealed rpc: each nonce is
served once) names how to make a new one (`SignedRequest.fresh`), and only the Python client,
which makes one per send, can send it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _harness import BENCH_DIR, LOOPBACK

LUA_SCRIPT = BENCH_DIR / "_load.lua"


@dataclass(frozen=True)
class SignedRequest:
    """One HTTP request, signed once and replayed as is; or, with `fresh`, one of a kind made anew
    for each send (the Python client calls it before taking the send's start time)."""

    url: str
    headers: dict[str, str]
    body: str
    method: str = "POST"
    paths: tuple[str, ...] = ()  # if given, send to these targets in turn instead of the URL's
    source: str | None = None  # the local address to connect from (the Python client only; wrk has no way)
    fresh: Callable[[], SignedRequest] | None = None  # a new request per send (the Python client only)
    encoding: str = "utf-8"  # how the body is sent; latin-1 carries any bytes (a sealed rpc) as they are

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or LOOPBACK

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    @property
    def path(self) -> str:
        """The request target: path and query string."""
        parts = urlsplit(self.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def wire_bytes(self, path: str | None = None) -> bytes:
        body = self.body.encode(self.encoding)
        lines = [f"{self.method} {path or self.path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        lines += [f"Content-Length: {len(body)}", "", ""]
        return "\r\n".join(lines).encode() + body


@dataclass(frozen=True)
class LoadSettings:
    seconds: float
    warmup: float
    connections: int
    threads: int


@dataclass
class LoadResult:
    """What one load-generator run measured (latencies in milliseconds)."""

    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    loadgen_cpu_seconds: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors + self.timeouts

    @classmethod
    def combined(cls, loads: Sequence[LoadResult]) -> LoadResult:
        """Several runs as one: requests and seconds added up (so the rate is the overall one), the
        median of the runs' p50 and p99, the largest max, every error."""
        return cls(
            requests=sum(x.requests for x in loads),
            seconds=sum(x.seconds for x in loads),
            non2xx=sum(x.non2xx for x in loads),
            socket_errors=sum(x.socket_errors for x in loads),
            timeouts=sum(x.timeouts for x in loads),
            p50_ms=statistics.median(x.p50_ms for x in loads),
            p99_ms=statistics.median(x.p99_ms for x in loads),
            max_ms=max(x.max_ms for x in loads),
            loadgen_cpu_seconds=sum(x.loadgen_cpu_seconds for x in loads),
        )


LoadGenerator = Callable[[SignedRequest, float, LoadSettings, Path], LoadResult]


# ---------------------------------------------------------------------------------------------
# wrk


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"wrk\s+(\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(request: SignedRequest, seconds: float, settings: LoadSettings, workdir: Path) -> LoadResult:
    """One wrk run replaying `request`; parsed from the BENCH_RESULT line _load.lua prints."""
    if request.source is not None:
        raise RuntimeError(f"wrk cannot connect from {request.source}: measure this with the Python client")
    if request.fresh is not None:
        raise RuntimeError(f"wrk can only replay a request, {request.url} needs a new one per send")
    request_file = workdir / "request.txt"
    header_lines = "".join(f"{name}: {value}\n" for name, value in request.headers.items())
    request_file.write_text(f"{request.method}\n{request.path}\n{header_lines}\n{request.body}")
    whole_seconds = max(1, round(seconds))  # wrk takes whole seconds only
    cmd = [
        "wrk",
        f"-t{settings.threads}",
        f"-c{settings.connections}",
        f"-d{whole_seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA_SCRIPT),
        request.url,
    ]
    env = {**os.environ, "BENCH_REQUEST_FILE": str(request_file), "BENCH_THREADS": str(settings.threads)}
    if request.paths:
        paths_file = workdir / "paths.txt"
        paths_file.write_text("".join(f"{path}\n" for path in request.paths))
        env["BENCH_PATHS_FILE"] = str(paths_file)
    cpu_before = _children_cpu()
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=whole_seconds + 30, check=False
    )
    cpu_used = _children_cpu() - cpu_before
    match = re.search(r"^BENCH_RESULT (\{.*\})$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    raw = json.loads(match.group(1))
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        non2xx=raw["non2xx"],
        socket_errors=raw["connect_errors"] + raw["read_errors"] + raw["write_errors"],
        timeouts=raw["timeouts"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        loadgen_cpu_seconds=cpu_used,
    )


# ---------------------------------------------------------------------------------------------
# The asyncio fallback client


@dataclass
class _PyStats:
    latencies: list[float] = field(default_factory=list)
    non2xx: int = 0
    socket_errors: int = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response; (status, whether the connection stays open)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    version, status = status_line.split(" ", 2)[:2]
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        await _read_chunked(reader)
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    keep_alive = headers.get("connection") != "close" and version == "HTTP/1.1"
    return int(status), keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return


async def _py_connection(
    request: SignedRequest, deadline: float, stats: _PyStats, payloads: Iterator[bytes]
) -> None:
    writer: asyncio.StreamWriter | None = None
    try:
        while time.perf_counter() < deadline:
            payload = next(payloads)
            if writer is None:
                local = (request.source, 0) if request.source else None
                reader, writer = await asyncio.open_connection(request.host, request.port, local_addr=local)
            started = time.perf_counter()
            try:
                writer.write(payload)
                status, keep_alive = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError):
                stats.socket_errors += 1
                writer.close()
                writer = None
                continue
            stats.latencies.append(time.perf_counter() - started)
            stats.non2xx += not 200 <= status < 300
            if not keep_alive:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)]


async def _py_load(request: SignedRequest, seconds: float, connections: int) -> tuple[_PyStats, float]:
    stats = _PyStats()
    started = time.perf_counter()
    deadline = started + seconds
    payloads: Iterator[bytes]
    if request.fresh is not None:
        fresh = request.fresh
        payloads = (fresh().wire_bytes() for _ in itertools.repeat(None))
    else:
        # One shared cycle: no two requests in flight share a path while there are more paths
        # than connections.
        payloads = itertools.cycle([request.wire_bytes(p) for p in request.paths] or [request.wire_bytes()])
    await asyncio.gather(*(_py_connection(request, deadline, stats, payloads) for _ in range(connections)))
    return stats, time.perf_counter() - started


def run_python(request: SignedRequest, seconds: float, settings: LoadSettings, workdir: Path) -> LoadResult:
    """The fallback load generator: `connections` keep-alive connections in one asyncio loop."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    stats, elapsed = _new_event_loop_run(_py_load(request, seconds, settings.connections))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    latencies = sorted(stats.latencies)
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        non2xx=stats.non2xx,
        socket_errors=stats.socket_errors,
        timeouts=0,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=(latencies[-1] if latencies else 0.0) * 1000,
        loadgen_cpu_seconds=usage.ru_utime + usage.ru_stime - cpu_before,
    )


def _new_event_loop_run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def choose_client(name: str) -> tuple[str, LoadGenerator]:
    """wrk if asked for or found; else the Python client, saying why."""
    has_wrk = shutil.which("wrk") is not None
    if name == "wrk" and not has_wrk:
        raise SystemExit(
            "wrk not found: install it with `apt-get install -y wrk` (Debian), or use --client python"
        )
    if name == "python" or not has_wrk:
        if name == "auto":
            print(
                "note: wrk not found (`apt-get install -y wrk`); using the slower Python client, "
                "whose own CPU use competes with the servers",
                file=sys.stderr,
            )
        return "python", run_python
    return "wrk", run_wrk


def loadgen_version(client_name: str) -> str:
    return f"wrk {wrk_version()}" if client_name == "wrk" else "python asyncio client"
