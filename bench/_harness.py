"""What every benchmark here needs around its measurements: the servers under test, started and
stopped by pid; the machine's facts and versions; a temporary work directory; signal handling.

Servers: `start_mallee` runs `python -m mallee.supervisor up` on a fresh data directory and a free
block of five ports, `start_moto` runs `python -m moto.server` on a free port. Each is ready when
the `ready` check the caller gives answers true. `ProcessSet.stop_all` sends SIGTERM to each process
started (a supervisor stops its own children), then SIGKILL to whatever of its tree is left.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from configparser import ConfigParser
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LOOPBACK = "127.0.0.1"
MALLEE_PORTS = 6  # the supervisor uses base .. base+5 (the node's metadata proxy is base+5)
WALRUS_OFFSET = 4  # Walrus's own port is the public port + 4
STARTUP_TIMEOUT = 90.0
STOP_GRACE = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Target:
    """A running server under test and how to sign requests for it."""

    name: str
    endpoint: str
    region: str
    access_key: str
    secret_key: str
    root_pid: int

    @property
    def port(self) -> int:
        return urlsplit(self.endpoint).port or 80


Ready = Callable[[Target], bool]


# ---------------------------------------------------------------------------------------------
# Processes: everything started here is stopped here, by pid.


class ProcessSet:
    """Child processes started in their own sessions, stopped by pid (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                list(cmd),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_DIR,
                start_new_session=True,
            )
        self._started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one process started here (and its tree) now."""
        if proc in self._started:
            self._started.remove(proc)
            _stop_tree(proc)

    def stop_all(self) -> None:
        for proc in reversed(self._started):
            _stop_tree(proc)
        self._started.clear()


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, read from /proc."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def _process_group(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])


def _stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM `proc` (a supervisor stops its own children), then SIGKILL whatever of its tree is left."""
    descendants = process_tree(proc.pid)[1:]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in descendants:
        if _process_group(pid) == proc.pid:  # still alive and still ours
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def service_pids(log_path: Path, service: str) -> list[int]:
    """The current pid of each process of a `mallee up` service (Walrus runs as several workers),
    from the supervisor's `started <service>[ worker N] (pid N)` lines; [] when none started."""
    log = log_path.read_text(errors="replace")
    found = re.findall(rf"started {service}(?: worker (\d+))? \(pid (\d+)\)", log)
    return list({worker: int(pid) for worker, pid in found}.values())


def cpu_seconds(root_pid: int) -> float:
    """User + system CPU time of a process tree so far."""
    total = 0
    for pid in process_tree(root_pid):
        try:
            fields_after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields_after_name[11]) + int(fields_after_name[12])  # utime, stime
    return total / CLK_TCK


# ---------------------------------------------------------------------------------------------
# Starting the servers


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port_block(count: int, avoid: set[int] | None = None) -> int:
    """A base port such that base .. base+count-1 are all free on loopback."""
    avoid = avoid or set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            base = int(sock.getsockname()[1])
        ports = range(base, base + count)
        if base + count < 65536 and not avoid & set(ports) and all(_port_free(p) for p in ports):
            return base
    raise RuntimeError("no block of free ports found")


def mallee_ports(target: Target) -> set[int]:
    """The five ports a Mallee target occupies (to keep other servers off them)."""
    return set(range(target.port, target.port + MALLEE_PORTS))


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def boto_client(service: str, target: Target, **config: Any) -> Any:
    """A boto3 client for `target` that does not retry; `config` adds to or overrides the defaults."""
    return boto3.client(
        service,
        endpoint_url=target.endpoint,
        region_name=target.region,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        config=BotoConfig(
            **{"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 10, **config}
        ),
    )


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log_path: Path) -> None:
    """Poll `ready` until it is true; fail if the process exits or STARTUP_TIMEOUT passes."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before {what}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} after {STARTUP_TIMEOUT:.0f}s:\n{tail(log_path)}")
        time.sleep(0.2)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read_mallee_profile(aws_dir: Path) -> tuple[str, str, str, str]:
    """endpoint_url, region, access key and secret key of the `mallee` profile the supervisor wrote."""
    config, creds = ConfigParser(), ConfigParser()
    config.read(aws_dir / "config")
    creds.read(aws_dir / "credentials")
    profile, keys = config["profile mallee"], creds["mallee"]
    return (
        profile["endpoint_url"],
        profile["region"],
        keys["aws_access_key_id"],
        keys["aws_secret_access_key"],
    )


def mallee_env(workdir: Path, port_base: int) -> dict[str, str]:
    """The environment `mallee up` and the `mallee`/`aws` commands share for the cloud in `workdir`."""
    aws_dir = workdir / "mallee-aws"
    env = dict(os.environ)
    env.update(
        MALLEE_DATA_DIR=str(workdir / "mallee-data"),
        MALLEE_PORT_BASE=str(port_base),
        # The API and S3 benchmarks need no VMs: the node runs its fake drivers (no bridge, no
        # libvirt) unless a benchmark asks for real ones through extra_env (bench/launch.py does).
        MALLEE_HYPERVISOR="fake",
        MALLEE_NETWORK="fake",
        MALLEE_NODE_DIR=str(workdir / "mallee-nc"),
        MALLEE_SEED_IMAGE="false",
        AWS_CONFIG_FILE=str(aws_dir / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(aws_dir / "credentials"),
    )
    return env


def start_mallee(
    procs: ProcessSet,
    workdir: Path,
    avoid: set[int],
    ready: Ready,
    what: str,
    *,
    extra_env: dict[str, str] | None = None,
    ports: int = MALLEE_PORTS,
    name: str = "mallee",
    source: Path | None = None,
) -> Target:
    """`python -m mallee.supervisor up` on a fresh data dir (`workdir`/mallee-data, log in
    `workdir`/mallee.log); ready when /healthz answers and then `ready(target)` is true.
    `extra_env`: more MALLEE_* settings; `ports`: how many free ports from the base to reserve;
    `source`: a tree of another revision (see `source_of`) to run instead of this one."""
    base = free_port_block(ports, avoid)
    aws_dir = workdir / "mallee-aws"
    env = mallee_env(workdir, base)
    env.update(extra_env or {})
    if source is not None:  # ahead of the venv's editable install of this tree
        env["PYTHONPATH"] = str(source / "src")
    log_path = workdir / "mallee.log"
    proc = procs.start([sys.executable, "-m", "mallee.supervisor", "up"], env, log_path)
    health = f"http://{LOOPBACK}:{base}/healthz"
    # The supervisor writes the aws profile before it starts the services, so once /healthz answers
    # the profile is complete.
    wait_until(lambda: _http_ok(health), proc, f"200 from {health}", log_path)
    endpoint, region, access_key, secret_key = _read_mallee_profile(aws_dir)
    target = Target(name, endpoint, region, access_key, secret_key, proc.pid)
    wait_until(lambda: ready(target), proc, f"{what} from mallee", log_path)
    return target


def source_of(revision: str, dest: Path) -> Path:
    """The repository's `src` at `revision` (a commit, tag or branch), extracted under `dest`, to
    measure a baseline revision beside the working tree in one run."""
    repo = Path(__file__).resolve().parent.parent
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", revision, "src"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def start_moto(procs: ProcessSet, workdir: Path, avoid: set[int], ready: Ready, what: str) -> Target:
    """moto's server on one free port (log in `workdir`/moto.log); ready when `ready(target)` is true."""
    port = free_port_block(1, avoid)
    log_path = workdir / "moto.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
    proc = procs.start(cmd, dict(os.environ), log_path)
    target = Target("moto", f"http://{LOOPBACK}:{port}", "us-east-1", "bench", "bench", proc.pid)
    wait_until(lambda: ready(target), proc, f"{what} from moto", log_path)
    return target


# ---------------------------------------------------------------------------------------------
# Facts


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def mallee_version() -> str:
    return f"{dist_version('mallee')} (git {_git_revision()})"


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }


def print_facts(machine: dict[str, Any], versions: dict[str, str]) -> None:
    """The `machine:` and `versions:` lines that head every report."""
    print(
        f"machine:  nproc {machine['nproc']} ({machine['cpu_model']}), {machine['platform']}, "
        f"Python {machine['python']}, load average {machine['loadavg_1min']} (1 min)"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))


# ---------------------------------------------------------------------------------------------
# Work directory and signals


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so `finally` blocks stop what we started."""
    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGINT, _raise_on_signal)  # even where a shell started us with SIGINT ignored


@contextmanager
def workspace(keep: bool, directory: Path | None = None) -> Iterator[Path]:
    """A fresh temporary directory (under `directory` if given), removed afterwards unless `keep`."""
    path = Path(tempfile.mkdtemp(prefix="mallee-bench-", dir=directory))
    try:
        yield path
    finally:
        if keep:
            print(f"work directory kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)
