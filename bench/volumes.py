"""Volume benchmark (root): what the Storage Controller's data path costs, with its baseline measured
in the same run.

1. The NBD export against the raw file, from this host: `qemu-img bench` (QEMU's own block layer, as
   a guest's disk uses it) writes then reads a 1 GiB volume in 1 MiB requests, 4 in flight, through
   the export the SC's file driver gives a node (qemu-storage-daemon on a unix socket, which uses
   the host's page cache), against the same on a volume file opened by QEMU directly with
   cache=none (O_DIRECT: what the disk gives a local file-backed VM disk, the goal's baseline) and,
   for reference, through the page cache (a memory copy: an upper bound no disk path reaches).
   Goal >= 0.8x of the O_DIRECT file. Fresh volumes each round; rounds rotate which goes first.

2. Snapshots, through the Storage Controller's own engine on the file driver (chunk store: a local
   directory, so the figures are the SC's work and not Walrus's): a snapshot of a 1 GiB volume of
   random bytes, and a restore of it into a new volume (MB/s); then the bytes a second snapshot
   stores after 1 % of the volume changed, in one region (goal <= 5 %) and in 4 KiB writes
   scattered over the whole volume (which touch most 4 MiB chunks: the chunk size's cost).

3. Through the whole cloud with real VMs (bench/_volumes_cloud.py): CreateVolume from a snapshot and
   Stop -> Start -> SSH in seconds, and dd in a guest on an attached volume against dd on the host.

    .venv/bin/python bench/volumes.py [--rounds 3] [--gib 1] [--guest-mib 256] [--no-cloud]

Everything lives in a temporary directory and is removed at the end, the export servers stopped by
their pids, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _harness import interrupt_on_signals, machine_facts, mallee_version, print_facts, workspace
from _volumes_cloud import cloud_figures, report

from mallee.db import migrate
from mallee.db.session import Database
from mallee.drivers.blockstore.file import FileBlockStore
from mallee.rpc import storage
from mallee.rpc.contract import Empty
from mallee.services.storage.chunks import DirChunkStore
from mallee.services.storage.snapshots import Snapshots
from mallee.services.storage.volumes import Volumes

NODE = "127.0.0.1:1"  # a node on this host: its export is a unix socket
VOLUME = "vol-00000000000000042"
MIB = 1024**2


def _bench(target: str, gib: int, write: bool, direct: bool = False) -> float:
    """Seconds `qemu-img bench` takes for `gib` GiB of 1 MiB requests, 4 in flight."""
    argv = ["qemu-img", "bench", "-f", "raw", "-s", "1M", "-c", str(gib * 1024), "-d", "4"]
    argv += ["-w"] if write else []
    argv += ["-t", "none"] if direct else []
    done = subprocess.run([*argv, target], capture_output=True, text=True, check=True)
    found = re.search(r"Run completed in ([0-9.]+) seconds", done.stdout)
    if found is None:
        raise RuntimeError(f"qemu-img bench said: {done.stdout} {done.stderr}")
    return float(found.group(1))


def nbd_against_file(rounds: int, gib: int) -> dict[str, list[float]]:
    """MB/s per round: write and read, through the export and on files (direct and cached)."""
    results: dict[str, list[float]] = {}
    work = Path(tempfile.mkdtemp(prefix="mallee-bench-vol-"))
    work.chmod(0o711)
    store = FileBlockStore(work / "sc")
    try:
        for n in range(rounds):
            ids = [f"vol-{3 * n + k:017x}" for k in (1, 2, 3)]
            for volume_id in ids:
                store.create(volume_id, gib)
            export = store.export(ids[0], NODE)
            targets = [
                ("nbd", f"nbd+unix:///{export.name}?socket={export.endpoints[0].socket}", False),
                ("file direct", str(store.open_path(ids[1])), True),
                ("file cached", str(store.open_path(ids[2])), False),
            ]
            for label, target, direct in targets[n % 3 :] + targets[: n % 3]:
                for kind, write in (("write", True), ("read", False)):
                    seconds = _bench(target, gib, write, direct)
                    results.setdefault(f"{kind} {label}", []).append(gib * 1024**3 / seconds / 1e6)
            store.unexport(ids[0])
            for volume_id in ids:
                store.delete(volume_id)
    finally:
        store.teardown()
        shutil.rmtree(work, ignore_errors=True)
    return results


def snapshots(gib: int) -> dict[str, float]:
    """Seconds of a snapshot and a restore of `gib` GiB of random bytes, and the fractions of the
    volume a next snapshot stores after 1 % changed (contiguous, scattered)."""
    work = Path(tempfile.mkdtemp(prefix="mallee-bench-snap-"))
    work.chmod(0o711)
    db = Database(f"sqlite:///{work / 'sc.db'}")
    migrate.upgrade(db.engine, "sc")
    driver = FileBlockStore(work / "sc")
    store = DirChunkStore(work / "chunks")
    engine = Snapshots(db, driver, lambda: store)
    volumes = Volumes(db, driver, engine, work / "sc" / "tmp")
    size = gib * 1024**3
    try:
        volumes.create(storage.VolumeSpec(volume_id=VOLUME, size_gib=gib))
        path = driver.open_path(VOLUME)
        with open(path, "r+b") as f:
            for offset in range(0, size, 4 * MIB):
                os.pwrite(f.fileno(), random.randbytes(4 * MIB), offset)
        os.sync()
        figures = {"snapshot": _timed(lambda: _take(engine, "snap-00000000000000001"))}
        figures["restore"] = _timed(lambda: _restore(volumes, gib))
        one_percent = size // 100
        with open(path, "r+b") as f:
            os.pwrite(f.fileno(), random.randbytes(one_percent), size // 5 + 12345)
        figures["contiguous"] = _take(engine, "snap-00000000000000002") / size
        rng = random.Random(7)
        with open(path, "r+b") as f:
            for _ in range(one_percent // 4096):
                os.pwrite(f.fileno(), rng.randbytes(4096), rng.randrange(size // 4096) * 4096)
        figures["scattered"] = _take(engine, "snap-00000000000000003") / size
        return figures
    finally:
        driver.teardown()
        db.dispose()
        shutil.rmtree(work, ignore_errors=True)


def _timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def _take(engine: Snapshots, snapshot_id: str) -> int:
    """Take the snapshot and wait for it; the bytes it stored."""
    engine.create(storage.SnapshotSpec(snapshot_id=snapshot_id, volume_id=VOLUME))
    while (found := engine.report().get(snapshot_id)) is None or found.state == "pending":
        time.sleep(0.01)
    if found.state != "completed":
        raise RuntimeError(f"{snapshot_id}: {found.reason}")
    return found.stored_bytes


def _restore(volumes: Volumes, gib: int) -> None:
    restored = "vol-00000000000000099"
    volumes.create(storage.VolumeSpec(volume_id=restored, size_gib=gib, snapshot_id="snap-00000000000000001"))
    while restored not in volumes.describe(Empty()).volumes:
        time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gib", type=int, default=1, help="volume size (1)")
    parser.add_argument("--guest-mib", type=int, default=256, help="MiB the guest writes and reads (256)")
    parser.add_argument("--no-cloud", action="store_true", help="skip part 3 (a cloud with real VMs)")
    args = parser.parse_args()
    if shutil.which("qemu-storage-daemon") is None or shutil.which("qemu-img") is None:
        print("ERROR: qemu-storage-daemon and qemu-img are needed (./setup installs them)", file=sys.stderr)
        return 1
    interrupt_on_signals()
    qemu = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print_facts(machine_facts(), {"mallee": mallee_version(), "qemu": qemu})
    started = time.monotonic()
    rates = nbd_against_file(args.rounds, args.gib)
    how = f"{args.gib} GiB in 1 MiB requests, 4 in flight (qemu-img bench), median of {args.rounds}"
    print(f"\n1. the NBD export against the raw file: {how} (goal >= 0.8)")
    header = f"{'NBD export':>12}{'file, O_DIRECT':>16}{'ratio':>8}{'file, cached':>14}{'ratio':>8}"
    print(f"   {'':<6}{header}  MB/s")
    for kind in ("write", "read"):
        nbd, direct, cached = (
            statistics.median(rates[f"{kind} {t}"]) for t in ("nbd", "file direct", "file cached")
        )
        row = f"{nbd:>12,.0f}{direct:>16,.0f}{nbd / direct:>8.3f}{cached:>14,.0f}{nbd / cached:>8.3f}"
        print(f"   {kind:<6}{row}")
    print(f"   ({time.monotonic() - started:.0f} s)")
    started = time.monotonic()
    found = snapshots(args.gib)
    size_mb = args.gib * 1024**3 / 1e6
    print(f"\n2. snapshots of a {args.gib} GiB volume of random bytes, 4 MiB chunks, local chunk store")
    taken, restored = found["snapshot"], found["restore"]
    print(f"   snapshot {taken:.2f} s ({size_mb / taken:,.0f} MB/s), "
          f"restore into a new volume {restored:.2f} s ({size_mb / restored:,.0f} MB/s)")  # fmt: skip
    print(f"   next snapshot after 1 % changed in one region: stores {found['contiguous']:.1%} of the volume "
          f"(goal <= 5 %: {found['contiguous'] / 0.05:.2f} of it)")  # fmt: skip
    print(f"   after a further 1 % in scattered 4 KiB writes: stores {found['scattered']:.1%}")
    print(f"   ({time.monotonic() - started:.0f} s)")
    if args.no_cloud:
        return 0
    started = time.monotonic()
    with workspace(keep=False) as work:
        figures = cloud_figures(args.rounds, args.gib, args.guest_mib, work)
    print(f"\n3. through the cloud (boto3, real VMs, the file driver), median of {args.rounds}")
    report(figures, args.gib, args.guest_mib)
    print(f"   ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(130)
