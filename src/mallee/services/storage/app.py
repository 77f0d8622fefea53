"""The Storage Controller process: the volumes and snapshots of its zone (rpc/storage.py) on a
block-store driver (drivers/blockstore/) and a Walrus bucket (chunks.py), its own database
(`DATA_DIR/sc.db`, Alembic tree `sc`), a heartbeat to the CLC. At start it finishes what a crash
interrupted (`repair` of volumes and snapshots), in the background so that it answers at once."""

from __future__ import annotations

import threading
from pathlib import Path

from mallee.core import config as config_mod
from mallee.core.config import Config
from mallee.core.files import reachable_dir
from mallee.db import migrate
from mallee.db.session import Database
from mallee.drivers import registry
from mallee.rpc import cloud, component
from mallee.rpc.contract import Empty
from mallee.rpc.transport import Client, load_key
from mallee.services.storage import tables  # noqa: F401  (registers the SC's tables)
from mallee.services.storage.chunks import S3ChunkStore
from mallee.services.storage.snapshots import Snapshots
from mallee.services.storage.volumes import Volumes


def blockstore_options(cfg: Config) -> dict[str, object]:
    """How this SC's block-store driver is made (also for `mallee down`, which stops its servers)."""
    if cfg.blockstore == "file":
        return {"state_dir": reachable_dir(Path(cfg.sc_dir)), "host": cfg.host}
    if cfg.blockstore == "fake":
        return {"state_dir": cfg.data_dir / "sc"}
    return {}


def create_app(cfg: Config | None = None) -> component.App:
    cfg = cfg or config_mod.load()
    db = Database(cfg.database_url_for("sc"))
    migrate.upgrade(db.engine, "sc")
    options = blockstore_options(cfg)
    driver = registry.blockstore(cfg.blockstore, **options)
    clc = Client(cfg.clc_url, load_key(cfg.deployment_key_file))
    # Restores and imports are written beside the volumes (the same file system), not in /tmp.
    scratch = Path(str(options["state_dir"])) / "tmp" if "state_dir" in options else None
    snapshots = Snapshots(
        db,
        driver,
        lambda: S3ChunkStore(lambda: clc.call(cloud.SYSTEM_CREDENTIALS, Empty()), prefix=f"{cfg.zone}/"),
        work_dir=scratch,
    )
    volumes = Volumes(db, driver, snapshots, scratch)

    def repair() -> None:
        volumes.repair()
        snapshots.repair()

    threading.Thread(target=repair, name="sc-repair", daemon=True).start()
    return component.reporting_app(
        cfg,
        "sc",
        f"sc-{cfg.zone}",
        cfg.zone,
        lambda: {"blockstore": cfg.blockstore},
        volumes.handlers().merged(snapshots.handlers()),
    )
