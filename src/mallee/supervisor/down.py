"""`mallee down`: end the all-in-one cloud and leave the host as it was before `mallee up`.

Record, then act: every live instance is first recorded as to be terminated; a running cloud then
terminates them itself (its reconciler and node), and is stopped. Whatever is left — VMs of this
node, its VPC network (bridges, routers, dnsmasq, nftables tables), its volume export servers,
its files — is removed, and instances no node runs any more are recorded as terminated. The data
directory (database, keys, objects, volumes) is kept: the next `mallee up` starts the same cloud
with no instances."""

from __future__ import annotations

import os
import signal
import sys
import time

from mallee.core.config import Config
from mallee.db.session import Database
from mallee.drivers import registry
from mallee.services.clc import live_instances
from mallee.services.node.teardown import remove_node
from mallee.services.storage.app import blockstore_options
from mallee.supervisor.up import pid_file

TERMINATE_WAIT = 60.0
STOP_WAIT = 30.0


def down(cfg: Config, yes: bool) -> int:
    db = (
        Database(cfg.database_url_for("clc"))
        if (cfg.data_dir / "clc.db").exists() or cfg.database_url
        else None
    )
    try:
        live = live_instances.live(db) if db else []
        if not yes and not _confirmed(cfg, live):
            print("mallee down: nothing done")
            return 1
        supervisor = _running_supervisor(cfg)
        if db and live:
            live_instances.want_terminated(db, "mallee down")
            if supervisor is not None:
                _wait_terminated(db)
        if supervisor is not None:
            _stop(supervisor)
        for line in remove_node(cfg):
            print(f"mallee down: {line}")
        # Volume exports outlive the SC (guests keep their disks through an SC restart); the VMs
        # that had them open are gone now, so their servers go too. The volumes stay.
        registry.blockstore(cfg.blockstore, **blockstore_options(cfg)).teardown()
        if db:
            ended = live_instances.record_terminated(db)
            if ended:
                print(f"mallee down: recorded as terminated: {' '.join(ended)}")
    finally:
        if db:
            db.dispose()
    print("mallee down: done (the data directory is kept: `mallee up` starts the same cloud again)")
    return 0


def _confirmed(cfg: Config, live: list[str]) -> bool:
    what = f"terminate {len(live)} instance(s) ({' '.join(live)}) and " if live else ""
    question = (
        f"mallee down will {what}remove this host's VMs, VPC networks ({cfg.vpc_prefix}v… bridges, "
        f"routers, dnsmasq, firewall tables) "
    )
    question += f"and node files ({cfg.node_dir}). Continue? [y/N] "
    if not sys.stdin.isatty():
        print(question + "\nmallee down: not a terminal; pass --yes to confirm", file=sys.stderr)
        return False
    return input(question).strip().lower() in ("y", "yes")


def _running_supervisor(cfg: Config) -> int | None:
    try:
        pid = int(pid_file(cfg).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _wait_terminated(db: Database) -> None:
    deadline = time.monotonic() + TERMINATE_WAIT
    while live_instances.live(db) and time.monotonic() < deadline:
        time.sleep(0.5)


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            print(f"mallee down: stopped mallee up (pid {pid})")
            return
        time.sleep(0.2)
    print(f"mallee down: mallee up (pid {pid}) did not stop in {STOP_WAIT:.0f}s", file=sys.stderr)
