"""DescribeInstances in pages (MaxResults / NextToken) and with filters, as boto3's paginator and a
script walking the tokens by hand use it: every instance once, in the order of the whole answer
(launch time, then id), whatever the page size; filters select before the pages are cut; the page
is chosen before any view is built (instance_listing.py), so what a page shows must be what the
unpaged answer shows."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.test_ec2_instances import register_tiny_image, wait_state
from support.answers import code
from support.cloud import Cloud, Keys


def _ids(answer: dict[str, Any]) -> list[str]:
    return [i["InstanceId"] for r in answer["Reservations"] for i in r["Instances"]]


@pytest.fixture(scope="module")
def launched(cloud: Cloud) -> tuple[Any, list[str], list[str]]:
    """An account with two reservations: 4 t1.micro tagged tier=web, then 3 m1.small tagged
    tier=db. Its ec2 client and the ids of each."""
    keys: Keys = cloud.new_account("pages")
    ami = register_tiny_image(cloud, keys)
    ec2 = cloud.client("ec2", keys)
    web = ec2.run_instances(
        ImageId=ami,
        InstanceType="t1.micro",
        MinCount=4,
        MaxCount=4,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "tier", "Value": "web"}]}],
    )
    db = ec2.run_instances(
        ImageId=ami,
        InstanceType="m1.small",
        MinCount=3,
        MaxCount=3,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "tier", "Value": "db"}]}],
    )
    web_ids = [i["InstanceId"] for i in web["Instances"]]
    db_ids = [i["InstanceId"] for i in db["Instances"]]
    wait_state(ec2, web_ids + db_ids, "running")
    return ec2, web_ids, db_ids


def _in_order(ec2: Any, wanted: list[str]) -> list[str]:
    """`wanted` in the order of the whole, unpaged answer."""
    return [i for i in _ids(ec2.describe_instances()) if i in wanted]


def test_pages_hold_every_instance_once_in_order(launched: tuple[Any, list[str], list[str]]) -> None:
    ec2, web, db = launched
    whole = ec2.describe_instances()
    assert sorted(_ids(whole)) == sorted(web + db)
    seen: list[str] = []
    token = None
    while True:
        page = ec2.describe_instances(MaxResults=5, **({"NextToken": token} if token else {}))
        seen += _ids(page)
        token = page.get("NextToken")
        if not token:
            break
    assert seen == _ids(whole)
    first = ec2.describe_instances(MaxResults=5)
    assert len(_ids(first)) == 5 and first["NextToken"]
    shown = {i["InstanceId"]: i for r in whole["Reservations"] for i in r["Instances"]}
    for instance in (i for r in first["Reservations"] for i in r["Instances"]):
        assert instance == shown[instance["InstanceId"]]  # a page shows what the whole answer shows


def test_filters_select_before_the_pages_are_cut(launched: tuple[Any, list[str], list[str]]) -> None:
    ec2, web, db = launched
    by_type = ec2.describe_instances(
        Filters=[{"Name": "instance-type", "Values": ["m1.small"]}], MaxResults=5
    )
    assert _ids(by_type) == _in_order(ec2, db) and "NextToken" not in by_type
    by_tag = ec2.describe_instances(Filters=[{"Name": "tag:tier", "Values": ["web"]}], MaxResults=5)
    assert _ids(by_tag) == _in_order(ec2, web)
    both = ec2.describe_instances(
        Filters=[
            {"Name": "instance-state-name", "Values": ["running"]},
            {"Name": "tag-value", "Values": ["w*"]},
            {"Name": "availability-zone", "Values": ["*"]},
        ]
    )
    assert _ids(both) == _in_order(ec2, web)
    named = ec2.describe_instances(
        InstanceIds=[db[0], web[1]], Filters=[{"Name": "tag-key", "Values": ["tier"]}]
    )
    assert _ids(named) == _in_order(ec2, [db[0], web[1]])  # in the listing's order, not the order asked
    paginator = ec2.get_paginator("describe_instances")
    walked = [
        i
        for page in paginator.paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["running"]}], PaginationConfig={"PageSize": 5}
        )
        for i in _ids(page)
    ]
    assert walked == _in_order(ec2, web + db)
    assert _ids(ec2.describe_instances(Filters=[{"Name": "tag:tier", "Values": ["none"]}])) == []
    # Exact values narrow the query itself, wildcards do not: both must select the same.
    for values in (["m1.small"], ["m1.sm?ll"], ["m1.*"], ["t1.micro", "m1.small"]):
        chosen = ec2.describe_instances(Filters=[{"Name": "instance-type", "Values": values}])
        wanted = db if values != ["t1.micro", "m1.small"] else web + db
        assert _ids(chosen) == _in_order(ec2, wanted), values
    stopped = [{"Name": "instance-state-name", "Values": ["stopped", "stopping"]}]
    assert _ids(ec2.describe_instances(Filters=stopped)) == []
    exact = [
        {"Name": "tag:tier", "Values": ["db", "web"]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ]
    pages = [_ids(page) for page in paginator.paginate(Filters=exact, PaginationConfig={"PageSize": 5})]
    assert [len(ids) for ids in pages] == [5, 2] and sum(pages, []) == _in_order(ec2, web + db)


def test_bad_names_page_sizes_and_filters_are_refused(launched: tuple[Any, list[str], list[str]]) -> None:
    ec2, web, _db = launched
    with pytest.raises(ClientError) as caught:
        ec2.describe_instances(MaxResults=4)
    assert code(caught) == "InvalidParameterValue"
    with pytest.raises(ClientError) as caught:
        ec2.describe_instances(Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
    assert code(caught) == "InvalidParameterValue"
    with pytest.raises(ClientError) as caught:
        ec2.describe_instances(InstanceIds=[web[0], "i-00000000000000000"])
    assert code(caught) == "InvalidInstanceID.NotFound"
    with pytest.raises(ClientError) as caught:
        ec2.describe_instances(InstanceIds=["i-nothex"])
    assert code(caught) == "InvalidInstanceID.Malformed"
