"""What a boto3 call answered: the error code and HTTP status that tests assert, an object's body."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError


def code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


def status(answer: Any) -> int:
    """The HTTP status of a boto3 answer, or of a ClientError caught with pytest.raises."""
    response = answer.value.response if isinstance(answer, pytest.ExceptionInfo) else answer
    return int(response["ResponseMetadata"]["HTTPStatusCode"])


def body(s3: Any, bucket: str, key: str, **kwargs: Any) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read())


def error_of(err: ClientError) -> tuple[int, str]:
    """A refused boto3 call's HTTP status and error code."""
    return int(err.response["ResponseMetadata"]["HTTPStatusCode"]), str(err.response["Error"]["Code"])


def refused(call: Any, **kwargs: Any) -> tuple[int, str]:
    """`call(**kwargs)`'s refusal (status, code); fails the test when the call succeeds."""
    try:
        call(**kwargs)
    except ClientError as err:
        return error_of(err)
    raise AssertionError(f"{getattr(call, '__name__', call)} was not refused")
