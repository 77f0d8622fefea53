"""`mallee up`: initialise the data directory, then run the five services as child processes,
restarting any that crash, and stopping them all on Ctrl-C or SIGTERM. Instances keep running when
the cloud stops (the next `mallee up` re-adopts them); it says which. `mallee down` ends them and
removes what the cloud set up on this host (supervisor/down.py)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from mallee.core import logging as mlog
from mallee.core import metrics
from mallee.core.config import SERVICES, Config, environ_for_children
from mallee.db.session import Database
from mallee.services.clc import live_instances
from mallee.services.clc.bootstrap import ADMIN_PROFILE, initialise
from mallee.supervisor.seed import launch_hint, seed_ebs_image, seed_image

log = logging.getLogger("mallee.up")

MAX_BACKOFF = 30.0
STOP_GRACE = 10.0


@dataclass
class Child:
    service: str
    worker: int | None = None  # Walrus runs as several workers
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    @property
    def name(self) -> str:
        return self.service if self.worker is None else f"{self.service} worker {self.worker}"


class Supervisor:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.children = [
            Child(s, worker)
            for s in SERVICES
            for worker in (range(cfg.walrus_worker_count) if s == "walrus" else [None])
        ]
        self.stopping = False

    def _spawn(self, child: Child) -> None:
        cmd = [sys.executable, "-m", "mallee.supervisor", "serve", child.service]
        if child.worker is not None:
            cmd += ["--worker", str(child.worker)]
        child.process = subprocess.Popen(cmd, env=environ_for_children(self.cfg))
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.process.pid)

    def _stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop_signal)
        signal.signal(signal.SIGINT, self._stop_signal)
        pid_file(self.cfg).write_text(f"{os.getpid()}\n")
        for child in self.children:
            self._spawn(child)
            if child.service == "clc":
                self._wait_healthy("clc", timeout=30)
        self._announce()
        if self.cfg.seed_image:
            threading.Thread(target=self._seed, name="seed-image", daemon=True).start()
        while not self.stopping:
            self._watch()
            time.sleep(0.2)
        return self._stop_all()

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                if now >= child.next_start:
                    self._spawn(child)
                continue
            code = child.process.poll()
            if code is None:
                if now - child.started_at > 60:
                    child.restarts = 0  # it has been stable: forget old crashes
                continue
            child.restarts += 1
            delay = min(MAX_BACKOFF, 0.5 * 2 ** (child.restarts - 1))
            log.warning(
                "%s exited with code %s; restarting in %.1fs (restart #%d)",
                child.name,
                code,
                delay,
                child.restarts,
            )
            child.process = None
            child.next_start = now + delay

    def _stop_all(self) -> int:
        log.info("stopping all services")
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for p in running:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for p in running:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in time; killing it", p.pid)
                p.kill()
                p.wait()
        log.info("all services stopped")
        self._report_left_running()
        pid_file(self.cfg).unlink(missing_ok=True)
        return 0

    def _report_left_running(self) -> None:
        db = Database(self.cfg.database_url_for("clc"))
        try:
            left = live_instances.live(db)
        finally:
            db.dispose()
        if left:
            log.info(
                "mallee up leaves running %d instance(s): %s; `mallee up` re-adopts them, "
                "`mallee down` ends them and removes the cloud from this host",
                len(left),
                " ".join(left),
            )

    def _wait_healthy(self, service: str, timeout: float) -> None:
        url = f"http://{self.cfg.host}:{self.cfg.port(service)}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        log.warning("%s did not answer %s within %ss", service, url, timeout)

    def _seed(self) -> None:
        ami = seed_image(self.cfg)
        ebs_ami = seed_ebs_image(self.cfg, ami) if ami and not self.stopping else None
        if ami and not self.stopping:
            print(launch_hint(ami, ebs_ami), flush=True)

    def _announce(self) -> None:
        cfg = self.cfg
        lines = [
            "",
            f"Mallee is up. Public endpoint (EC2, S3, IAM, STS): {cfg.endpoint_url}  region {cfg.region}",
            f"  data directory: {cfg.data_dir}",
            f"  admin credentials: aws profile '{ADMIN_PROFILE}' in {cfg.aws_config_file}",
            f"  try:  aws --profile {ADMIN_PROFILE} ec2 describe-availability-zones",
            "        mallee status",
            "  stop:  Ctrl-C (or SIGTERM to this process)",
            "",
        ]
        print("\n".join(lines), flush=True)


def pid_file(cfg: Config) -> Path:
    """Where a running `mallee up` keeps its pid (for `mallee down`)."""
    return cfg.data_dir / "up.pid"


def up(cfg: Config) -> int:
    mlog.setup("up", cfg.log_level)
    metrics.forget_counts(cfg.data_dir)  # a new run counts from zero
    admin = initialise(cfg)
    if admin.created:
        log.info("initialised %s: system account %s", cfg.data_dir, admin.account_id)
    log.info("supervisor pid %d", os.getpid())
    return Supervisor(cfg).run()
