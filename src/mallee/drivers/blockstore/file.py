"""The default block store: volumes are sparse raw files, served to nodes over NBD by
qemu-storage-daemon, one daemon per node so that a node is only ever given its own server.

Layout under `state_dir`: `volumes/<vol-id>.img`, `exports/<node>/` (one daemon's qmp.sock,
nbd.sock, pidfile and log) and `exports.json` (node -> daemon, volume -> node). Daemons run
daemonized, so they outlive the SC; a new driver object reads `exports.json` and asks each daemon
over QMP what it really serves.

A node on the SC's own host is served on a unix socket (group `kvm`, mode 0660, which libvirt's qemu
needs). A node on another machine gets a TCP port on `host`. Known gap: that port is open to any
machine that can reach `host`; binding it to the node's address needs an nftables rule not yet
written.

A point-in-time copy (for snapshots) of an exported volume is made by its daemon: `blockdev-backup`
with sync=full to a new sparse file in `tmp/` saves each old block to the copy before a guest's write
replaces it (copy-before-write), so the guest keeps writing meanwhile. An unexported volume is copied
under the driver's lock, so no export starts during the copy.

Growing an exported volume: NBD has no way to tell a connected client the size changed, and QEMU's
NBD server refuses to resize a node it serves. So resize re-creates the export at the new size when
no client is connected; while the node has the disk open, the file grows and the node sees the new
size after its next attach (unexport + export).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import grp
import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from mallee.core.files import fsync_dir, write_atomically
from mallee.drivers.blockstore import nbd_guard
from mallee.drivers.blockstore.base import (
    GIB,
    VOLUME_ID,
    BlockStore,
    BlockStoreError,
    Endpoint,
    Export,
    ExportedElsewhere,
    VolumeExists,
    VolumeNotFound,
    check_size,
    check_volume_id,
)
from mallee.drivers.blockstore.qmp import QmpClient, QmpError

_BLOCK = 1024 * 1024
_ZEROS = bytes(_BLOCK)
_UNIX_PATH_MAX = 107
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02  # sun_path is 108 bytes with its terminating NUL


class _Daemon(msgspec.Struct):
    dir: str
    pid: int
    socket: str = ""  # the NBD unix socket, for a node on this host
    host: str = ""  # or the TCP address, for a node elsewhere
    port: int = 0


class _Saved(msgspec.Struct):
    daemons: dict[str, _Daemon] = {}  # node -> its export server
    exports: dict[str, str] = {}  # volume -> node, as last asked; the daemons hold the truth


class FileBlockStore(BlockStore):
    capabilities = {"local_files": True, "exports_outlive_process": True, "bound_exports": True}

    def __init__(
        self, state_dir: Path, host: str = "127.0.0.1", qsd_binary: str = "qemu-storage-daemon"
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.qsd_binary = qsd_binary
        self._volumes = self.state_dir / "volumes"
        self._servers = self.state_dir / "exports"
        self._state_file = self.state_dir / "exports.json"
        self._guard = nbd_guard.table_for(self.state_dir)  # TCP exports: their node's address only
        self._lock = threading.RLock()
        self._volumes.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._servers.mkdir(exist_ok=True, mode=0o711)
        # libvirt's qemu (another user) must walk down to the NBD sockets; it may list nothing.
        for d in (self.state_dir, self._servers):
            os.chmod(d, (d.stat().st_mode & 0o777) | 0o711)

    # Volumes

    def create(self, volume_id: str, size_gib: int, source: Path | None = None) -> None:
        check_volume_id(volume_id)
        check_size(size_gib)
        with self._lock:
            existing = self.size_gib(volume_id)
            if existing is not None:
                if existing != size_gib:
                    raise VolumeExists(f"{volume_id} exists with {existing} GiB, not {size_gib}")
                return
            size = size_gib * GIB
            if source is not None and source.stat().st_size > size:
                raise BlockStoreError(f"{source} is larger than {size_gib} GiB")
            # Built under a temporary name and renamed: a crash never leaves half a volume.
            tmp = self._volumes / f".{volume_id}.tmp"
            tmp.unlink(missing_ok=True)
            try:
                with open(tmp, "wb") as f:
                    os.fchmod(f.fileno(), 0o600)
                    if source is not None:
                        with open(source, "rb") as src:
                            _copy_sparse(src, f)
                    f.truncate(size)
                    os.fsync(f.fileno())
                os.replace(tmp, self._path(volume_id))
            finally:
                tmp.unlink(missing_ok=True)
            fsync_dir(self._volumes)

    def delete(self, volume_id: str) -> None:
        check_volume_id(volume_id)
        with self._lock:
            self.unexport(volume_id)
            self._path(volume_id).unlink(missing_ok=True)
            fsync_dir(self._volumes)

    def resize(self, volume_id: str, size_gib: int) -> None:
        check_volume_id(volume_id)
        check_size(size_gib)
        with self._lock:
            current = self.size_gib(volume_id)
            if current is None:
                raise VolumeNotFound(f"no volume {volume_id}")
            if size_gib < current:
                raise BlockStoreError(f"{volume_id} is {current} GiB; volumes only grow")
            if size_gib == current:
                return
            with open(self._path(volume_id), "r+b") as f:
                f.truncate(size_gib * GIB)
                os.fsync(f.fileno())
            node = self.exports().get(volume_id)
            if node is not None:
                self._regrow_export(volume_id, self._load().daemons[node], size_gib * GIB)

    def size_gib(self, volume_id: str) -> int | None:
        check_volume_id(volume_id)
        try:
            return self._path(volume_id).stat().st_size // GIB
        except FileNotFoundError:
            return None

    def volumes(self) -> dict[str, int]:
        found = {}
        for path in self._volumes.glob("vol-*.img"):
            if VOLUME_ID.match(path.stem):
                found[path.stem] = path.stat().st_size // GIB
        return found

    def open_path(self, volume_id: str) -> Path | None:
        check_volume_id(volume_id)
        path = self._path(volume_id)
        if not path.exists():
            raise VolumeNotFound(f"no volume {volume_id}")
        return path

    @contextlib.contextmanager
    def point_in_time(self, volume_id: str) -> Iterator[Path]:
        check_volume_id(volume_id)
        scratch = self.state_dir / "tmp"
        scratch.mkdir(exist_ok=True, mode=0o700)
        _remove_orphans(scratch)
        # The pid in the name tells a later SC which copies a dead process left behind.
        target = scratch / f"{volume_id}.{os.getpid()}.{secrets.token_hex(4)}.pit"
        try:
            with self._lock:
                try:
                    size = self._path(volume_id).stat().st_size
                except FileNotFoundError:
                    raise VolumeNotFound(f"no volume {volume_id}") from None
                with open(target, "wb") as f:
                    os.fchmod(f.fileno(), 0o600)
                    f.truncate(size)
                saved = self._load()
                node = self._truth(saved).get(volume_id)
                if node is None:
                    _copy_extents(self._path(volume_id), target)
                else:
                    _backup(saved.daemons[node], volume_id, target, size)
            os.chmod(target, 0o400)
            yield target
        finally:
            target.unlink(missing_ok=True)

    # Exports

    def export(self, volume_id: str, node: str) -> Export:
        check_volume_id(volume_id)
        if not node:
            raise BlockStoreError("export needs the node's address")
        with self._lock:
            if self.size_gib(volume_id) is None:
                raise VolumeNotFound(f"no volume {volume_id}")
            saved = self._load()
            current = self._truth(saved).get(volume_id)
            if current is not None and current != node:
                raise ExportedElsewhere(f"{volume_id} is exported to {current}; detach it there first")
            daemon = saved.daemons.get(node)
            if daemon is None or not _alive(daemon):
                if daemon is not None and daemon.port:  # a dead server's port
                    nbd_guard.forget(self._guard, daemon.port)
                daemon = self._start(node)
                saved.daemons[node] = daemon
                self._save(saved)
            if current is None:
                with QmpClient(_qmp_path(daemon)) as qmp:
                    self._add_export(qmp, volume_id)
            saved.exports[volume_id] = node
            self._save(saved)
            return Export(protocol="nbd", name=volume_id, endpoints=(_endpoint(daemon),))

    def unexport(self, volume_id: str) -> None:
        check_volume_id(volume_id)
        with self._lock:
            saved = self._load()
            node = self._truth(saved).get(volume_id) or saved.exports.get(volume_id)
            saved.exports.pop(volume_id, None)
            daemon = saved.daemons.get(node) if node is not None else None
            if node is not None and daemon is not None:
                left: set[str] = set()
                if _alive(daemon):
                    with QmpClient(_qmp_path(daemon)) as qmp:
                        self._remove_export(qmp, volume_id)
                        left = _served(qmp)
                if not left:  # its node has nothing left here (or its server died): the server goes
                    _stop(daemon)
                    if daemon.port:
                        nbd_guard.forget(self._guard, daemon.port)
                    del saved.daemons[node]
            self._save(saved)

    def exports(self) -> dict[str, str]:
        with self._lock:
            return self._truth(self._load())

    def teardown(self) -> None:
        with self._lock:
            saved = self._load()
            daemons = list(saved.daemons.values())
            # Also a daemon started just before a crash, before exports.json named it.
            known = {d.dir for d in daemons}
            for pidfile in self._servers.glob("*/qsd.pid"):
                if str(pidfile.parent) not in known:
                    pid = _read_pid(pidfile)
                    if pid:
                        daemons.append(_Daemon(dir=str(pidfile.parent), pid=pid))
            for daemon in daemons:
                _stop(daemon)
            nbd_guard.teardown(self._guard)
            self._save(_Saved())

    # Helpers

    def _path(self, volume_id: str) -> Path:
        return self._volumes / f"{volume_id}.img"

    def _load(self) -> _Saved:
        try:
            return msgspec.json.decode(self._state_file.read_bytes(), type=_Saved)
        except FileNotFoundError:
            return _Saved()

    def _save(self, saved: _Saved) -> None:
        write_atomically(self._state_file, msgspec.json.encode(saved), 0o600, fsync=True)

    def _truth(self, saved: _Saved) -> dict[str, str]:
        """Volume -> node, as the live daemons serve it (a daemon gone with a reboot serves nothing)."""
        truth: dict[str, str] = {}
        for node, daemon in saved.daemons.items():
            if _alive(daemon):
                with QmpClient(_qmp_path(daemon)) as qmp:
                    truth.update(dict.fromkeys(_served(qmp), node))
        return truth

    def _add_export(self, qmp: QmpClient, volume_id: str) -> None:
        node = {"node-name": volume_id}
        if volume_id not in _nodes(qmp):  # else left by a crash between these two steps
            # O_DIRECT, as VM disks are opened (cache=none): the guest caches for itself, and it
            # doubles write throughput; io_uring rather than native AIO takes NBD writes from 0.66x
            # to 0.9x of QEMU's own O_DIRECT file access (bench/volumes.py). A QEMU without io_uring
            # falls back to native AIO, a file system without O_DIRECT (tmpfs) to the page cache.
            file = {"driver": "file", "filename": str(self._path(volume_id))}
            for extra in ({"cache": {"direct": True}, "aio": aio} for aio in ("io_uring", "native")):
                try:
                    qmp.execute("blockdev-add", driver="raw", file={**file, **extra}, **node)
                    break
                except QmpError:
                    continue
            else:
                qmp.execute("blockdev-add", driver="raw", file=file, **node)
        try:
            qmp.execute("block-export-add", type="nbd", id=volume_id, name=volume_id, writable=True, **node)
        except QmpError:
            qmp.execute("blockdev-del", **{"node-name": volume_id})
            raise

    def _remove_export(self, qmp: QmpClient, volume_id: str, mode: str = "hard") -> None:
        """`hard`: the contract has the node close the disk first, and a node that died with it open
        must not keep its export (and volume) pinned forever."""
        if volume_id in _served(qmp):
            qmp.execute("block-export-del", id=volume_id, mode=mode)
            _wait_until(lambda: volume_id not in _served(qmp), f"export {volume_id} to go")
        if volume_id in _nodes(qmp):
            qmp.execute("blockdev-del", **{"node-name": volume_id})

    def _regrow_export(self, volume_id: str, daemon: _Daemon, size: int) -> None:
        with QmpClient(_qmp_path(daemon)) as qmp:
            try:
                self._remove_export(qmp, volume_id, mode="safe")
            except QmpError:
                return  # the node has it open: it sees the new size on its next attach
            self._add_export(qmp, volume_id)
            nodes = qmp.execute("query-named-block-nodes", flat=True)
            length = next(n["image"]["virtual-size"] for n in nodes if n["node-name"] == volume_id)
            if length != size:
                raise BlockStoreError(f"{volume_id} re-exported at {length} bytes, not {size}")

    def _admit_only(self, node: str, port: int) -> None:
        host = _node_host(node)
        try:
            address = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
            nbd_guard.admit_only(self._guard, port, str(address))
        except (OSError, nbd_guard.GuardError) as exc:
            raise BlockStoreError(f"cannot bind the export for {node} to its address: {exc}") from exc

    def _start(self, node: str) -> _Daemon:
        """A new daemon for `node` (replacing a dead one's leftovers)."""
        digest = hashlib.sha256(node.encode()).hexdigest()[:8]
        directory = self._servers / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', node)[:32]}-{digest}"
        if len(str(directory / "qmp.sock")) > _UNIX_PATH_MAX:
            raise BlockStoreError(f"state directory {self.state_dir} is too long for unix socket paths")
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(mode=0o711)
        os.chmod(directory, 0o711)
        local = _is_local(_node_host(node), self.host)
        for _ in range(3):  # a free port may be taken between choosing it and binding it
            daemon = _Daemon(dir=str(directory), pid=0)
            if local:
                daemon.socket = str(directory / "nbd.sock")
                nbd = f"addr.type=unix,addr.path={_opt(daemon.socket)}"
            else:
                daemon.host, daemon.port = self.host, _free_port(self.host)
                self._admit_only(node, daemon.port)  # before the daemon listens
                nbd = f"addr.type=inet,addr.host={self.host},addr.port={daemon.port}"
            pidfile = directory / "qsd.pid"
            chardev = f"socket,id=qmp,path={_opt(_qmp_path(daemon))},server=on,wait=off"
            args = [self.qsd_binary, "--daemonize", "--pidfile", str(pidfile), "--chardev", chardev]
            args += ["--monitor", "chardev=qmp", "--nbd-server", nbd]  # the monitor after its chardev
            log = directory / "qsd.log"
            with open(log, "wb") as err:
                done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=30)
            daemon.pid = _read_pid(pidfile)
            if done.returncode == 0 and daemon.pid:
                break
            if daemon.port:
                nbd_guard.forget(self._guard, daemon.port)
            if local or "Address already in use" not in log.read_text(errors="replace"):
                break
        if done.returncode != 0 or not daemon.pid:
            message = log.read_text(errors="replace").strip()
            raise BlockStoreError(f"qemu-storage-daemon for {node} failed: {message or done.returncode}")
        if daemon.socket:
            with contextlib.suppress(KeyError):  # no kvm group: then qemu runs as root here
                os.chown(daemon.socket, -1, grp.getgrnam("kvm").gr_gid)
            os.chmod(daemon.socket, 0o660)
        return daemon


def _backup(daemon: _Daemon, volume_id: str, target: Path, size: int) -> None:
    """Have the daemon serving `volume_id` copy it, as of now, into `target` (a sparse file of its
    size). `discard=unmap` on the target turns the source's zero ranges into holes."""
    name = f"pit-{secrets.token_hex(6)}"  # node and job id (QEMU ids: a letter, then at most 31 more)
    # A full copy at a slow 20 MB/s; a job that takes longer is cancelled.
    deadline = time.monotonic() + 60 + size / 20e6
    with QmpClient(_qmp_path(daemon)) as qmp:
        _clear_backups(qmp)
        file = {"driver": "file", "filename": str(target), "discard": "unmap"}
        qmp.execute("blockdev-add", driver="raw", discard="unmap", file=file, **{"node-name": name})
        try:
            job = {"job-id": name, "device": volume_id, "target": name}
            qmp.execute("blockdev-backup", sync="full", **{"auto-dismiss": False}, **job)
            error = _finish_job(qmp, name, deadline)
        finally:
            qmp.execute("blockdev-del", **{"node-name": name})
    if error:
        raise BlockStoreError(f"point-in-time copy of {volume_id} failed: {error}")
    # QEMU 7.2's block-copy writes the source's holes as allocated zeros (write-zeroes without
    # MAY_UNMAP, whatever the target's discard option): give the space back.
    _punch_zeros(target)


def _finish_job(qmp: QmpClient, job_id: str, deadline: float) -> str:
    """Wait for a job (started with auto-dismiss off) to conclude, dismiss it and return its error
    ("" when it succeeded); past `deadline` it is cancelled."""
    delay, cancelled = 0.005, False
    while True:
        job = next((j for j in qmp.execute("query-jobs") if j["id"] == job_id), None)
        if job is None:
            return "the job vanished"
        if job["status"] == "concluded":
            qmp.execute("job-dismiss", id=job_id)
            return "timed out" if cancelled else str(job.get("error", ""))
        if time.monotonic() > deadline and not cancelled:
            qmp.execute("job-cancel", id=job_id)
            cancelled = True
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _clear_backups(qmp: QmpClient) -> None:
    """Remove the copy jobs and target nodes a crashed SC left in this daemon (the driver's lock is
    held, so none of them is in use)."""
    for job in qmp.execute("query-jobs"):
        if job["id"].startswith("pit-"):
            if job["status"] != "concluded":
                qmp.execute("job-cancel", id=job["id"])
            _finish_job(qmp, job["id"], time.monotonic())
    for node in _nodes(qmp):
        if node.startswith("pit-"):
            qmp.execute("blockdev-del", **{"node-name": node})


def _remove_orphans(scratch: Path) -> None:
    """Point-in-time files of processes that are gone (an SC killed while it read one)."""
    for path in scratch.glob("*.pit"):
        pid = path.name.split(".")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)


def _punch_zeros(path: Path) -> None:
    """Turn the all-zero blocks of `path` into holes."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(path, "r+b") as f:
        fd, offset, end = f.fileno(), 0, os.fstat(f.fileno()).st_size
        while offset < end:
            block = os.pread(fd, _BLOCK, offset)
            if not block:
                return
            if block == _ZEROS[: len(block)]:
                mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
                if libc.fallocate(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(len(block))) != 0:
                    return  # a file system without hole punching: the copy stays allocated
            offset += len(block)


def _copy_extents(source: Path, target: Path) -> None:
    """Copy the data extents of `source` into `target` (of its size), skipping holes and zeros, so
    the copy stays sparse."""
    with open(source, "rb") as src, open(target, "r+b") as dst:
        fd, out = src.fileno(), dst.fileno()
        end, offset = os.fstat(fd).st_size, 0
        while offset < end:
            try:
                data = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data past offset
                    return
                raise
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            while data < hole:
                block = os.pread(fd, min(_BLOCK, hole - data), data)
                if not block:
                    return
                if block != _ZEROS[: len(block)]:
                    os.pwrite(out, block, data)
                data += len(block)
            offset = hole


def _copy_sparse(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy, seeking over all-zero blocks so the volume stays sparse (the caller truncates)."""
    while block := src.read(_BLOCK):
        if block == _ZEROS[: len(block)]:
            dst.seek(len(block), os.SEEK_CUR)
        else:
            dst.write(block)


def _qmp_path(daemon: _Daemon) -> str:
    return os.path.join(daemon.dir, "qmp.sock")


def _opt(value: str) -> str:
    """QEMU option strings split on commas; a literal comma is doubled."""
    return value.replace(",", ",,")


def _endpoint(daemon: _Daemon) -> Endpoint:
    if daemon.socket:
        return Endpoint(socket=daemon.socket)
    return Endpoint(host=daemon.host, port=daemon.port)


def _served(qmp: QmpClient) -> set[str]:
    return {e["id"] for e in qmp.execute("query-block-exports")}


def _nodes(qmp: QmpClient) -> set[str]:
    return {n["node-name"] for n in qmp.execute("query-named-block-nodes", flat=True)}


def _node_host(node: str) -> str:
    """The host part of a node's rpc address: "10.0.0.5:8775", "[::1]:8775" or a bare host."""
    if node.startswith("["):
        return node[1 : node.find("]")]
    return node.rsplit(":", 1)[0] if node.count(":") == 1 else node


def _is_local(host: str, own: str) -> bool:
    if host in (own, "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _read_pid(pidfile: Path) -> int:
    try:
        return int(pidfile.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _alive(daemon: _Daemon) -> bool:
    """The pid is still this daemon (not a dead one's pid reused by another process)."""
    try:
        cmdline = Path(f"/proc/{daemon.pid}/cmdline").read_bytes()
        state = Path(f"/proc/{daemon.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and _opt(_qmp_path(daemon)).encode() in cmdline


def _stop(daemon: _Daemon) -> None:
    """SIGTERM, then SIGKILL; by pid, and only if the pid is still this daemon's."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _alive(daemon):
            break
        try:
            os.kill(daemon.pid, sig)
        except ProcessLookupError:
            break
        try:
            _wait_until(lambda: not _alive(daemon), f"qemu-storage-daemon {daemon.pid} to exit", 5.0)
        except BlockStoreError:
            continue
    shutil.rmtree(daemon.dir, ignore_errors=True)


def _wait_until(done: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not done():
        if time.monotonic() > deadline:
            raise BlockStoreError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
