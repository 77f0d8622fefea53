"""DescribeInstances' selection: which of an account's instances a request names and its filters
keep, and which page of them it answers, decided on a few columns of each record. Only the page's
instances are then read whole and shown: a page of 200 among 10,000 instances builds 200 views,
not 10,000 (bench/scale.py; the whole views cost ~1 ms per instance)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, select

from mallee.core import ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.ec2 import filters, tags
from mallee.services.clc.ec2.instance_views import STATE_CODES
from mallee.services.clc.paging import page
from mallee.services.clc.tables import Instance, Tag

# DescribeInstances' filters, on an instance's view (instance_views.instance_view).
FILTERS: dict[str, filters.Getter[dict[str, Any]]] = {
    "instance-id": lambda v: v["InstanceId"],
    "image-id": lambda v: v["ImageId"],
    "instance-type": lambda v: v["InstanceType"],
    "instance-state-name": lambda v: v["State"]["Name"],
    "instance-state-code": lambda v: v["State"]["Code"],
    "availability-zone": lambda v: v["Placement"]["AvailabilityZone"],
    "private-ip-address": lambda v: v.get("PrivateIpAddress"),
    "key-name": lambda v: v.get("KeyName"),
    "kernel-id": lambda v: v.get("KernelId"),
    "ramdisk-id": lambda v: v.get("RamdiskId"),
    "launch-index": lambda v: v["AmiLaunchIndex"],
}
# Filters whose values, when none has a wildcard, the query decides itself: an exact match, as
# FILTERS decide a value without wildcards. At 10,000 instances a state or tag filter otherwise
# builds and tests every instance's filter view (and reads all their tags) for each page.
_NARROWING = {
    "instance-id": Instance.id,
    "image-id": Instance.image_id,
    "instance-type": Instance.instance_type,
    "instance-state-name": Instance.state,
    "availability-zone": Instance.zone,
}
_WILDCARDS = frozenset("*?\\[]")
# The columns the filters read (and what orders and pages the listing).
_LISTED = (
    Instance.id,
    Instance.reservation_id,
    Instance.image_id,
    Instance.instance_type,
    Instance.state,
    Instance.zone,
    Instance.private_ip,
    Instance.key_name,
    Instance.kernel_id,
    Instance.ramdisk_id,
    Instance.launch_index,
)


def check_named(instance_ids: Sequence[str], known: Collection[str]) -> None:
    """Every id named must be well formed and one of the caller's (`known`)."""
    for instance_id in instance_ids:
        if not ids.is_resource_id(instance_id, "i"):
            raise CloudError("InvalidInstanceID.Malformed", f'Invalid id: "{instance_id}"')
    missing = [i for i in instance_ids if i not in known]
    if missing:
        raise CloudError(
            "InvalidInstanceID.NotFound", f"The instance ID '{', '.join(missing)}' does not exist"
        )


def selected_page(ctx: RequestContext, p: dict[str, Any]) -> tuple[list[Instance], str | None]:
    """The instances of the page DescribeInstances answers (in launch order), and the next token."""
    query = select(*_LISTED).where(Instance.account_id == ctx.account_id)
    named = p.get("InstanceIds")
    specs = p.get("Filters") or []
    if not named:  # named ones are checked against the whole listing: each must be the caller's
        clauses, specs = _narrowing(specs)
        query = query.where(*clauses)
    rows = list(ctx.session.execute(query.order_by(Instance.launch_time, Instance.id)))
    if named:
        check_named(named, {r.id for r in rows})
        asked = set(named)
        rows = [r for r in rows if r.id in asked]
    if specs:
        rows = _filtered(ctx, rows, specs)
    limit = p.get("MaxResults")
    if limit is not None and not 5 <= limit <= 1000:
        raise CloudError("InvalidParameterValue", "MaxResults must be between 5 and 1000.")
    chunk, token = page(rows, p.get("NextToken"), limit, default=len(rows) or 1, code="InvalidParameterValue")
    wanted = [r.id for r in chunk]
    records = {i.id: i for i in ctx.session.scalars(select(Instance).where(Instance.id.in_(wanted)))}
    return [records[i] for i in wanted], token


def _narrowing(specs: list[dict[str, Any]]) -> tuple[list[ColumnElement[bool]], list[dict[str, Any]]]:
    """The query's conditions for the filters it can decide (_NARROWING, tag:KEY), and the filters
    left to FILTERS."""
    clauses: list[ColumnElement[bool]] = []
    left: list[dict[str, Any]] = []
    for spec in specs:
        name, values = str(spec.get("Name") or ""), [str(v) for v in spec.get("Values", [])]
        column = _NARROWING.get(name)
        if not values or any(_WILDCARDS.intersection(v) for v in values):
            left.append(spec)
        elif column is not None:
            clauses.append(column.in_(values))
        elif name.startswith("tag:"):
            tagged = select(Tag.resource_id).where(Tag.key == name[4:], Tag.value.in_(values))
            clauses.append(Instance.id.in_(tagged))
        else:
            left.append(spec)
    return clauses, left


def _filtered(ctx: RequestContext, rows: list[Row[Any]], specs: list[dict[str, Any]]) -> list[Row[Any]]:
    by_tag = any(str(spec.get("Name") or "").startswith("tag") for spec in specs)
    tag_lists = tags.tags_of(ctx.session, [r.id for r in rows]) if by_tag else {}
    views = [_filter_view(r, tag_lists.get(r.id)) for r in rows]
    reservation_of = {r.id: r.reservation_id for r in rows}
    getters = {**FILTERS, "reservation-id": lambda v: reservation_of[v["InstanceId"]]}
    keep = {v["InstanceId"] for v in tags.with_tag_filters(views, specs, getters)}
    return [r for r in rows if r.id in keep]


def _filter_view(r: Row[Any], tag_list: list[dict[str, str]] | None) -> dict[str, Any]:
    """What FILTERS read of an instance's view, as instance_view shows it, from its row."""
    view: dict[str, Any] = {
        "InstanceId": r.id,
        "ImageId": r.image_id,
        "InstanceType": r.instance_type,
        "State": {"Code": STATE_CODES[r.state], "Name": r.state},
        "Placement": {"AvailabilityZone": r.zone},
        "AmiLaunchIndex": r.launch_index,
    }
    optional = {"PrivateIpAddress": r.private_ip, "KeyName": r.key_name}
    optional.update(KernelId=r.kernel_id, RamdiskId=r.ramdisk_id)
    view.update({key: value for key, value in optional.items() if value})
    if tag_list is not None:
        view["Tags"] = tag_list
    return view
