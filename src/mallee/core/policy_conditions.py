"""The building blocks of IAM policy evaluation: patterns with policy variables, and conditions.

`Template` is one string from a policy (an Action, a Resource, a condition value) split into literal
text, `*`/`?` wildcards and `${...}` policy variables, so it can be rendered against a request's
context at evaluation time. The rest of the module parses a statement's `Condition` block and
evaluates it with AWS's documented semantics ("IAM JSON policy elements: Condition operators",
"Single-valued vs. multivalued context keys"):

* a key missing from the request makes positive operators false and negated ones true, except
  for `...IfExists` (true when missing) and `Null` (which tests presence itself);
* several values for one key OR together, but for negated operators (`StringNotEquals`, ...) the
  request value must differ from every listed value (so effectively AND);
* `ForAllValues:` is true when every request value matches (and when the key is missing or empty),
  `ForAnyValue:` when at least one does (false when missing).

Pure Python, no I/O: policy.py builds on it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from mallee.core.errors import CloudError

SYNTAX_ERROR = "Syntax errors in policy."

# `${name}` or `${name, 'default'}` ('' inside the default is one quote), as AWS documents them.
_VARIABLE = re.compile(r"\$\{\s*([^\s,}']+)\s*(?:,\s*'((?:[^']|'')*)'\s*)?\}")
# `${*}`, `${?}` and `${$}` are how a policy writes those characters literally.
_ESCAPES = frozenset("*?$")


def malformed(message: str = SYNTAX_ERROR) -> CloudError:
    return CloudError("MalformedPolicyDocument", message)


class RequestContext:
    """The request's condition keys, looked up case-insensitively (AWS treats key names so)."""

    __slots__ = ("_data",)

    def __init__(self, raw: Mapping[str, str | Sequence[str]] | None) -> None:
        self._data: dict[str, str | tuple[str, ...]] = {}
        for key, value in (raw or {}).items():
            self._data[key.lower()] = value if isinstance(value, str) else tuple(value)

    def values(self, key: str) -> tuple[str, ...] | None:
        """All values of `key`, or None when the request does not carry it."""
        value = self._data.get(key.lower())
        if value is None:
            return None
        return (value,) if isinstance(value, str) else value

    def scalar(self, key: str) -> str | None:
        """The value for a policy variable: multivalued keys cannot be variables, so they fail."""
        value = self._data.get(key.lower())
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Token:
    kind: str  # "lit", "star", "one" (the `?` wildcard) or "var"
    text: str  # literal text, or the variable's key
    default: str | None = None


@dataclass(frozen=True)
class Template:
    """One policy string, parsed once; rendered per request because variables depend on it."""

    tokens: tuple[Token, ...]

    @classmethod
    def parse(cls, raw: str, *, variables: bool, wildcards: bool) -> Template:
        tokens: list[Token] = []
        literal: list[str] = []

        def emit(token: Token) -> None:
            if literal:
                tokens.append(Token("lit", "".join(literal)))
                literal.clear()
            tokens.append(token)

        i = 0
        while i < len(raw):
            match = _VARIABLE.match(raw, i) if variables else None
            if match and match.group(1) in _ESCAPES and match.group(2) is None:
                literal.append(match.group(1))
            elif match:
                default = match.group(2)
                emit(Token("var", match.group(1), None if default is None else default.replace("''", "'")))
            elif wildcards and raw[i] in "*?":
                emit(Token("star" if raw[i] == "*" else "one", raw[i]))
            else:
                literal.append(raw[i])
            i = match.end() if match else i + 1
        if literal:
            tokens.append(Token("lit", "".join(literal)))
        return cls(tuple(tokens))

    def render_text(self, ctx: RequestContext) -> str | None:
        """The string with variables substituted (wildcards kept as written); None if unresolvable."""
        parts: list[str] = []
        for token in self.tokens:
            if token.kind == "var":
                value = _resolve(token, ctx)
                if value is None:
                    return None
                parts.append(value)
            else:
                parts.append(token.text)
        return "".join(parts)

    def render_regex(self, ctx: RequestContext, *, arn: bool = False) -> str | None:
        """A regex for the pattern; None when a variable cannot be resolved (nothing matches).

        With `arn`, wildcards in the first five colon-separated fields stay inside their field, as
        the Arn* condition operators compare an ARN field by field; elsewhere `*` spans ':' and '/'.
        """
        parts: list[str] = []
        colons = 0
        for token in self.tokens:
            in_field = arn and colons < 5
            if token.kind == "star":
                parts.append("[^:]*" if in_field else ".*")
            elif token.kind == "one":
                parts.append("[^:]" if in_field else ".")
            else:
                text = _resolve(token, ctx) if token.kind == "var" else token.text
                if text is None:
                    return None
                colons += text.count(":")
                parts.append(re.escape(text))
        return "".join(parts)

    def matches(
        self, value: str, ctx: RequestContext, *, ignore_case: bool = False, arn: bool = False
    ) -> bool:
        regex = self.render_regex(ctx, arn=arn)
        flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
        return regex is not None and re.fullmatch(regex, value, flags) is not None


def _resolve(token: Token, ctx: RequestContext) -> str | None:
    value = ctx.scalar(token.text)
    return value if value is not None else token.default


# --- value parsers (used both to validate a policy and to read request values) ---


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _date(text: str) -> dt.datetime | None:
    """ISO 8601 (date, date-time, with or without zone: naive means UTC) or epoch seconds."""
    text = text.strip()
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return dt.datetime.fromtimestamp(float(text), tz=dt.UTC)
        value = dt.datetime.fromisoformat(text.upper())
    except (ValueError, OverflowError, OSError):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


# --- the operators: each test is the positive form; `negated` flips it per AWS's rules ---

Test = Callable[[str, Template, RequestContext], bool]
_T = TypeVar("_T")


def _string_equals(value: str, policy: Template, ctx: RequestContext) -> bool:
    return value == policy.render_text(ctx)


def _string_equals_ic(value: str, policy: Template, ctx: RequestContext) -> bool:
    text = policy.render_text(ctx)
    return text is not None and value.casefold() == text.casefold()


def _string_like(value: str, policy: Template, ctx: RequestContext) -> bool:
    return policy.matches(value, ctx)


def _arn_like(value: str, policy: Template, ctx: RequestContext) -> bool:
    return policy.matches(value, ctx, arn=True)


def _bool(value: str, policy: Template, ctx: RequestContext) -> bool:
    text = policy.render_text(ctx)
    return text is not None and value.strip().lower() == text.strip().lower()


def _ip_address(value: str, policy: Template, ctx: RequestContext) -> bool:
    address, network = _address(value), _network(policy.render_text(ctx) or "")
    return address is not None and network is not None and address in network


def _ordered(parse: Callable[[str], _T | None], compare: Callable[[_T, _T], bool]) -> Test:
    """A comparison of two parsed values; unparseable request values never match."""

    def test(value: str, policy: Template, ctx: RequestContext) -> bool:
        left, right = parse(value), parse(policy.render_text(ctx) or "")
        return left is not None and right is not None and compare(left, right)

    return test


@dataclass(frozen=True)
class OperatorSpec:
    test: Test
    negated: bool = False
    variables: bool = False  # AWS substitutes policy variables only for string, ARN and Bool values
    wildcards: bool = False
    valid: Callable[[str], bool] | None = None  # checks a policy value when the policy is parsed


def _numeric(compare: Callable[[Decimal, Decimal], bool], negated: bool = False) -> OperatorSpec:
    return OperatorSpec(_ordered(_number, compare), negated, valid=lambda v: _number(v) is not None)


def _dated(compare: Callable[[dt.datetime, dt.datetime], bool], negated: bool = False) -> OperatorSpec:
    return OperatorSpec(_ordered(_date, compare), negated, valid=lambda v: _date(v) is not None)


OPERATORS: dict[str, OperatorSpec] = {
    "StringEquals": OperatorSpec(_string_equals, variables=True),
    "StringNotEquals": OperatorSpec(_string_equals, True, variables=True),
    "StringEqualsIgnoreCase": OperatorSpec(_string_equals_ic, variables=True),
    "StringNotEqualsIgnoreCase": OperatorSpec(_string_equals_ic, True, variables=True),
    "StringLike": OperatorSpec(_string_like, variables=True, wildcards=True),
    "StringNotLike": OperatorSpec(_string_like, True, variables=True, wildcards=True),
    "NumericEquals": _numeric(operator.eq),
    "NumericNotEquals": _numeric(operator.eq, negated=True),
    "NumericLessThan": _numeric(operator.lt),
    "NumericLessThanEquals": _numeric(operator.le),
    "NumericGreaterThan": _numeric(operator.gt),
    "NumericGreaterThanEquals": _numeric(operator.ge),
    "DateEquals": _dated(operator.eq),
    "DateNotEquals": _dated(operator.eq, negated=True),
    "DateLessThan": _dated(operator.lt),
    "DateLessThanEquals": _dated(operator.le),
    "DateGreaterThan": _dated(operator.gt),
    "DateGreaterThanEquals": _dated(operator.ge),
    "Bool": OperatorSpec(_bool, variables=True),
    "IpAddress": OperatorSpec(_ip_address, valid=lambda v: _network(v) is not None),
    "NotIpAddress": OperatorSpec(_ip_address, True, valid=lambda v: _network(v) is not None),
    # AWS documents ArnEquals and ArnLike as behaving identically (both take wildcards).
    "ArnEquals": OperatorSpec(_arn_like, variables=True, wildcards=True),
    "ArnLike": OperatorSpec(_arn_like, variables=True, wildcards=True),
    "ArnNotEquals": OperatorSpec(_arn_like, True, variables=True, wildcards=True),
    "ArnNotLike": OperatorSpec(_arn_like, True, variables=True, wildcards=True),
}
_CANONICAL = {name.lower(): name for name in [*OPERATORS, "Null"]}
_SET_OPERATORS = ("ForAllValues", "ForAnyValue")


@dataclass(frozen=True)
class Condition:
    """One key under one operator, e.g. `"ForAnyValue:StringLikeIfExists": {"aws:TagKeys": [...]}`."""

    operator: str  # canonical name without qualifier or suffix: "StringLike", "Null", ...
    key: str  # lowercased: condition keys are case-insensitive
    values: tuple[Template, ...]
    set_operator: str | None = None  # "ForAllValues" | "ForAnyValue"
    if_exists: bool = False


# --- parsing ---


def parse_conditions(block: object, *, variables: bool) -> tuple[Condition, ...]:
    """Parse a statement's Condition element; `variables` is False for pre-2012-10-17 policies."""
    if not isinstance(block, dict):
        raise malformed()
    conditions: list[Condition] = []
    for name, keys in block.items():
        set_operator, base, if_exists = _split_operator(name)
        if not isinstance(keys, dict):
            raise malformed()
        for key, raw_values in keys.items():
            _check_key(key)
            values = _condition_values(raw_values)
            templates = _templates(base, values, variables)
            conditions.append(Condition(base, key.lower(), templates, set_operator, if_exists))
    return tuple(conditions)


def _split_operator(name: str) -> tuple[str | None, str, bool]:
    set_operator = None
    for qualifier in _SET_OPERATORS:
        if name.lower().startswith(qualifier.lower() + ":"):
            set_operator, name = qualifier, name[len(qualifier) + 1 :]
    if_exists = name.lower().endswith("ifexists") and name.lower() != "ifexists"
    base = _CANONICAL.get(name[: -len("IfExists")].lower() if if_exists else name.lower())
    # Null tests presence itself, so neither a set qualifier nor IfExists makes sense with it.
    if base is None or (base == "Null" and (set_operator or if_exists)):
        raise malformed()
    return set_operator, base, if_exists


def _check_key(key: str) -> None:
    if ":" not in key:
        raise malformed("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.")


def _condition_values(raw: object) -> list[str]:
    """Condition values as strings; JSON booleans and numbers are accepted as IAM does."""
    items = raw if isinstance(raw, list) else [raw]
    values: list[str] = []
    for item in items:
        if isinstance(item, bool):
            values.append("true" if item else "false")
        elif isinstance(item, str | int | float):
            values.append(str(item))
        else:
            raise malformed()
    return values


def _templates(base: str, values: list[str], variables: bool) -> tuple[Template, ...]:
    if base == "Null":
        if any(v.lower() not in ("true", "false") for v in values):
            raise malformed()
        return tuple(Template((Token("lit", v.lower()),)) for v in values)
    spec = OPERATORS[base]
    if spec.valid is not None and not all(spec.valid(v) for v in values):
        raise malformed()
    return tuple(
        Template.parse(v, variables=variables and spec.variables, wildcards=spec.wildcards) for v in values
    )


# --- evaluation ---


def conditions_match(conditions: Sequence[Condition], ctx: RequestContext) -> bool:
    """All conditions of a statement must hold (keys and operators AND together)."""
    return all(condition_matches(condition, ctx) for condition in conditions)


def condition_matches(condition: Condition, ctx: RequestContext) -> bool:
    present = ctx.values(condition.key)
    if condition.operator == "Null":
        absent = not present
        return any((value.text == "true") == absent for value in _literals(condition))
    spec = OPERATORS[condition.operator]
    if not present:
        if condition.if_exists:
            return True
        if condition.set_operator is not None:
            return condition.set_operator == "ForAllValues"
        return spec.negated
    results = (_value_matches(spec, value, condition.values, ctx) for value in present)
    # Without a qualifier a multivalued request key behaves like ForAnyValue.
    return all(results) if condition.set_operator == "ForAllValues" else any(results)


def _literals(condition: Condition) -> list[Token]:
    return [value.tokens[0] for value in condition.values if value.tokens]


def _value_matches(spec: OperatorSpec, value: str, policy: Sequence[Template], ctx: RequestContext) -> bool:
    hit = any(spec.test(value, template, ctx) for template in policy)
    return not hit if spec.negated else hit
