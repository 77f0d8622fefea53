"""A throwaway PostgreSQL server for tests, started as CI does on a fresh Debian machine: the
binaries of the `postgresql` package (installed by ./setup), a cluster in a temporary directory
owned by the `postgres` OS user, listening on a free port of 127.0.0.1 only; stopped by pid."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

PG_OWNER = "postgres"  # the OS user the server runs as when the tests run as root
TEST_DB = "mallee_test"


# -- the PostgreSQL server ----------------------------------------------------------------------


def pg_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has the server binaries."""
    found: list[tuple[tuple[int, ...], Path]] = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        path = Path(d)
        if all((path / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            version = tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)
            found.append((version, path))
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A throwaway cluster: initdb, start, stop, delete; stop() is idempotent and never raises."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.as_root = os.geteuid() == 0
        # Not under pytest's tmp_path: that lives in a 0700 directory the postgres user cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="mallee-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.stopped = False
        if self.as_root:
            shutil.chown(self.root, user=PG_OWNER, group=PG_OWNER)

    def _run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = ["runuser", "-u", PG_OWNER, "--", *cmd] if self.as_root else list(cmd)
        return subprocess.run(
            argv,
            cwd=self.root,  # the postgres user may not be able to read the caller's cwd
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _check(self, what: str, proc: subprocess.CompletedProcess[str]) -> None:
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise RuntimeError(
                f"PostgreSQL {what} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{log}"
            )

    def initdb(self) -> None:
        proc = self._run(
            str(self.bin / "initdb"),
            "-D", str(self.data),
            "-U", "postgres",
            "--auth=trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        self._check("initdb", proc)

    def start(self) -> None:
        last: Exception | None = None
        for _ in range(3):  # the free port may be taken between probing and binding it
            self.port = _free_port()
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-c port={self.port}",
                    f"-c unix_socket_directories={self.root}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=200",
                ]
            )
            proc = self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                "-o", options, "-w", "-t", "60", "start",
            )  # fmt: skip
            try:
                self._check("start", proc)
                self._wait_ready()
                return
            except RuntimeError as exc:
                last = exc
                self._stop_server()
        raise RuntimeError(f"could not start PostgreSQL: {last}")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL does not accept connections: {exc}") from exc
                time.sleep(0.1)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _stop_server(self) -> None:
        pid = self._postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        # Whatever pg_ctl did, make sure the postmaster is gone (SIGTERM, then SIGKILL).
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if not _alive(pid):
                return
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            self._stop_server()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child would still answer kill(0); the postmaster is never our child (pg_ctl
    # daemonizes it), but check /proc anyway.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def admin(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def start_server() -> PostgresServer:
    """A running server, or RuntimeError saying what is missing (./setup installs it)."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise RuntimeError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
            "run ./setup (it installs the Debian `postgresql` package) and try again."
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_OWNER)
        except KeyError as exc:
            raise RuntimeError(f"no `{PG_OWNER}` OS user to run PostgreSQL as: run ./setup.") from exc
    server = PostgresServer(bin_dir)
    try:
        server.initdb()
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
