"""Listing buckets through boto3: ListObjects (v1), ListObjectsV2 and ListObjectVersions, with
prefixes, delimiters, pagination, URL encoding and S3's UTF-8 byte order."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import unquote_plus

import pytest
from botocore.exceptions import ClientError

from support.answers import code
from support.cloud import Keys

TREE = [
    "a", "a/1", "a/2", "a/b/1", "a/b/2", "a/c", "a/c/", "a/c/x", "ab", "ab/1", "b", "b/", "b//c",
    "c/1", "c/2", "c/3", "c/d/e/f", "d", "e/1", "e/2", "e/3", "f", "g/x/y", "g/y", "h", "i/", "i/j",
    "j", "k/1", "z",
]  # fmt: skip
NASTY = [
    "with space", "new\nline", "../up", "a//double", "tab\there", "plus+sign", "per%cent", "q?mark",
    "amp&and=eq", "caf\u00e9/\u00fcber", "emoji/\U0001f600", "x" * 1024, "trailing space ", "~tilde",
    "<xml>&'\"", "#hash",
]  # fmt: skip


def new_bucket(s3: Any, keys: list[str] = ()) -> str:  # type: ignore[assignment]
    name = f"ls-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=name)
    for key in keys:
        s3.put_object(Bucket=name, Key=key, Body=key.encode()[:16])
    return name


def utf8_sorted(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def test_lists_keys_in_utf8_byte_order(s3: Any) -> None:
    keys = ["a", "B", "\u00e9", "~", "\u00ff", "\U0001f600", "A", "\uffff", "0"]
    bucket = new_bucket(s3, keys)
    v2 = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    v1 = [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]]
    versions = [v["Key"] for v in s3.list_object_versions(Bucket=bucket)["Versions"]]
    assert v2 == v1 == versions == utf8_sorted(keys)
    assert v2[:5] == ["0", "A", "B", "a", "~"]


def test_prefix_and_delimiter_give_common_prefixes(s3: Any) -> None:
    bucket = new_bucket(s3, TREE)
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["a", "ab", "b", "d", "f", "h", "j", "z"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "ab/", "b/", "c/", "e/", "g/", "i/", "k/"]
    assert top["KeyCount"] == 16 and top["IsTruncated"] is False
    under_a = s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in under_a["Contents"]] == ["a/1", "a/2", "a/c"]
    assert [p["Prefix"] for p in under_a["CommonPrefixes"]] == ["a/b/", "a/c/"]
    assert under_a["Prefix"] == "a/" and under_a["Delimiter"] == "/"
    double = s3.list_objects(Bucket=bucket, Prefix="b/", Delimiter="/")
    assert [p["Prefix"] for p in double["CommonPrefixes"]] == ["b//"]
    assert [o["Key"] for o in double["Contents"]] == ["b/"]
    no_delimiter = s3.list_objects_v2(Bucket=bucket, Prefix="c/")
    assert [o["Key"] for o in no_delimiter["Contents"]] == ["c/1", "c/2", "c/3", "c/d/e/f"]
    multi_char = s3.list_objects_v2(Bucket=bucket, Delimiter="/1")
    assert [p["Prefix"] for p in multi_char["CommonPrefixes"]] == [
        "a/1",
        "a/b/1",
        "ab/1",
        "c/1",
        "e/1",
        "k/1",
    ]


def _concat(pages: Any, fields: tuple[str, ...]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {f: [] for f in fields}
    for page in pages:
        for f in fields:
            out[f] += page.get(f, [])
    return out


def _strip(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(i.get("Key"), i.get("Prefix"), i.get("VersionId"), i.get("IsLatest")) for i in items]


@pytest.mark.parametrize("page_size", [1, 2, 3, 4, 5, 6, 7])
def test_paginated_listings_concatenate_to_the_whole_listing(s3: Any, page_size: int) -> None:
    bucket = new_bucket(s3, TREE)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key in ("a/2", "c/2", "c/2", "j"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"again")
    s3.delete_object(Bucket=bucket, Key="c/3")
    for delimiter in ("", "/"):
        for prefix in ("", "a/", "c"):
            args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if delimiter:
                args["Delimiter"] = delimiter
            paging = {"PageSize": page_size}
            for op, fields in (
                ("list_objects", ("Contents", "CommonPrefixes")),
                ("list_objects_v2", ("Contents", "CommonPrefixes")),
                ("list_object_versions", ("Versions", "DeleteMarkers", "CommonPrefixes")),
            ):
                whole = getattr(s3, op)(**args)
                assert whole["IsTruncated"] is False
                pages = list(s3.get_paginator(op).paginate(**args, PaginationConfig=paging))
                assert all(
                    len(p.get(fields[0], [])) + sum(len(p.get(f, [])) for f in fields[1:]) <= page_size
                    for p in pages
                )
                got = _concat(pages, fields)
                for f in fields:
                    assert _strip(got[f]) == _strip(whole.get(f, [])), (op, delimiter, prefix, f)


def test_v2_continuation_token_start_after_fetch_owner_and_key_count(s3: Any, account: Keys) -> None:
    bucket = new_bucket(s3, TREE)
    first = s3.list_objects_v2(Bucket=bucket, MaxKeys=3, Delimiter="/")
    assert first["IsTruncated"] is True and first["KeyCount"] == 3
    assert [o["Key"] for o in first["Contents"]] == ["a", "ab"]
    assert [p["Prefix"] for p in first["CommonPrefixes"]] == ["a/"]
    assert "Owner" not in first["Contents"][0]
    second = s3.list_objects_v2(
        Bucket=bucket, MaxKeys=3, Delimiter="/", ContinuationToken=first["NextContinuationToken"]
    )
    assert second["ContinuationToken"] == first["NextContinuationToken"]
    assert [p["Prefix"] for p in second["CommonPrefixes"]] == ["ab/", "b/"]
    assert [o["Key"] for o in second["Contents"]] == ["b"]
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="c/2", MaxKeys=2, FetchOwner=True)
    assert [o["Key"] for o in after["Contents"]] == ["c/3", "c/d/e/f"]
    assert after["StartAfter"] == "c/2"
    assert after["Contents"][0]["Owner"]["ID"] == account.account_id
    with pytest.raises(ClientError) as err:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="not a token")
    assert code(err) == "InvalidArgument"


def test_v1_marker_and_next_marker_only_with_delimiter(s3: Any, account: Keys) -> None:
    bucket = new_bucket(s3, TREE)
    plain = s3.list_objects(Bucket=bucket, MaxKeys=2, Marker="b")
    assert [o["Key"] for o in plain["Contents"]] == ["b/", "b//c"]
    assert plain["IsTruncated"] is True and "NextMarker" not in plain and plain["Marker"] == "b"
    assert plain["Contents"][0]["Owner"]["ID"] == account.account_id
    grouped = s3.list_objects(Bucket=bucket, MaxKeys=2, Delimiter="/", Marker="b")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["b/", "c/"]
    assert grouped["NextMarker"] == "c/"
    rest = s3.list_objects(Bucket=bucket, MaxKeys=1, Delimiter="/", Marker=grouped["NextMarker"])
    assert [o["Key"] for o in rest["Contents"]] == ["d"]


def test_max_keys_zero_and_limits(s3: Any) -> None:
    bucket = new_bucket(s3, ["a", "b"])
    for op in ("list_objects", "list_objects_v2", "list_object_versions"):
        answer = getattr(s3, op)(Bucket=bucket, MaxKeys=0)
        assert answer["IsTruncated"] is False and answer["MaxKeys"] == 0
        assert "Contents" not in answer and "Versions" not in answer
    assert s3.list_objects_v2(Bucket=bucket, MaxKeys=5000)["MaxKeys"] == 1000
    assert s3.list_objects_v2(Bucket=bucket)["MaxKeys"] == 1000


def test_empty_bucket_and_missing_bucket(s3: Any) -> None:
    bucket = new_bucket(s3)
    answer = s3.list_objects_v2(Bucket=bucket)
    assert answer["KeyCount"] == 0 and "Contents" not in answer and answer["Name"] == bucket
    for op in ("list_objects", "list_objects_v2", "list_object_versions"):
        with pytest.raises(ClientError) as err:
            getattr(s3, op)(Bucket=f"missing-{secrets.token_hex(6)}")
        assert code(err) == "NoSuchBucket"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_nasty_keys_round_trip_through_every_listing(s3: Any) -> None:
    bucket = new_bucket(s3, NASTY)
    expected = utf8_sorted(NASTY)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == expected
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == expected
    assert [v["Key"] for v in s3.list_object_versions(Bucket=bucket)["Versions"]] == expected
    paged = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, PaginationConfig={"PageSize": 3}
        )
        for o in page["Contents"]
    ]
    assert paged == expected
    for key in NASTY:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()[:16]


def test_encoding_type_url_encodes_keys_prefixes_and_markers(s3: Any) -> None:
    bucket = new_bucket(s3, NASTY)
    raw = s3.list_objects_v2(Bucket=bucket, EncodingType="url", Prefix="caf\u00e9/", Delimiter="\u00fc")
    assert raw["EncodingType"] == "url"
    assert raw["Prefix"] == "caf%C3%A9/" and raw["Delimiter"] == "%C3%BC"
    assert [p["Prefix"] for p in raw["CommonPrefixes"]] == ["caf%C3%A9/%C3%BC"]
    everything = s3.list_objects_v2(Bucket=bucket, EncodingType="url")["Contents"]
    encoded = [o["Key"] for o in everything]
    assert all("\n" not in k and " " not in k and "<" not in k for k in encoded)
    assert [unquote_plus(k) for k in encoded] == utf8_sorted(NASTY)
    v1 = s3.list_objects(Bucket=bucket, EncodingType="url", Marker="new\nline", Delimiter="/", MaxKeys=1)
    assert v1["Marker"] == "new%0Aline" and v1["NextMarker"] == "per%25cent"
    versions = s3.list_object_versions(Bucket=bucket, EncodingType="url", KeyMarker="with space")
    assert versions["KeyMarker"] == "with+space"
    assert [unquote_plus(v["Key"]) for v in versions["Versions"]] == ["x" * 1024, "~tilde"]


def test_key_marker_and_version_id_marker_page_through_versions(s3: Any) -> None:
    bucket = new_bucket(s3)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    ids = [s3.put_object(Bucket=bucket, Key="k", Body=str(i).encode())["VersionId"] for i in range(3)]
    s3.put_object(Bucket=bucket, Key="l", Body=b"l")
    first = s3.list_object_versions(Bucket=bucket, MaxKeys=2)
    assert [v["VersionId"] for v in first["Versions"]] == [ids[2], ids[1]]
    assert [v["IsLatest"] for v in first["Versions"]] == [True, False]
    assert first["NextKeyMarker"] == "k" and first["NextVersionIdMarker"] == ids[1]
    rest = s3.list_object_versions(
        Bucket=bucket, KeyMarker=first["NextKeyMarker"], VersionIdMarker=first["NextVersionIdMarker"]
    )
    assert [(v["Key"], v["VersionId"]) for v in rest["Versions"]][0] == ("k", ids[0])
    assert [v["Key"] for v in rest["Versions"]] == ["k", "l"]
    assert rest["IsTruncated"] is False
    after_key = s3.list_object_versions(Bucket=bucket, KeyMarker="k")
    assert [v["Key"] for v in after_key["Versions"]] == ["l"]
    with pytest.raises(ClientError) as err:
        s3.list_object_versions(Bucket=bucket, VersionIdMarker=ids[0])
    assert code(err) == "InvalidArgument"


def test_a_large_common_prefix_is_skipped_not_listed(s3: Any) -> None:
    bucket = new_bucket(s3, [f"big/{i:04d}" for i in range(150)] + ["after", "big0", "before"])
    answer = s3.list_objects_v2(Bucket=bucket, Delimiter="/", MaxKeys=3)
    assert [o["Key"] for o in answer["Contents"]] == ["after", "before"]
    assert [p["Prefix"] for p in answer["CommonPrefixes"]] == ["big/"]
    assert answer["IsTruncated"] is True
    rest = s3.list_objects_v2(Bucket=bucket, Delimiter="/", ContinuationToken=answer["NextContinuationToken"])
    assert [o["Key"] for o in rest["Contents"]] == ["big0"] and "CommonPrefixes" not in rest
