"""The typed internal contracts: strict decoding, versions, and the record-then-ask guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from mallee.core.open_transactions import CallInsideTransaction
from mallee.db.session import Database
from mallee.rpc import cluster, node
from mallee.rpc.contract import Api, Handlers, Ok
from mallee.rpc.transport import Client, RpcError
from unit.rpc.sealed_requests import KEY, opened, sealed, serve


def _serve(handlers: Handlers, method: str, body: bytes, contract: str | None) -> tuple[int, Any]:
    """One sealed rpc request through serve_rpc; (status, JSON answer opened from its seal)."""
    request = sealed(method, body, contract or "")
    return opened(serve(handlers, request), request)


def _terminator(seen: list[str]) -> Handlers:
    handlers = Handlers()

    def terminate(p: node.InstanceRef) -> Ok:
        seen.append(p.instance_id)
        return Ok()

    handlers.add(node.TERMINATE_INSTANCE, terminate)
    return handlers


def test_a_well_formed_request_is_served_typed() -> None:
    seen: list[str] = []
    status, answer = _serve(
        _terminator(seen), "terminate_instance", b'{"instance_id": "i-1"}', f"node/{node.API.version}"
    )
    assert (status, answer, seen) == (200, {"ok": True}, ["i-1"])


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"instance_id": "i-1", "force": true}', "force"),  # unknown fields are errors, not dropped
        (b"{}", "instance_id"),  # missing
        (b'{"instance_id": 7}', "instance_id"),  # wrong type
    ],
)
def test_a_malformed_request_is_refused_naming_the_field(body: bytes, named: str) -> None:
    seen: list[str] = []
    status, answer = _serve(_terminator(seen), "terminate_instance", body, f"node/{node.API.version}")
    assert status == 400 and answer["code"] == "MalformedRequest" and named in answer["message"]
    assert seen == []


@pytest.mark.parametrize(
    "contract",
    [f"node/{node.API.version + 1}", f"node/{node.API.oldest - 1}", f"cluster/{node.API.version}", None],
)
def test_a_caller_of_another_contract_version_is_refused_clearly(contract: str | None) -> None:
    seen: list[str] = []
    status, answer = _serve(_terminator(seen), "terminate_instance", b'{"instance_id": "i-1"}', contract)
    assert status == 409 and answer["code"] == "ContractVersionMismatch" and seen == []
    assert "'node' contract" in answer["message"]


def test_a_callee_serves_the_versions_it_still_understands() -> None:
    api = Api("node", version=3, oldest=2)
    assert api.refusal("node/2") is None and api.refusal("node/3") is None
    refusal = api.refusal("node/1") or ""
    assert "v1" in refusal and "v2–v3" in refusal and "upgrade the caller" in refusal
    assert "upgrade the callee" in (api.refusal("node/4") or "")


def test_an_answer_of_the_wrong_shape_is_an_error_for_the_caller() -> None:
    with pytest.raises(Exception) as err:
        cluster.DESCRIBE.decode_response(b'{"ready": true, "instances": {}, "nodes": [], "extra": 1}')
    assert "extra" in str(err.value)


def test_a_launch_round_trips_through_its_one_definition() -> None:
    launch = node.InstanceLaunch(
        instance_id="i-0123456789abcdef0",
        reservation_id="r-0123456789abcdef0",
        account_id="123456789012",
        instance_type=node.InstanceType(name="m1.small", cpus=1, memory_mib=256, disk_gib=5),
        image=node.LaunchImage(root=node.ImageSource(key="ami-1", url="http://x/", format="qcow2")),
        private_ip="10.111.0.2",
        mac="d0:0d:00:00:00:01",
        hostname="i-0123456789abcdef0",
        availability_zone="mallee-1a",
    )
    request = cluster.RunInstances(instances=[launch], min_count=1)
    from mallee.rpc.contract import encode

    assert cluster.RUN_INSTANCES.decode_request(encode(request)) == request


def test_rpc_inside_an_open_transaction_is_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    client = Client("http://127.0.0.1:9", KEY, timeout=1)  # nothing listens: only the guard can answer
    try:
        with db.session() as s:
            s.execute(text("SELECT 1"))
            with pytest.raises(CallInsideTransaction):
                client.call(node.TERMINATE_INSTANCE, node.InstanceRef(instance_id="i-1"))
            s.commit()
            with pytest.raises((OSError, RpcError)):  # after the commit the call goes out
                client.call(node.TERMINATE_INSTANCE, node.InstanceRef(instance_id="i-1"))
    finally:
        db.dispose()
