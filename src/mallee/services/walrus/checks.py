"""What several Walrus handlers check their input with: S3's MalformedXML, and tag sets."""

from __future__ import annotations

import re
from typing import Any

from mallee.core.errors import CloudError

MAX_BUCKET_TAGS = 50
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
# S3's documented tag characters: letters, digits and spaces representable in UTF-8, and + - = . _ : / @
_TAG_TEXT = re.compile(r"[\w +\-=.:/@]*")


def malformed_xml() -> CloudError:
    return CloudError(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
    )


def check_tags(tags: Any, limit: int) -> list[dict[str, str]]:
    """A TagSet as S3 accepts it (bucket: 50 tags, object: 10), else InvalidTag."""
    if not isinstance(tags, list):
        raise malformed_xml()
    if len(tags) > limit:
        raise CloudError(
            "InvalidTag",
            f"Object tags cannot be greater than {limit}"
            if limit < 50
            else f"The TagSet cannot contain more than {limit} tags",
        )
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    for tag in tags:
        key, value = tag.get("Key"), tag.get("Value")
        if key is None or value is None:
            raise malformed_xml()
        if not key or len(key) > MAX_TAG_KEY or not _TAG_TEXT.fullmatch(key):
            raise CloudError("InvalidTag", "The TagKey you have provided is invalid")
        if len(value) > MAX_TAG_VALUE or not _TAG_TEXT.fullmatch(value):
            raise CloudError("InvalidTag", "The TagValue you have provided is invalid")
        if key.lower().startswith("aws:"):
            raise CloudError("InvalidTag", "System tags cannot be added/updated by requester")
        if key in seen:
            raise CloudError("InvalidTag", "Cannot provide multiple Tags with the same key")
        seen.add(key)
        out.append({"Key": key, "Value": value})
    return out
