"""The Storage Controller's contract (one SC per availability zone), called by the CLC.

As with instances, the CLC records what it wants first (a volume, its size, an attachment) and then
asks; every call names the volume by the id the CLC chose and is idempotent, so the CLC's
reconciler may send it again after any crash. The SC reports what it holds (`describe`), and the
reconciler moves one toward the other.
"""

from __future__ import annotations

from mallee.rpc.contract import Api, Empty, Message, Ok, Operation

# 2: snapshots (create, copy, delete, reported with their progress) and volumes made from them.
# 3: import_snapshot
API = Api("storage", version=3, oldest=3)


class VolumeSpec(Message):
    """Create the volume unless it exists: all zeros, or with the bytes of `snapshot_id` (then the
    SC restores it in the background and reports the volume once it is whole)."""

    volume_id: str
    size_gib: int
    snapshot_id: str = ""


class VolumeRef(Message):
    volume_id: str


class ResizeVolume(Message):
    """Grow the volume to `size_gib` (never shrinks; keeps its bytes, also while exported)."""

    volume_id: str
    size_gib: int


class ExportVolume(Message):
    """Make the volume reachable by `node` (its rpc address, host:port) and no other node."""

    volume_id: str
    node: str


class NbdEndpoint(Message):
    socket: str = ""  # a unix socket on the node's host (the SC and the node share a host)
    host: str = ""  # else host and port over TCP
    port: int = 0


class VolumeExport(Message):
    """How the node opens the volume: libvirt's network disk source (drivers/blockstore/base.py)."""

    volume_id: str
    protocol: str  # "nbd"
    name: str  # the export name
    endpoints: list[NbdEndpoint]
    auth: dict[str, str] = {}


class StoredVolume(Message):
    size_gib: int
    node: str = ""  # the node it is exported to ("" when it is not)


class SnapshotSpec(Message):
    """Take a point-in-time snapshot of the volume (it stays usable meanwhile) and store it in
    Walrus as content-addressed chunks; the SC reports it pending with its progress, then completed
    (or error). Idempotent on the snapshot id."""

    snapshot_id: str
    volume_id: str


class CopySnapshot(Message):
    """A new snapshot with the bytes of a completed one (it shares its chunks)."""

    snapshot_id: str
    source_snapshot_id: str


IMPORTED_VOLUME = "vol-ffffffff"  # the volume id of an imported snapshot, as AWS shows it


class ImportSnapshot(Message):
    """Make a completed snapshot of the disk image at `url` (an http(s) URL the SC can GET, e.g. a
    presigned Walrus URL), `disk_format` "raw" or "qcow2"; idempotent on the snapshot id. Reported
    like any snapshot (pending with progress, then completed or error); its volume id is
    IMPORTED_VOLUME."""

    snapshot_id: str
    url: str
    disk_format: str = "raw"


class SnapshotRef(Message):
    snapshot_id: str


class StoredSnapshot(Message):
    state: str  # pending | completed | error
    progress: int  # percent
    size_gib: int
    stored_bytes: int = 0  # bytes of chunks this snapshot added to Walrus (others were there)
    reason: str = ""


class StorageReport(Message):
    volumes: dict[str, StoredVolume]
    snapshots: dict[str, StoredSnapshot] = {}
    failed: dict[str, str] = {}  # volumes the SC could not make (a restore that failed): id -> why


CREATE_VOLUME = Operation(API, "create_volume", VolumeSpec, Ok)
DELETE_VOLUME = Operation(API, "delete_volume", VolumeRef, Ok)
RESIZE_VOLUME = Operation(API, "resize_volume", ResizeVolume, Ok)
EXPORT_VOLUME = Operation(API, "export_volume", ExportVolume, VolumeExport)
UNEXPORT_VOLUME = Operation(API, "unexport_volume", VolumeRef, Ok)
DESCRIBE = Operation(API, "describe_storage", Empty, StorageReport)
CREATE_SNAPSHOT = Operation(API, "create_snapshot", SnapshotSpec, Ok)
COPY_SNAPSHOT = Operation(API, "copy_snapshot", CopySnapshot, Ok)
DELETE_SNAPSHOT = Operation(API, "delete_snapshot", SnapshotRef, Ok)
IMPORT_SNAPSHOT = Operation(API, "import_snapshot", ImportSnapshot, Ok)
