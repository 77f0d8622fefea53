"""The request chain counts every answer it gives, by API, action and status (core/metrics.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mallee.core import metrics
from mallee.core.context import Headers, HttpRequest, RequestContext
from mallee.core.errors import CloudError
from mallee.protocol.dispatch import Operation, Registry
from mallee.protocol.gateway import Credential, Gateway


class Anyone:
    def resolve(self, access_key_id: str, session_token: str | None) -> Credential:
        raise AssertionError("only anonymous requests here")

    def authorize(self, ctx: RequestContext, operation: Operation) -> None:
        pass


def counted(service: str, action: str, status: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == "mallee_api_requests_total" and s.labels == {
                "service": service,
                "action": action,
                "status": status,
            }:
                return s.value
    return 0.0


def gateway() -> Gateway:
    s3 = Registry("s3")

    @s3.operation()
    def get_object(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
        raise CloudError("NoSuchKey", "The specified key does not exist.")

    return Gateway({"s3": s3}, Anyone(), "mallee-1")


def test_an_answer_is_counted_under_the_action_the_request_was_parsed_as() -> None:
    before = counted("s3", "GetObject", "404")
    response = gateway().handle(HttpRequest("GET", "/bucket/key", "", Headers([("Host", "h")]), b""))
    assert response.status == 404
    assert counted("s3", "GetObject", "404") == before + 1


def test_a_request_refused_before_it_is_parsed_is_counted_for_its_api() -> None:
    before = counted("ec2", "unknown", "403")
    unsigned = HttpRequest("GET", "/", "Action=DescribeRegions&Version=2016-11-15", Headers([]), b"")
    assert gateway().handle(unsigned).status == 403  # MissingAuthenticationToken
    assert counted("ec2", "unknown", "403") == before + 1
