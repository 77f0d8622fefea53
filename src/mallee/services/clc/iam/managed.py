"""The AWS managed policies Mallee ships (the common ones), addressable by their AWS ARNs."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class AwsManagedPolicy:
    name: str
    description: str
    document: str

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::aws:policy/{self.name}"


def _doc(*statements: dict[str, object]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(actions: list[str]) -> dict[str, object]:
    return {"Effect": "Allow", "Action": actions, "Resource": "*"}


_POLICIES = [
    AwsManagedPolicy(
        "AdministratorAccess", "Provides full access to AWS services and resources.", _doc(_allow(["*"]))
    ),
    AwsManagedPolicy(
        "ReadOnlyAccess",
        "Provides read-only access to AWS services and resources.",
        _doc(
            _allow(
                [
                    "ec2:Describe*",
                    "ec2:Get*",
                    "iam:Get*",
                    "iam:List*",
                    "s3:Get*",
                    "s3:List*",
                    "sts:GetCallerIdentity",
                ]
            )
        ),
    ),
    AwsManagedPolicy("AmazonEC2FullAccess", "Provides full access to Amazon EC2.", _doc(_allow(["ec2:*"]))),
    AwsManagedPolicy(
        "AmazonEC2ReadOnlyAccess",
        "Provides read only access to Amazon EC2.",
        _doc(_allow(["ec2:Describe*", "ec2:Get*"])),
    ),
    AwsManagedPolicy("AmazonS3FullAccess", "Provides full access to all buckets.", _doc(_allow(["s3:*"]))),
    AwsManagedPolicy(
        "AmazonS3ReadOnlyAccess",
        "Provides read only access to all buckets.",
        _doc(_allow(["s3:Get*", "s3:List*"])),
    ),
    AwsManagedPolicy("IAMFullAccess", "Provides full access to IAM.", _doc(_allow(["iam:*"]))),
    AwsManagedPolicy(
        "IAMReadOnlyAccess", "Provides read only access to IAM.", _doc(_allow(["iam:Get*", "iam:List*"]))
    ),
]

AWS_MANAGED: dict[str, AwsManagedPolicy] = {p.arn: p for p in _POLICIES}
