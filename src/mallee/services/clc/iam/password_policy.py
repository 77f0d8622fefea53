"""The account's password policy: Get/Update/DeleteAccountPasswordPolicy, and the rules a new
console password must meet (the policy's, or AWS's default ones when the account set none)."""

from __future__ import annotations

import datetime as _dt
import json
import string
from dataclasses import asdict, dataclass, fields
from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import IAM
from mallee.services.clc.iam import store
from mallee.services.clc.iam.views import account_of
from mallee.services.clc.tables import Account

# The characters RequireSymbols asks for, as the API reference lists them.
SYMBOLS = frozenset("!@#$%^&*()_+-=[]{}|'")


@dataclass(frozen=True)
class PasswordPolicy:
    """An account's password policy, members named as IAM names them. Every member has the
    default UpdateAccountPasswordPolicy gives it when left out (the update replaces the whole
    policy, as AWS's does)."""

    MinimumPasswordLength: int = 6
    RequireSymbols: bool = False
    RequireNumbers: bool = False
    RequireUppercaseCharacters: bool = False
    RequireLowercaseCharacters: bool = False
    AllowUsersToChangePassword: bool = False
    MaxPasswordAge: int | None = None  # days; None: passwords never expire
    PasswordReusePrevention: int | None = None  # how many previous passwords may not come back
    HardExpiry: bool | None = None

    @classmethod
    def of(cls, account: Account) -> PasswordPolicy | None:
        """The account's policy; None when it set none."""
        if account.password_policy is None:
            return None
        return cls(**json.loads(account.password_policy))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def view(self) -> dict[str, Any]:
        """As GetAccountPasswordPolicy answers it: ExpirePasswords is whether MaxPasswordAge is
        set; the age, the reuse count and HardExpiry only when the policy has them."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        out["ExpirePasswords"] = bool(self.MaxPasswordAge)
        if self.MaxPasswordAge and self.HardExpiry is None:
            out["HardExpiry"] = False
        return out

    def expires(self, changed: _dt.datetime) -> _dt.datetime | None:
        """When a password set at `changed` expires (None: never)."""
        if not self.MaxPasswordAge:
            return None
        return changed + _dt.timedelta(days=self.MaxPasswordAge)


def check_password(password: str, policy: PasswordPolicy | None, account_name: str) -> None:
    """PasswordPolicyViolation unless `password` meets the account's policy, or, where it set
    none, AWS's default password policy: at least 8 characters, of at least three of the four
    kinds (upper and lower case letters, digits, other characters), and not the account's name
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_passwords_account-policy.html).
    The message says what is missing, never the password."""
    broken = policy_violations(password, policy, account_name)
    if broken:
        raise CloudError(
            "PasswordPolicyViolation",
            "Password does not conform to the account password policy: " + "; ".join(broken) + ".",
        )


def policy_violations(password: str, policy: PasswordPolicy | None, account_name: str) -> list[str]:
    """What `password` lacks under `policy` (None: AWS's default policy), in words."""
    upper = any(c in string.ascii_uppercase for c in password)
    lower = any(c in string.ascii_lowercase for c in password)
    digit = any(c in string.digits for c in password)
    broken: list[str] = []
    if policy is None:
        other = any(not c.isascii() or not c.isalnum() for c in password)
        if len(password) < 8:
            broken.append("it must be at least 8 characters long")
        if sum((upper, lower, digit, other)) < 3:
            broken.append(
                "it must mix at least three of upper case letters, lower case letters, numbers "
                "and other characters"
            )
        if password.lower() == account_name.lower():
            broken.append("it must not be the account's name")
        return broken
    if len(password) < policy.MinimumPasswordLength:
        broken.append(f"it must be at least {policy.MinimumPasswordLength} characters long")
    if policy.RequireSymbols and not SYMBOLS.intersection(password):
        broken.append("it must contain one of " + " ".join(sorted(SYMBOLS)))
    if policy.RequireNumbers and not digit:
        broken.append("it must contain a number")
    if policy.RequireUppercaseCharacters and not upper:
        broken.append("it must contain an upper case letter (A-Z)")
    if policy.RequireLowercaseCharacters and not lower:
        broken.append("it must contain a lower case letter (a-z)")
    return broken


# -- operations ------------------------------------------------------------------------------------


@IAM.operation()
def get_account_password_policy(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    account = store.find_account(ctx.session, account_of(ctx))
    policy = PasswordPolicy.of(account)
    if policy is None:
        raise _no_policy(account)
    return {"PasswordPolicy": policy.view()}


@IAM.operation()
def update_account_password_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    # The model's ranges (length 6-128, age 1-1095 days, reuse 1-24) are checked by the parser.
    account = store.find_account(ctx.session, account_of(ctx))
    members = {f.name: p[f.name] for f in fields(PasswordPolicy) if f.name in p}
    account.password_policy = PasswordPolicy(**members).to_json()
    return None


@IAM.operation()
def delete_account_password_policy(ctx: RequestContext, p: dict[str, Any]) -> None:
    account = store.find_account(ctx.session, account_of(ctx))
    if account.password_policy is None:
        raise _no_policy(account)
    account.password_policy = None
    return None


def _no_policy(account: Account) -> CloudError:
    return CloudError("NoSuchEntity", f"The Password Policy with domain name {account.id} cannot be found.")
