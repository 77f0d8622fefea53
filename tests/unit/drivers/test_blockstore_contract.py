"""The block-store contract (drivers/blockstore/base.py), run against the fake always and against the
file driver when running as root with qemu-storage-daemon and qemu-io installed; then the file
driver's own promises, checked through real NBD connections."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mallee.drivers import registry
from mallee.drivers.blockstore.base import (
    GIB,
    BlockStore,
    BlockStoreError,
    Export,
    ExportedElsewhere,
    VolumeExists,
    VolumeNotFound,
)
from mallee.drivers.blockstore.fake import FakeBlockStore
from mallee.drivers.blockstore.file import FileBlockStore
from mallee.drivers.blockstore.qmp import QmpClient, QmpError

REAL = os.geteuid() == 0 and all(shutil.which(b) for b in ("qemu-storage-daemon", "qemu-io"))
NODE_A, NODE_B = "127.0.0.1:8775", "127.0.0.2:8775"
VOL, VOL2 = "vol-0123456789abcdef0", "vol-00000000aaaa"

real_only = pytest.mark.skipif(not REAL, reason="needs root, qemu-storage-daemon and qemu-io")


@dataclass
class Env:
    state_dir: Path
    new_driver: Callable[[], BlockStore]  # another driver object on the same state (an SC restart)
    driver: BlockStore


DRIVERS: dict[str, Callable[[Path], BlockStore]] = {
    "fake": lambda d: FakeBlockStore(state_dir=d),
    "file": lambda d: FileBlockStore(d),
}


def _env(name: str) -> Iterator[Env]:
    state_dir = Path(tempfile.mkdtemp(prefix="mallee-bs-", dir="/tmp"))
    env = Env(state_dir, lambda: DRIVERS[name](state_dir), DRIVERS[name](state_dir))
    try:
        yield env
    finally:
        try:
            env.new_driver().teardown()
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(params=["fake", pytest.param("file", marks=real_only)])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    yield from _env(request.param)


@pytest.fixture
def real() -> Iterator[Env]:
    if not REAL:
        pytest.skip("needs root, qemu-storage-daemon and qemu-io")
    yield from _env("file")


def _bytes(store: BlockStore, volume_id: str, length: int, offset: int = 0) -> bytes | None:
    path = store.open_path(volume_id)
    if path is None:
        return None
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


# The contract, for every driver


def test_create_makes_a_zeroed_volume_of_whole_gib(env: Env) -> None:
    env.driver.create(VOL, 1)
    assert env.driver.size_gib(VOL) == 1
    assert env.driver.volumes() == {VOL: 1}
    assert _bytes(env.driver, VOL, 4096, GIB - 4096) in (bytes(4096), None)


def test_create_from_source_copies_its_bytes_and_zeros_the_rest(env: Env) -> None:
    source = env.state_dir / "source.raw"
    source.write_bytes(b"\x01" * 4096 + bytes(3 * 1024 * 1024) + b"tail")
    env.driver.create(VOL, 2, source=source)
    assert env.driver.size_gib(VOL) == 2
    if env.driver.capabilities.get("local_files"):
        assert _bytes(env.driver, VOL, 4096) == b"\x01" * 4096
        assert _bytes(env.driver, VOL, 8, 4096 + 3 * 1024 * 1024) == b"tail" + bytes(4)


def test_a_source_larger_than_the_volume_is_refused(env: Env) -> None:
    source = env.state_dir / "big.raw"
    with open(source, "wb") as f:
        f.truncate(GIB + 1)
    with pytest.raises(BlockStoreError):
        env.driver.create(VOL, 1, source=source)
    assert env.driver.size_gib(VOL) is None


def test_create_again_with_the_same_size_is_idempotent_and_another_size_is_refused(env: Env) -> None:
    env.driver.create(VOL, 1)
    env.driver.create(VOL, 1)
    with pytest.raises(VolumeExists):
        env.driver.create(VOL, 2)
    assert env.driver.volumes() == {VOL: 1}


@pytest.mark.parametrize("volume_id", ["vol-123", "vol-XYZ12345", "../vol-12345678", "i-12345678", ""])
def test_malformed_ids_are_refused(env: Env, volume_id: str) -> None:
    with pytest.raises(BlockStoreError):
        env.driver.create(volume_id, 1)
    with pytest.raises(BlockStoreError):
        env.driver.export(volume_id, NODE_A)


def test_volumes_are_at_least_one_gib(env: Env) -> None:
    with pytest.raises(BlockStoreError):
        env.driver.create(VOL, 0)


def test_delete_removes_the_volume_and_twice_is_success(env: Env) -> None:
    env.driver.create(VOL, 1)
    env.driver.delete(VOL)
    env.driver.delete(VOL)
    assert env.driver.size_gib(VOL) is None
    assert env.driver.volumes() == {}


def test_resize_grows_keeping_bytes_and_never_shrinks(env: Env) -> None:
    source = env.state_dir / "source.raw"
    source.write_bytes(b"keep me")
    env.driver.create(VOL, 1, source=source)
    env.driver.resize(VOL, 3)
    env.driver.resize(VOL, 3)
    assert env.driver.size_gib(VOL) == 3
    assert _bytes(env.driver, VOL, 7) in (b"keep me", None)
    with pytest.raises(BlockStoreError):
        env.driver.resize(VOL, 2)
    with pytest.raises(VolumeNotFound):
        env.driver.resize(VOL2, 4)


def test_export_is_idempotent_for_its_node_and_refused_elsewhere(env: Env) -> None:
    env.driver.create(VOL, 1)
    first = env.driver.export(VOL, NODE_A)
    assert isinstance(first, Export) and first.protocol == "nbd" and first.name == VOL
    assert first.endpoints
    assert env.driver.export(VOL, NODE_A) == first
    with pytest.raises(ExportedElsewhere):
        env.driver.export(VOL, NODE_B)
    assert env.driver.exports() == {VOL: NODE_A}


def test_exporting_a_missing_volume_raises(env: Env) -> None:
    with pytest.raises(VolumeNotFound):
        env.driver.export(VOL, NODE_A)


def test_unexport_twice_is_success_and_frees_the_volume_for_another_node(env: Env) -> None:
    env.driver.create(VOL, 1)
    env.driver.export(VOL, NODE_A)
    env.driver.unexport(VOL)
    env.driver.unexport(VOL)
    env.driver.unexport(VOL2)
    assert env.driver.exports() == {}
    env.driver.export(VOL, NODE_B)
    assert env.driver.exports() == {VOL: NODE_B}


def test_two_nodes_are_given_different_endpoints(env: Env) -> None:
    env.driver.create(VOL, 1)
    env.driver.create(VOL2, 1)
    a, b = env.driver.export(VOL, NODE_A), env.driver.export(VOL2, NODE_B)
    assert set(a.endpoints).isdisjoint(b.endpoints)
    assert env.driver.exports() == {VOL: NODE_A, VOL2: NODE_B}


def test_a_restarted_driver_finds_the_exports_and_can_remove_them(env: Env) -> None:
    env.driver.create(VOL, 1)
    env.driver.create(VOL2, 1)
    export = env.driver.export(VOL, NODE_A)
    env.driver.export(VOL2, NODE_B)
    assert env.driver.capabilities["exports_outlive_process"]
    restarted = env.new_driver()
    assert restarted.exports() == {VOL: NODE_A, VOL2: NODE_B}
    assert restarted.volumes() == {VOL: 1, VOL2: 1}
    assert restarted.export(VOL, NODE_A) == export
    restarted.unexport(VOL)
    assert env.new_driver().exports() == {VOL2: NODE_B}


def test_delete_of_an_exported_volume_removes_its_export(env: Env) -> None:
    env.driver.create(VOL, 1)
    env.driver.export(VOL, NODE_A)
    env.driver.delete(VOL)
    assert env.driver.exports() == {}
    assert env.driver.size_gib(VOL) is None


def test_open_path_gives_the_bytes_or_none_and_raises_for_a_missing_volume(env: Env) -> None:
    env.driver.create(VOL, 1)
    path = env.driver.open_path(VOL)
    assert (path is not None) == bool(env.driver.capabilities.get("local_files"))
    with pytest.raises(VolumeNotFound):
        env.driver.open_path(VOL2)


def test_point_in_time_is_a_file_of_the_volumes_size_removed_on_exit(env: Env) -> None:
    env.driver.create(VOL, 1)
    with env.driver.point_in_time(VOL) as path:
        assert path.stat().st_size == GIB
        with open(path, "rb") as f:
            assert f.read(4096) == bytes(4096)
    assert not path.exists()
    with pytest.raises(VolumeNotFound), env.driver.point_in_time(VOL2):
        pass


def test_teardown_stops_the_exports_and_keeps_the_volumes(env: Env) -> None:
    env.driver.create(VOL, 1)
    env.driver.export(VOL, NODE_A)
    env.driver.teardown()
    assert env.driver.exports() == {}
    assert env.new_driver().volumes() == {VOL: 1}


def test_the_registry_builds_block_stores_by_name(tmp_path: Path) -> None:
    assert isinstance(registry.blockstore("fake"), FakeBlockStore)
    assert isinstance(registry.blockstore("file", state_dir=tmp_path), FileBlockStore)
    with pytest.raises(registry.UnknownDriver):
        registry.blockstore("iscsi")


# The file driver's own promises, through real NBD connections


def _nbd_url(export: Export) -> str:
    endpoint = export.endpoints[0]
    if endpoint.socket:
        return f"nbd+unix:///{export.name}?socket={endpoint.socket}"
    return f"nbd://{endpoint.host}:{endpoint.port}/{export.name}"


def _qemu_io(url: str, command: str) -> subprocess.CompletedProcess[str]:
    args = ["qemu-io", "-f", "raw", url, "-c", command]
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def _daemon_pids(state_dir: Path) -> set[int]:
    """Every live process whose command line names this test's state directory."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            mine = proc.name.isdigit() and str(state_dir).encode() in (proc / "cmdline").read_bytes()
            if mine and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def test_bytes_written_through_the_export_land_in_the_file(real: Env) -> None:
    real.driver.create(VOL, 1)
    export = real.driver.export(VOL, NODE_A)
    done = _qemu_io(_nbd_url(export), "write -P 0xab 0 1M")
    assert done.returncode == 0, done.stderr + done.stdout
    assert _bytes(real.driver, VOL, 1024 * 1024) == b"\xab" * 1024 * 1024


def test_the_local_socket_is_for_group_kvm_only(real: Env) -> None:
    real.driver.create(VOL, 1)
    sock = Path(real.driver.export(VOL, NODE_A).endpoints[0].socket)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o711


def test_a_node_is_not_served_another_nodes_volume(real: Env) -> None:
    real.driver.create(VOL, 1)
    real.driver.create(VOL2, 1)
    real.driver.export(VOL, NODE_A)
    b = real.driver.export(VOL2, NODE_B)
    assert _qemu_io(_nbd_url(b), "read 0 512").returncode == 0
    stolen = Export(protocol="nbd", name=VOL, endpoints=b.endpoints)
    assert _qemu_io(_nbd_url(stolen), "read 0 512").returncode != 0


def test_a_remote_node_is_served_on_a_tcp_port_that_admits_it_only(real: Env) -> None:
    """From this host (not the node) the port is dropped; the node's side: test_nbd_guard.py."""
    real.driver.create(VOL, 1)
    export = real.driver.export(VOL, "192.0.2.10:8775")
    endpoint = export.endpoints[0]
    assert endpoint.host == "127.0.0.1" and endpoint.port > 0 and not endpoint.socket
    with socket.socket() as s:
        s.settimeout(1.0)
        with pytest.raises(OSError):
            s.connect(("127.0.0.1", endpoint.port))
            s.recv(8)
    real.driver.unexport(VOL)  # the rule goes with the export: the next server may take the port


def test_resize_while_exported_is_seen_by_the_next_connection(real: Env) -> None:
    real.driver.create(VOL, 1)
    export = real.driver.export(VOL, NODE_A)
    real.driver.resize(VOL, 2)
    done = _qemu_io(_nbd_url(export), "length")
    assert "2 GiB" in done.stdout, done.stdout + done.stderr
    assert real.driver.exports() == {VOL: NODE_A}


def test_resize_while_a_node_has_the_disk_open_shows_after_its_next_attach(real: Env) -> None:
    """NBD cannot announce a new size to a connected client, and QEMU will not resize a node its NBD
    server is serving: the file grows now, the export at the next export."""
    real.driver.create(VOL, 1)
    export = real.driver.export(VOL, NODE_A)
    args = ["qemu-io", "-f", "raw", _nbd_url(export)]
    client = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert "1 GiB" in _qemu_io(_nbd_url(export), "length").stdout  # meanwhile the client connected
        real.driver.resize(VOL, 2)
        assert real.driver.size_gib(VOL) == 2
        assert real.driver.exports() == {VOL: NODE_A}
        assert "1 GiB" in _qemu_io(_nbd_url(export), "length").stdout
    finally:
        client.communicate(b"quit\n", timeout=10)
    real.driver.unexport(VOL)
    export = real.driver.export(VOL, NODE_A)
    assert "2 GiB" in _qemu_io(_nbd_url(export), "length").stdout


def test_a_fresh_driver_unexports_and_stops_the_last_daemon(real: Env) -> None:
    real.driver.create(VOL, 1)
    real.driver.export(VOL, NODE_A)
    assert _daemon_pids(real.state_dir)
    FileBlockStore(real.state_dir).unexport(VOL)
    assert _daemon_pids(real.state_dir) == set()


def test_a_killed_daemon_is_no_export_and_export_starts_a_new_one(real: Env) -> None:
    real.driver.create(VOL, 1)
    real.driver.export(VOL, NODE_A)
    (pid,) = _daemon_pids(real.state_dir)
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not _daemon_pids(real.state_dir):
            break
        subprocess.run(["sleep", "0.02"], check=True)
    assert real.driver.exports() == {}
    export = real.driver.export(VOL, NODE_A)
    assert _qemu_io(_nbd_url(export), "read 0 512").returncode == 0


def test_teardown_leaves_no_daemon_running(real: Env) -> None:
    for volume_id, node in ((VOL, NODE_A), (VOL2, NODE_B)):
        real.driver.create(volume_id, 1)
        real.driver.export(volume_id, node)
    assert len(_daemon_pids(real.state_dir)) == 2
    real.driver.teardown()
    assert _daemon_pids(real.state_dir) == set()
    assert real.driver.volumes() == {VOL: 1, VOL2: 1}


def test_point_in_time_of_an_exported_volume_keeps_the_bytes_of_its_moment(real: Env) -> None:
    real.driver.create(VOL, 1)
    url = _nbd_url(real.driver.export(VOL, NODE_A))
    assert _qemu_io(url, "write -P 0x11 0 8M").returncode == 0
    assert _qemu_io(url, "write -P 0x22 512M 4k").returncode == 0
    with real.driver.point_in_time(VOL) as path:
        assert _qemu_io(url, "write -P 0x33 0 8M").returncode == 0  # the guest keeps writing
        assert _qemu_io(url, "write -P 0x44 512M 4k").returncode == 0
        with open(path, "rb") as f:
            assert f.read(8 * 1024 * 1024) == b"\x11" * 8 * 1024 * 1024
            f.seek(512 * 1024 * 1024)
            assert f.read(8192) == b"\x22" * 4096 + bytes(4096)
        assert os.stat(path).st_blocks * 512 < 64 * 1024 * 1024  # zeros stayed holes
        assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert not path.exists()
    assert _bytes(real.driver, VOL, 4) == b"\x33" * 4
    (daemon_dir,) = (real.state_dir / "exports").iterdir()
    with QmpClient(daemon_dir / "qmp.sock") as qmp:  # the copy's job and node are gone
        assert qmp.execute("query-jobs") == []
        nodes = {n["node-name"] for n in qmp.execute("query-named-block-nodes", flat=True)}
        assert {n for n in nodes if not n.startswith("#")} == {VOL}  # "#block…": implicit file nodes


def test_point_in_time_of_an_unexported_volume_is_a_sparse_copy(real: Env) -> None:
    source = real.state_dir / "source.raw"
    source.write_bytes(b"\x55" * 4096)
    real.driver.create(VOL, 2, source=source)
    with real.driver.point_in_time(VOL) as path:
        with open(real.driver.open_path(VOL) or "", "r+b") as f:
            f.write(b"\x66" * 4096)
        assert path.read_bytes()[:8192] == b"\x55" * 4096 + bytes(4096)
        assert path.stat().st_size == 2 * GIB and os.stat(path).st_blocks * 512 <= 1024 * 1024


def test_volumes_are_sparse_and_half_made_ones_are_not_listed(real: Env) -> None:
    real.driver.create(VOL, 8)
    assert os.stat(real.state_dir / "volumes" / f"{VOL}.img").st_blocks == 0
    (real.state_dir / "volumes" / f".{VOL2}.tmp").write_bytes(b"crashed")
    assert real.driver.volumes() == {VOL: 8}


# The QMP client


def test_qmp_errors_carry_qemus_class_and_events_are_skipped(real: Env) -> None:
    real.driver.create(VOL, 1)
    real.driver.export(VOL, NODE_A)
    (daemon_dir,) = (real.state_dir / "exports").iterdir()
    with QmpClient(daemon_dir / "qmp.sock") as qmp:
        with pytest.raises(QmpError) as raised:
            qmp.execute("no-such-command")
        assert raised.value.error_class == "CommandNotFound"
        qmp.execute("block-export-del", id=VOL, mode="hard")  # emits BLOCK_EXPORT_DELETED
        assert qmp.execute("query-block-exports") == []


def test_qmp_gives_up_on_a_monitor_that_never_answers(tmp_path: Path) -> None:
    path = str(tmp_path / "qmp.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        with pytest.raises(BlockStoreError, match="did not answer"):
            QmpClient(path, timeout=0.2).connect()
