"""The CLC's dispatch tables. Handler modules register into these when imported (see `handlers`)."""

from __future__ import annotations

from mallee.protocol.dispatch import Registry

EC2 = Registry("ec2")
IAM = Registry("iam")
STS = Registry("sts")
