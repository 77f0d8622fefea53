"""The Storage Controller's own records (its database, Alembic tree `sc`): the volumes it holds, written
before the block-store driver is asked, so that a restarted SC finishes what it was doing."""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mallee.db.base import Base, UTCDateTime


class StoredVolume(Base):
    """`state`: creating (recorded, the driver not yet done), available, deleting (the driver may
    not be done; the row goes once it is). `size_gib` is the size asked for: a resize records the
    new size first."""

    __tablename__ = "sc_volumes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # vol-…
    size_gib: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
