"""The Storage Controller's own records (its database, Alembic tree `sc`): the volumes and snapshots
it holds, written before the block-store driver or the chunk store is asked, so that a restarted SC
finishes what it was doing."""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mallee.db.base import Base, UTCDateTime


class StoredVolume(Base):
    """`state`: creating (recorded, the driver not yet done), available, deleting (the driver may
    not be done; the row goes once it is), error (a restore from a snapshot failed). `size_gib` is
    the size asked for: a resize records the new size first. `snapshot_id`: restored from it."""

    __tablename__ = "sc_volumes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # vol-…
    size_gib: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    snapshot_id: Mapped[str] = mapped_column(String(32), default="")


class StoredSnapshot(Base):
    """`state`: pending (recorded; being taken), completed, error (`reason` says why), deleting (its
    manifest and unshared chunks may not be gone yet; the row goes once they are). `source_snapshot_id`:
    a copy of that snapshot (it shares its chunks; repair finishes it instead of taking it again).
    `source_url`: imported from the disk image there (its volume is vol-ffffffff), of `disk_format`
    (raw or qcow2; "" for a snapshot of a volume); repair imports a pending one again."""

    __tablename__ = "sc_snapshots"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # snap-…
    volume_id: Mapped[str] = mapped_column(String(32))
    size_gib: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(Integer)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    source_snapshot_id: Mapped[str] = mapped_column(String(32))
    source_url: Mapped[str] = mapped_column(Text, default="")
    disk_format: Mapped[str] = mapped_column(String(16), default="")
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)


class SnapshotChunk(Base):
    """Chunk `chunk` (its offset / the chunk size) of a snapshot has these bytes. All-zero chunks
    have no row. Rows are written as the chunks are stored, so they count as references while a
    snapshot is pending: a chunk is deleted only when no row names it."""

    __tablename__ = "sc_snapshot_chunks"

    snapshot_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
