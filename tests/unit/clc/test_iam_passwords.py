"""Console passwords (mallee.services.clc.iam.passwords): salted scrypt hashes that carry their
parameters, constant-time checks; and the password policy's rules (password_policy.py)."""

from __future__ import annotations

import hmac
import re

import pytest

from mallee.core.errors import CloudError
from mallee.services.clc.iam import passwords
from mallee.services.clc.iam.password_policy import PasswordPolicy, check_password, policy_violations

CHEAP = passwords.Cost(log_n=4, r=8, p=1)  # a real scrypt, cheap enough for many cases


def test_a_hash_checks_its_password_only() -> None:
    stored = passwords.hash_password("Correct-Horse-7")
    assert passwords.check_password("Correct-Horse-7", stored)
    for wrong in ("correct-Horse-7", "Correct-Horse-7 ", "", "Correct-Horse-"):
        assert not passwords.check_password(wrong, stored)


def test_a_hash_keeps_its_parameters_and_a_salt_of_its_own() -> None:
    stored = passwords.hash_password("same", CHEAP)
    m = re.fullmatch(r"\$scrypt\$ln=4,r=8,p=1\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})", stored)
    assert m is not None, stored
    again = passwords.hash_password("same", CHEAP)
    assert again != stored  # a fresh salt each time
    assert passwords.check_password("same", stored) and passwords.check_password("same", again)
    assert "same" not in stored


def test_hashes_made_with_other_parameters_still_check_and_ask_to_be_remade() -> None:
    old = passwords.hash_password("kept", CHEAP)
    assert passwords.check_password("kept", old)  # checked with its own parameters, not today's
    assert passwords.needs_rehash(old)
    assert not passwords.needs_rehash(passwords.hash_password("kept"))
    assert passwords.COST.log_n >= 14 and passwords.COST.r >= 8  # a slow hash, not a cheap one


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain text",
        "$scrypt$ln=4,r=8,p=1$c2FsdA",  # no hash
        "$scrypt$ln=40,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA",  # past the cost allowed
        "$scrypt$ln=4,r=0,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA",
        "$pbkdf2-sha256$i=1$c2FsdA$aGFzaA",
        "$scrypt$ln=4,r=8,p=1$!!!!$aGFzaA",
    ],
)
def test_a_malformed_hash_checks_nothing(stored: str) -> None:
    assert not passwords.check_password("anything", stored)
    assert passwords.needs_rehash(stored)


def test_the_digests_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(passwords.hmac, "compare_digest", spy)
    stored = passwords.hash_password("timing", CHEAP)
    assert passwords.check_password("timing", stored)
    assert not passwords.check_password("timinG", stored)
    assert len(seen) == 2 and all(len(a) == len(b) == passwords.HASH_BYTES for a, b in seen)


# -- the policy's rules ------------------------------------------------------------------------------


def test_without_a_policy_the_aws_default_rules_apply() -> None:
    assert policy_violations("Correct-Horse-7", None, "acme") == []
    assert policy_violations("lower-and-1", None, "acme") == []  # three kinds of four
    assert policy_violations("Sh0rt-A", None, "acme") == ["it must be at least 8 characters long"]
    assert len(policy_violations("onlylowercase", None, "acme")) == 1
    assert policy_violations("Acme-Corp-1", None, "acme-corp-1") == ["it must not be the account's name"]


def test_a_policy_applies_each_of_its_rules() -> None:
    strict = PasswordPolicy(
        MinimumPasswordLength=10,
        RequireSymbols=True,
        RequireNumbers=True,
        RequireUppercaseCharacters=True,
        RequireLowercaseCharacters=True,
    )
    assert policy_violations("Abcdefgh1!", strict, "acme") == []
    assert len(policy_violations("   ", strict, "acme")) == 5
    assert policy_violations("Abcdefgh1~", strict, "acme") == [
        "it must contain one of ! # $ % & ' ( ) * + - = @ [ ] ^ _ { | }"
    ]
    lenient = PasswordPolicy()  # UpdateAccountPasswordPolicy's defaults: 6 characters, nothing else
    assert policy_violations("simple", lenient, "acme") == []
    assert policy_violations("acme", lenient, "acme") == ["it must be at least 6 characters long"]


def test_a_violation_is_password_policy_violation_without_the_password() -> None:
    with pytest.raises(CloudError) as err:
        check_password("Hunter2", PasswordPolicy(MinimumPasswordLength=12), "acme")
    assert err.value.code == "PasswordPolicyViolation" and err.value.status == 400
    assert "Hunter2" not in err.value.message
    assert err.value.message.startswith("Password does not conform to the account password policy")


def test_the_policy_answers_expire_passwords_as_aws_computes_it() -> None:
    assert PasswordPolicy().view()["ExpirePasswords"] is False
    assert "MaxPasswordAge" not in PasswordPolicy().view()
    aged = PasswordPolicy(MaxPasswordAge=30).view()
    assert aged["ExpirePasswords"] is True and aged["MaxPasswordAge"] == 30 and aged["HardExpiry"] is False
    full = PasswordPolicy(MaxPasswordAge=1, PasswordReusePrevention=3, HardExpiry=True).view()
    assert (full["PasswordReusePrevention"], full["HardExpiry"]) == (3, True)
