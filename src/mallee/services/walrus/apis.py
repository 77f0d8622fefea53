"""Walrus's dispatch table; handler modules register into it when imported (see `handlers`)."""

from __future__ import annotations

from mallee.protocol.dispatch import Registry

S3 = Registry("s3")
