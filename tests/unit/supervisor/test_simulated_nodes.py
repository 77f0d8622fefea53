"""Simulated nodes (`serve nc-sim`): each node its own address, directory, VPC prefix and capacity,
served as a real node controller that answers rpc at its address."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mallee.core.config import PORT_OFFSETS, load
from mallee.rpc import node
from mallee.rpc.transport import Client
from mallee.supervisor import simulated_nodes
from mallee.supervisor.simulated_nodes import Fleet, node_config


def test_each_node_has_its_own_address_directory_prefix_and_the_fake_drivers(tmp_path: Path) -> None:
    cfg = load(tmp_path, environ={})
    fleet = Fleet(count=40, first_address="127.0.1.250", cores=8, memory_mib=4096, disk_gib=50, zone="z-b")
    configs = [node_config(cfg, fleet, n, a) for n, a in enumerate(fleet.addresses())]
    assert [c.host for c in configs[:2]] == ["127.0.1.250", "127.0.1.251"]
    assert configs[6].host == "127.0.2.0"  # the range carries on past .255
    for field in ("host", "node_dir", "vpc_prefix"):
        assert len({getattr(c, field) for c in configs}) == 40, field
    assert {(c.hypervisor, c.network, c.zone) for c in configs} == {("fake", "fake", "z-b")}
    assert {(c.node_cores, c.node_memory_mib, c.node_disk_gib) for c in configs} == {(8, 4096, 50)}
    assert {c.port("nc") for c in configs} == {cfg.port("nc")}
    assert all(c.vpc_prefix[0] == "s" and len(c.vpc_prefix) <= 4 for c in configs)
    assert all(Path(c.node_dir).parent == tmp_path / "nc-sim" for c in configs)


def test_a_fleet_refuses_a_count_or_boot_delay_it_cannot_take() -> None:
    parser = argparse.ArgumentParser()
    simulated_nodes.add_arguments(parser)
    for argv in (
        ["--count", "0"],
        ["--boot-delay", "-1"],
        ["--first-address", "255.255.255.255", "--count", "2"],
    ):
        with pytest.raises(ValueError):
            simulated_nodes.fleet_of(parser.parse_args(argv))


def _free_port_base() -> int:
    for _ in range(100):
        base = 20000 + secrets.randbelow(20000)
        try:
            with socket.socket() as s:
                s.bind(("127.0.9.1", base + PORT_OFFSETS["nc"]))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port")


def test_every_simulated_node_answers_at_its_own_address_with_its_capacity(tmp_path: Path) -> None:
    (tmp_path / "deployment.key").write_text(secrets.token_hex(32) + "\n")
    base = _free_port_base()
    env = {**os.environ, "MALLEE_DATA_DIR": str(tmp_path), "MALLEE_PORT_BASE": str(base)}
    command = [sys.executable, "-m", "mallee.supervisor", "serve", "nc-sim", "--count", "3"]
    command += ["--first-address", "127.0.9.1", "--cores", "7", "--memory-mib", "3000", "--boot-delay", "0"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()  # printed once every node listens
        assert line.startswith("serving 3 simulated nodes: 127.0.9.1 .. 127.0.9.3"), line
        key = bytes.fromhex((tmp_path / "deployment.key").read_text().strip())
        for address in ("127.0.9.1", "127.0.9.2", "127.0.9.3"):
            client = Client(f"http://{address}:{base + PORT_OFFSETS['nc']}", key, timeout=5)
            report = client.call(node.DESCRIBE, node.DescribeNode())
            assert (report.resources.cores, report.resources.memory_mib) == (7, 3000)
            assert report.instances == {}
            assert report.underlay.startswith(address + ":")
        assert sorted(p.name for p in (tmp_path / "nc-sim").iterdir()) == [
            "127.0.9.1",
            "127.0.9.2",
            "127.0.9.3",
        ]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_fleet_whose_address_is_taken_stops_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "deployment.key").write_text(secrets.token_hex(32) + "\n")
    base = _free_port_base()
    env = {**os.environ, "MALLEE_DATA_DIR": str(tmp_path), "MALLEE_PORT_BASE": str(base)}
    taken = socket.socket()
    taken.bind(("127.0.9.2", base + PORT_OFFSETS["nc"]))
    taken.listen()
    command = [sys.executable, "-m", "mallee.supervisor", "serve", "nc-sim", "--count", "3"]
    command += ["--first-address", "127.0.9.1", "--boot-delay", "0"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, timeout=30)
    finally:
        taken.close()
    assert done.returncode == 3
    assert b"serving" not in done.stdout
