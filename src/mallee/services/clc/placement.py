"""Asking a zone to place instances the CLC has recorded, and recording its answer. RunInstances
asks once, right after it committed the instances as `pending`; the reconciler asks again for any
whose launch a crash or a lost message kept from reaching a node. Nothing here runs inside a
database transaction while it waits for the zone."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import msgspec
from sqlalchemy.orm import Session, object_session

from mallee.core import clock
from mallee.rpc import cluster
from mallee.rpc.node import InstanceLaunch
from mallee.rpc.transport import Client, RpcError
from mallee.services.clc.ec2 import block_devices, interfaces
from mallee.services.clc.tables import Instance, Tag

log = logging.getLogger(__name__)

CAPACITY = "Server.InsufficientInstanceCapacity"


@dataclass(frozen=True)
class Request:
    """One reservation's instances to place (read from their records before asking)."""

    launches: list[str]  # each instance's recorded launch (JSON)
    min_count: int
    nodes: dict[str, str] = field(default_factory=dict)  # instance id -> node it was placed on before

    @staticmethod
    def of(records: list[Instance], min_count: int) -> Request:
        return Request([r.launch for r in records], min_count, {r.id: r.node for r in records if r.node})


@dataclass(frozen=True)
class Outcome:
    placed: dict[str, str] | None = None  # instance id -> node; None: not placed
    refused: str = ""  # the zone has no room for min_count of them (nothing was placed)
    unknown: str = ""  # the zone did not answer: it may or may not have placed them


def ask(client: Client, request: Request) -> Outcome:
    launches = [msgspec.json.decode(text, type=InstanceLaunch) for text in request.launches]
    try:
        answer = client.call(
            cluster.RUN_INSTANCES,
            cluster.RunInstances(instances=launches, min_count=request.min_count, nodes=request.nodes),
        )
    except RpcError as err:
        if err.code == "InsufficientInstanceCapacity":
            return Outcome(refused=err.message)
        return Outcome(unknown=f"{err.code}: {err.message}")
    except OSError as exc:
        return Outcome(unknown=str(exc))
    return Outcome(placed=answer.placed)


def record(s: Session, records: list[Instance], outcome: Outcome, *, answered_now: bool) -> list[Instance]:
    """Apply `outcome` to `records` (in `s`); returns those that go on. Placed ones get their node.
    Those not placed (beyond what fitted, or all when the zone refused) are deleted when the user is
    answered now (as AWS, which never shows them), else terminated with AWS's state reason (an
    EBS-backed one is stopped instead: its volumes are kept for a later start). An unknown outcome
    changes nothing: the reconciler asks again."""
    if outcome.unknown:
        return records
    placed = outcome.placed or {}
    kept = []
    for r in records:
        if r.id in placed:
            r.node = placed[r.id]
            kept.append(r)
        elif answered_now:
            s.query(Tag).filter(Tag.resource_id == r.id).delete()
            interfaces.release(s, r)
            block_devices.discard(s, r)
            s.delete(r)
        else:
            reason = outcome.refused or "Insufficient capacity."
            log.info("%s could not be placed: %s", r.id, reason)
            given_up(r, f"{CAPACITY}: {reason}")
    return kept


def shutting_down(r: Instance, why: str = "User initiated") -> None:
    """Record that the instance is to be terminated (the nodes are asked after the commit)."""
    r.desired = "terminated"
    r.state = "shutting-down"
    r.transition_reason = f"{why} ({clock.now():%Y-%m-%d %H:%M:%S GMT})"
    r.state_reason = "Client.UserInitiatedShutdown: User initiated shutdown"


def stopping(r: Instance, why: str = "User initiated") -> None:
    """Record that the EBS-backed instance is to be stopped (the nodes are asked after the commit)."""
    r.desired = "stopped"
    if r.state in ("pending", "running"):
        r.state = "stopping"
    r.transition_reason = f"{why} ({clock.now():%Y-%m-%d %H:%M:%S GMT})"
    r.state_reason = "Client.UserInitiatedShutdown: User initiated shutdown"


def stopped(r: Instance, reason: str = "") -> None:
    """On no node any more; its volumes, addresses and interface are kept for its next start."""
    r.state = r.desired = "stopped"
    r.node = ""
    if reason:
        r.state_reason = reason


def given_up(r: Instance, reason: str) -> str:
    """No node runs it, nor will: terminated, or stopped when EBS-backed so that its volumes are kept
    for a later start. Returns the state recorded."""
    (stopped if r.root_device_type == "ebs" else terminated)(r, reason)
    return r.state


def terminated(r: Instance, reason: str = "") -> None:
    r.state = "terminated"
    r.terminated_at = clock.now()
    session = object_session(r)
    if session is not None:  # its interfaces and public addresses go back
        interfaces.release(session, r)
    if reason:
        r.state_reason = reason
