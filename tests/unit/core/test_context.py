"""Headers and HttpRequest: lookups and the parameters parsed once per request."""

from __future__ import annotations

import pytest

from mallee.core.context import Headers, HttpRequest

FORM = "application/x-www-form-urlencoded"


def test_headers_answer_the_first_value_case_insensitively() -> None:
    headers = Headers([("X-A", "1"), ("x-a", "2"), ("B", "3")])
    assert headers.get("x-A") == "1"
    assert headers.get_all("X-a") == ["1", "2"]
    assert "b" in headers and "c" not in headers
    assert headers.get("c", "default") == "default"
    headers.set("X-A", "9")
    assert headers.get("x-a") == "9"
    assert headers.get_all("x-a") == ["9"]
    assert dict(headers.first_values()) == {"x-a": "9", "b": "3"}


def test_parameters_follow_a_replaced_query_string_or_body() -> None:
    request = HttpRequest("POST", "/", "a=1", Headers([("Content-Type", FORM)]), b"b=2")
    params = request.query_params()
    params.append(("mine", "x"))  # a caller's list is its own
    assert request.query_params() == [("a", "1")]
    assert request.form_params() == [("a", "1"), ("b", "2")]
    request.query_string = "c=3"
    request.body = b"d=4"
    assert request.form_params() == [("c", "3"), ("d", "4")]
    request.headers.set("content-type", "text/plain")
    assert request.form_params() == [("c", "3")]


def test_a_body_that_is_not_utf8_raises_unless_replaced() -> None:
    request = HttpRequest("POST", "/", "", Headers([("Content-Type", FORM)]), b"a=\xff")
    assert request.form_params(errors="replace") == [("a", "\ufffd")]
    with pytest.raises(UnicodeDecodeError):  # the replaced reading is not what a strict one answers
        request.form_params()
    request = HttpRequest("POST", "/", "", Headers([("Content-Type", FORM)]), b"a=%FF%C0%AF")
    assert request.form_params(errors="replace") == [("a", "\ufffd\ufffd\ufffd")]
    with pytest.raises(UnicodeDecodeError):  # percent-encoded bytes are no different
        request.form_params()


def test_the_signature_is_read_once_until_what_it_was_read_from_changes() -> None:
    request = HttpRequest("GET", "/b/k", "a=1", Headers([("Authorization", "one")]))
    reads: list[str | None] = []

    def read(r: HttpRequest) -> object:
        reads.append(r.headers.get("authorization"))
        return len(reads)

    assert [request.signature(read) for _ in range(3)] == [1, 1, 1]
    request.headers.set("authorization", "two")
    assert request.signature(read) == 2
    request.query_string = "a=2"
    assert request.signature(read) == 3
    request.body = b"x"  # an object's body: no signature in it
    assert request.signature(read) == 3
    request.headers.set("content-type", FORM)
    assert request.signature(read) == 4
    request.body = b"X-Amz-Signature=x"  # a form's body may carry one
    assert request.signature(read) == 5
    request.headers = Headers([("Authorization", "three")])
    assert request.signature(read) == 6
    assert reads == ["one", "two", "two", "two", "two", "three"]
