"""GetObjectAttributes' pieces: the Checksum member as S3 gives it, the ObjectParts page, and the
IAM actions the request is checked against."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mallee.core.errors import CloudError
from mallee.services.walrus.access import action_of
from mallee.services.walrus.checksums import checksum_type
from mallee.services.walrus.object_attributes import checksum_view, object_parts
from mallee.services.walrus.object_layer import loose_version
from mallee.services.walrus.tables import ObjectVersion

SIZES = [5, 5, 5, 2]


def _multipart(sizes: list[int] = SIZES) -> ObjectVersion:
    parts = [[f"blob-{n}", size, f'"etag-{n}"'] for n, size in enumerate(sizes, 1)]
    return loose_version({"locator": None, "body": None, "size": sum(sizes), "parts": json.dumps(parts)})


def test_checksum_view_drops_the_part_count_of_a_composite() -> None:
    composite = {"ChecksumCRC32": "AAAAAA==", "ChecksumType": "COMPOSITE"}
    assert checksum_view({"crc32": "AAAAAA==-3"}) == composite
    assert checksum_view({"crc64nvme": "AAAAAAAAAAA="}) == {
        "ChecksumCRC64NVME": "AAAAAAAAAAA=",
        "ChecksumType": "FULL_OBJECT",
    }
    assert (
        checksum_type({"sha256": "x-2"}) == "COMPOSITE" and checksum_type({"sha256": "x+/="}) == "FULL_OBJECT"
    )


def test_parts_keep_their_upload_numbers_and_checksums() -> None:
    """Versions completed now keep each part's number and checksums (see multipart._part_entry)."""
    entries = [
        ["b1", 5, '"e1"', "", 2, {"crc32": "AAAAAQ=="}],
        ["b2", 3, '"e2"', "", 7, {"crc32": "AAAAAg=="}],
    ]
    version = loose_version({"locator": None, "body": None, "size": 8, "parts": json.dumps(entries)})
    out = object_parts(version, True, {"PartNumberMarker": 2})
    assert out["Parts"] == [{"PartNumber": 7, "Size": 3, "ChecksumCRC32": "AAAAAg=="}]


def test_full_object_parts_are_counted_not_listed() -> None:
    assert object_parts(_multipart(), False, {"MaxParts": 1}) == {"TotalPartsCount": 4}


@pytest.mark.parametrize(
    ("params", "numbers", "truncated", "next_marker"),
    [
        ({}, [1, 2, 3, 4], False, 4),
        ({"MaxParts": 3}, [1, 2, 3], True, 3),
        ({"MaxParts": 3, "PartNumberMarker": 3}, [4], False, 4),
        ({"PartNumberMarker": 4}, [], False, 0),
        ({"PartNumberMarker": 10}, [], False, 0),
        ({"MaxParts": 5000}, [1, 2, 3, 4], False, 4),
    ],
)
def test_composite_parts_page(
    params: dict[str, Any], numbers: list[int], truncated: bool, next_marker: int
) -> None:
    out = object_parts(_multipart(), True, params)
    assert [part["PartNumber"] for part in out.get("Parts", [])] == numbers
    assert all(part["Size"] == SIZES[part["PartNumber"] - 1] for part in out.get("Parts", []))
    assert (out["IsTruncated"], out["NextPartNumberMarker"]) == (truncated, next_marker)
    assert out["TotalPartsCount"] == 4 and out["PartNumberMarker"] == params.get("PartNumberMarker", 0)
    assert out["MaxParts"] == min(params.get("MaxParts", 1000), 1000)


def test_negative_max_parts_is_refused() -> None:
    with pytest.raises(CloudError) as err:
        object_parts(_multipart(), True, {"MaxParts": -1})
    assert err.value.code == "InvalidArgument"


def test_iam_actions() -> None:
    assert action_of("GetObjectAttributes", {"Key": "k"}) == "s3:GetObjectAttributes"
    assert action_of("GetObjectAttributes", {"VersionId": "v"}) == "s3:GetObjectVersionAttributes"
