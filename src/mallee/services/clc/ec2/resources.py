"""What the EC2 resource handlers share: finding a resource the caller owns by id, answering a
Describe call (named ids, filters with tags, one page at a time), and refusing the members Mallee
does not support by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import select

from mallee.core import ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.ec2 import tags
from mallee.services.clc.paging import page

T = TypeVar("T")


def check_id(value: str, prefix: str, malformed: str) -> None:
    """`malformed` (e.g. InvalidVpcID.Malformed) unless `value` looks like `prefix-…`."""
    if not ids.is_resource_id(value, prefix):
        raise CloudError(malformed, f'Invalid id: "{value}" (expecting "{prefix}-...")')


def owned(ctx: RequestContext, table: Any, resource_id: str, prefix: str, not_found: str) -> Any:
    """The caller's row of `table` with `resource_id`; `<not_found>` when it is not the caller's
    (another account's resources do not exist for it), `…Malformed` for an id of the wrong form."""
    check_id(resource_id, prefix, not_found.rsplit(".", 1)[0] + ".Malformed")
    row = ctx.session.get(table, resource_id)
    if row is None or row.account_id != ctx.account_id:
        raise CloudError(not_found, f"The ID '{resource_id}' does not exist")
    return row


def named(ctx: RequestContext, table: Any, wanted: Sequence[str] | None, prefix: str, not_found: str) -> Any:
    """For Describe calls naming ids: each must exist (the first missing one is `not_found`)."""
    for resource_id in wanted or []:
        owned(ctx, table, resource_id, prefix, not_found)


def one_page(p: dict[str, Any], items: list[T], key: str) -> dict[str, Any]:
    """`{key: [...], NextToken?}` for MaxResults (5–1000) and NextToken."""
    limit = p.get("MaxResults")
    if limit is not None and not 5 <= limit <= 1000:
        raise CloudError("InvalidParameterValue", "MaxResults must be between 5 and 1000.")
    chunk, token = page(items, p.get("NextToken"), limit, default=len(items) or 1, code="InvalidNextToken")
    out: dict[str, Any] = {key: chunk}
    if token:
        out["NextToken"] = token
    return out


def describe(
    ctx: RequestContext,
    p: dict[str, Any],
    table: Any,
    *,
    ids_member: str,
    prefix: str,
    not_found: str,
    order: Sequence[Any],
    view: Callable[[Any, list[dict[str, str]]], dict[str, Any]],
    getters: dict[str, Any],
    key: str,
) -> dict[str, Any]:
    """A Describe call over the caller's rows of `table`: the ids it names (each must exist), as
    `view(row, tags)`, through its Filters (tag filters included), one page of them under `key`."""
    wanted = p.get(ids_member)
    named(ctx, table, wanted, prefix, not_found)
    q = select(table).where(table.account_id == ctx.account_id).order_by(*order)
    if wanted:
        q = q.where(table.id.in_(wanted))
    rows = list(ctx.session.scalars(q))
    tag_map = tags.tags_of(ctx.session, [row.id for row in rows])
    views = [view(row, tag_map[row.id]) for row in rows]
    return one_page(p, tags.with_tag_filters(views, p.get("Filters"), getters), key)


def unsupported(p: dict[str, Any], *members: str) -> None:
    """UnsupportedOperation naming the first of `members` the request gives: Mallee does not do
    it, and says so rather than ignoring it."""
    for member in members:
        if p.get(member) not in (None, False, [], ""):
            raise CloudError("UnsupportedOperation", f"Mallee does not support {member} yet.")
