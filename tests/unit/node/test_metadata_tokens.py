"""IMDSv2 session tokens issued by the node: bound to the guest's address and expiring."""

from __future__ import annotations

from mallee.services.node.metadata_proxy import issue_token, token_valid

KEY = b"k" * 32


def test_token_is_valid_for_its_guest_until_it_expires() -> None:
    token = issue_token(KEY, "10.111.0.5", 60, now=1000)
    assert token_valid(KEY, "10.111.0.5", token, now=1059)
    assert not token_valid(KEY, "10.111.0.5", token, now=1061)


def test_token_of_another_guest_or_forged_is_refused() -> None:
    token = issue_token(KEY, "10.111.0.5", 60, now=1000)
    assert not token_valid(KEY, "10.111.0.6", token, now=1001)
    assert not token_valid(b"x" * 32, "10.111.0.5", token, now=1001)
    assert not token_valid(KEY, "10.111.0.5", "garbage", now=1001)
    assert not token_valid(KEY, "10.111.0.5", "99999999999.", now=1001)
