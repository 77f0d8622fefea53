"""What an instance carries for its software: the IAM instance profile associated with it (one at a
time, as on EC2) and its metadata service options (IMDSv2 required or not, the endpoint on or off,
tags in metadata). An instance without a row of options has EC2's defaults (`MetadataOptions`)."""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mallee.db.base import Base, UTCDateTime


class ProfileAssociation(Base):
    """An instance profile given to an instance (AssociateIamInstanceProfile or RunInstances). The
    profile is named by id and ARN, as EC2 keeps them: deleting the profile later leaves the
    association, which then passes no role."""

    __tablename__ = "iam_instance_profile_associations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # iip-assoc-…
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), index=True, unique=True
    )
    profile_id: Mapped[str] = mapped_column(String(32))  # AIPA…
    profile_arn: Mapped[str] = mapped_column(String(2048))
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)


class MetadataOptions(Base):
    """An instance's metadata service options, when they are not EC2's defaults."""

    __tablename__ = "instance_metadata_options"

    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    http_tokens: Mapped[str] = mapped_column(String(16), default="optional")  # optional | required
    http_put_response_hop_limit: Mapped[int] = mapped_column(Integer, default=1)
    http_endpoint: Mapped[str] = mapped_column(String(16), default="enabled")  # enabled | disabled
    instance_metadata_tags: Mapped[str] = mapped_column(String(16), default="disabled")
