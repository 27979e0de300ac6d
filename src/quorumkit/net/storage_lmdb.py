"""Durable storage of the asyncio runtime: :class:`~quorumkit.protocol.Storage` on LMDB, with
group commit.

How the runtime uses it (DESIGN.md, "The runtime"; protocol.py rule 4, durability ordering):

1. While handling inputs on the event loop, protocols call :meth:`LMDBStorage.put`,
   :meth:`~LMDBStorage.log_append`, :meth:`~LMDBStorage.log_truncate` and
   :meth:`~LMDBStorage.save_snapshot`. These only *record* the operation in an in-memory pending
   batch (values are encoded with :func:`quorumkit.codec.encode` at call time, so an
   unencodable value raises :class:`~quorumkit.errors.ConfigError` right there) and update an
   in-memory view of the log bounds, so that misuse (an append leaving a gap or before the log
   start) raises :class:`~quorumkit.errors.ConfigError` at call time, exactly like
   :class:`~quorumkit.storage.MemoryStorage`.
2. The runtime calls :meth:`~LMDBStorage.take_batch` (on the loop thread) and hands the
   :class:`Batch` to :meth:`~LMDBStorage.commit` on ONE dedicated worker thread (a one-thread
   executor). ``commit`` applies the whole batch in one LMDB write transaction: one fsync for
   any number of inputs. Only when it returns may the effects (sends, replies) of the inputs
   in that batch be released. Batches must be committed in the order they were taken.
3. Writes made with ``sync=False`` simply join the batch and become durable with it (the
   contract allows a write to become durable earlier than required).

Threading rules: ``put``/``log_*``/``save_snapshot``/``take_batch`` are called from one thread
(the event loop); ``commit`` from one worker thread (the only thread that opens write
transactions after construction). ``load``, ``close`` and ``stats`` may be called from any
thread; ``close`` waits for an in-flight commit.

:meth:`LMDBStorage.load` returns what is **durable** (committed); pending, uncommitted
operations are not included. A driver calls it at startup, when nothing is pending.

If a commit fails (disk error, failed fsync, ...) the storage refuses every further call with
:class:`StorageFailed`: the in-memory view is then ahead of the disk and retrying an fsync is
not safe. Restart the node; it recovers from what was durable.

On-disk layout: one LMDB environment (``data.mdb``, ``lock.mdb``) in the directory, plus
``quorumkit.lock`` (an exclusive ``flock`` so that two nodes never share a data dir), and, in
the WAL layout, ``wal/``. Two layouts, recorded in ``meta/format`` (a data dir keeps the layout
it was created with):

* :data:`FORMAT_VERSION` (1, the default): everything in LMDB, as below;
* :data:`FORMAT_WAL` (2, ``wal=True``, what the runtime uses): log entries and hard state in
  the write-ahead log of :mod:`quorumkit.net.wal`, snapshots in LMDB: one record and one
  ``fdatasync`` per commit into a preallocated file instead of an LMDB transaction's two
  flushes of copy-on-write pages (0.08-0.09 ms against 0.19-0.24 ms per commit on a quiet
  disk here, 4 ms against 8 ms when other work saturates it; the module docstring of
  :mod:`quorumkit.net.wal` has the details). A commit is one WAL record holding the batch's
  log operations and hard-state values. A commit that saves a snapshot writes LMDB first (the
  new snapshot, and every hard-state value whose newest copy is in the WAL, with meta
  ``hard_seq`` = the batch's WAL sequence number), then its WAL record, so a snapshot counts
  only once the WAL record that moves the log start past it is durable: ``meta`` keeps two
  snapshot slots, ``snapshot_0`` and ``snapshot_1``, each ``upto (8) | WAL batch seq (8) |
  snapshot``; the newest slot whose WAL batch is durable is the snapshot. Only such a commit
  deletes WAL segments, so no hard-state value is deleted with them. At load, hard-state
  values in WAL records after ``hard_seq`` override LMDB's. A torn WAL tail (the last,
  unacknowledged write of a crash) is repaired at open and logged; other WAL damage raises
  :class:`CorruptStorage` naming the WAL file and the batch record.

Layout 1 in detail. Named sub-databases:

* ``hard``: UTF-8 key -> value (``current_term``, ``voted_for``, ...);
* ``log``: 8-byte big-endian index -> entry;
* ``meta``: ``format`` (the layout version, :data:`FORMAT_VERSION`), ``log_start``,
  ``log_next`` (one past the last committed index, to detect a lost tail) and ``snapshot``.

Every value is a *record*: ``format byte (1) | CRC-32 (4, big-endian) | codec.encode(value)``
where the CRC covers the sub-database name, the record key and the payload, so a flipped bit
and a record moved to another key are both detected. :meth:`LMDBStorage.load` verifies every
record and that the log keys run contiguously from ``log_start`` to ``log_next - 1``; any
damage raises :class:`CorruptStorage` naming the file, the sub-database and the record.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import lmdb  # type: ignore[import-untyped,unused-ignore]  # recent lmdb ships stubs

from quorumkit import codec
from quorumkit.errors import ConfigError, DecodeError, QuorumkitError
from quorumkit.net.wal import (
    DEFAULT_SEGMENT_BYTES,
    MIN_SEGMENT_BYTES,
    OP_APPEND,
    OP_HARD,
    OP_MARK,
    OP_TRUNCATE,
    WalCorrupt,
    WalImage,
    WalOp,
    WriteAheadLog,
)
from quorumkit.protocol import Storage, StoredState

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:
    _Txn: TypeAlias = lmdb.Transaction[bytes]

__all__ = [
    "FORMAT_VERSION",
    "FORMAT_WAL",
    "Batch",
    "CorruptStorage",
    "LMDBStorage",
    "StorageError",
    "StorageFailed",
    "StorageInUse",
]

log = logging.getLogger(__name__)

#: Version of the on-disk layout, stored in ``meta/format``. Bump it on any incompatible change.
FORMAT_VERSION: Final = 1
#: The layout with log entries in a write-ahead log (``wal=True``).
FORMAT_WAL: Final = 2
_FORMATS: Final = frozenset({FORMAT_VERSION, FORMAT_WAL})
WAL_DIR: Final = "wal"
#: Format byte that starts every record.
RECORD_FORMAT: Final = 1

LOCK_FILE: Final = "quorumkit.lock"
_LMDB_FILES: Final = frozenset({"data.mdb", "lock.mdb"})

_HARD: Final = b"hard"
_LOG: Final = b"log"
_META: Final = b"meta"
_DB_NAMES: Final = (_HARD, _LOG, _META)

_M_FORMAT: Final = b"format"
_M_LOG_START: Final = b"log_start"
_M_LOG_NEXT: Final = b"log_next"
_M_SNAPSHOT: Final = b"snapshot"
_META_KEYS: Final = frozenset({_M_FORMAT, _M_LOG_START, _M_LOG_NEXT, _M_SNAPSHOT})
_M_SLOTS: Final = (b"snapshot_0", b"snapshot_1")
#: WAL layout: hard-state values in WAL records of batches after this sequence number are
#: newer than LMDB's (and present: a data dir that has it once had a WAL)
_M_HARD_SEQ: Final = b"hard_seq"
_META_KEYS_WAL: Final = frozenset({_M_FORMAT, *_M_SLOTS, _M_HARD_SEQ})
_SLOT_HEAD: Final = struct.Struct(">QQ")  # upto, WAL batch seq

_HEADER: Final = struct.Struct(">BI")  # format byte, CRC-32
_INDEX: Final = struct.Struct(">Q")
_MAX_INDEX: Final = (1 << 63) - 1
_MAX_KEY_BYTES: Final = 480  # LMDB's default maximum key size is 511 bytes
_MAP_GROW_ATTEMPTS: Final = 8

_REPLICA_HINT: Final = (
    "This node's data cannot be trusted: do not run the node on it. To recover, restore it from "
    "a replica: stop the node, wipe its data dir and restart it empty so that it catches up from "
    "the leader via a snapshot. That is only safe while a majority of the cluster is intact (an "
    "emptied node has forgotten its votes and its log); otherwise restore the data dir from a "
    "backup."
)
_NOT_OURS_HINT: Final = (
    "Check that the data dir path is the right one. If it is, the storage is damaged: "
    + _REPLICA_HINT
)
_VERSION_HINT: Final = (
    "Run the quorumkit version that wrote this data dir. If the data is damaged or obsolete, "
    "restore it from a replica instead: stop the node, wipe its data dir and restart it empty "
    "(only safe while a majority of the cluster is intact)."
)


# --------------------------------------------------------------------------- errors


class StorageError(QuorumkitError):
    """Base class of the errors of :class:`LMDBStorage`."""


class CorruptStorage(StorageError):
    """Stored data failed verification (checksum, format, missing or misplaced records).

    ``path`` is the data dir, ``db`` the sub-database (``"hard"``, ``"log"``, ``"meta"``) or
    None, ``record`` names the record (``"log entry 17"``) or is None, ``detail`` says what is
    wrong. The message also says what to do.
    """

    def __init__(
        self,
        path: Path,
        detail: str,
        *,
        db: str | None = None,
        record: str | None = None,
        hint: str = _REPLICA_HINT,
    ) -> None:
        where = f"corrupt storage in {path}"
        if db is not None:
            where += f", sub-database {db!r}"
        if record is not None:
            where += f", {record}"
        super().__init__(f"{where}: {detail}. {hint}")
        self.path = path
        self.db = db
        self.record = record
        self.detail = detail


class StorageInUse(StorageError):
    """The data dir is locked: another process (or another open storage) is using it."""


class StorageFailed(StorageError):
    """A commit failed or the storage is closed: it refuses further use; restart the node."""


# --------------------------------------------------------------------------- records


def _crc(db: bytes, key: bytes, payload: bytes) -> int:
    seed = zlib.crc32(b"%b\x00%d\x00%b" % (db, len(key), key))
    return zlib.crc32(payload, seed)


def _seal(db: bytes, key: bytes, payload: bytes) -> bytes:
    """Frame ``payload`` stored under ``db``/``key`` as a record."""
    return _HEADER.pack(RECORD_FORMAT, _crc(db, key, payload)) + payload


def _payload(db: bytes, key: bytes, record: bytes) -> bytes:
    """Verify a record and return its payload; ValueError says what is wrong."""
    if len(record) < _HEADER.size:
        raise ValueError(f"record of {len(record)} bytes is shorter than its header")
    fmt, stored = _HEADER.unpack_from(record)
    if fmt != RECORD_FORMAT:
        raise ValueError(f"unknown record format byte {fmt} (expected {RECORD_FORMAT})")
    payload = record[_HEADER.size :]
    computed = _crc(db, key, payload)
    if computed != stored:
        raise ValueError(
            f"checksum mismatch (stored {stored:08x}, computed {computed:08x}): "
            "the record was altered or moved from another key"
        )
    return payload


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True, slots=True)
class _Append:
    index: int
    payloads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class _Truncate:
    index: int


@dataclass(frozen=True, slots=True)
class _Snapshot:
    payload: bytes
    upto: int


_LogOp = _Append | _Truncate | _Snapshot


@dataclass(frozen=True, slots=True)
class Batch:
    """Operations taken by :meth:`LMDBStorage.take_batch`, to be committed in one transaction.

    ``seq`` numbers batches from 1 in the order they were taken (``commit`` enforces that
    order). ``ops`` counts the storage calls recorded; ``needs_sync`` is True when at least one
    of them was made with ``sync=True`` (a runtime may delay a batch of only unsynced writes).
    Hard-state puts are coalesced (the last value of a key wins); log operations keep their
    order.
    """

    seq: int
    ops: int
    needs_sync: bool
    hard: dict[bytes, bytes] = field(repr=False)
    log_ops: tuple[_LogOp, ...] = field(repr=False)
    #: the batch saves a snapshot (a large write)
    snapshot: bool = False

    def __len__(self) -> int:
        return self.ops


def _newer_than_lmdb(image: WalImage, hard_seq: int) -> dict[bytes, tuple[int, bytes]]:
    """WAL layout: the hard-state values (with their batch numbers) in WAL records after
    ``hard_seq``, which override LMDB's; older ones are already in LMDB (see ``_write_wal``)."""
    return {key: (seq, value) for key, (seq, value) in image.hard.items() if seq > hard_seq}


def _check_index(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an int, got {type(value).__name__}")
    if not -_MAX_INDEX <= value <= _MAX_INDEX - 1:
        raise ConfigError(f"{name} {value} is out of range")
    return value


def _lock_dir(path: Path) -> io.FileIO:
    """Take an exclusive, non-blocking ``flock`` on the data dir's lock file.

    ``flock`` locks belong to the open file, so a second :class:`LMDBStorage` on the same dir in
    the same process is refused too (LMDB forbids opening one environment twice in a process).
    """
    lock_path = path / LOCK_FILE
    handle = open(lock_path, "a+b", buffering=0)  # held open for the storage's lifetime
    if sys.platform == "win32":  # pragma: no cover - no flock: the dir is not locked there
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read(64).decode("ascii", "replace").strip()
        handle.close()
        if holder == str(os.getpid()):
            who = " (this process: another LMDBStorage on the same dir is still open)"
        else:
            who = f" (pid {holder})" if holder else ""
        raise StorageInUse(
            f"data dir {path} in use by another process?{who} - {lock_path} is locked by another "
            "quorumkit node or another open storage; stop it or use another data dir"
        ) from None
    except OSError:
        handle.close()
        raise
    handle.seek(0)
    handle.write(f"{os.getpid():<20}\n".encode("ascii"))  # fixed width: no truncate needed
    return handle


# --------------------------------------------------------------------------- the storage


class LMDBStorage(Storage):
    """:class:`~quorumkit.protocol.Storage` on an LMDB environment in directory ``path``
    (created if missing), with group commit. See the module docstring for the protocol.

    ``fsync=True`` (the default) makes each commit durable before it returns (one fsync per
    commit). ``map_size`` is the initial size of LMDB's memory map (address space, not disk
    space); it is doubled automatically when a commit fills it. ``wal=True`` creates a new data
    dir in the WAL layout (:data:`FORMAT_WAL`, log entries in ``wal/`` segment files of
    ``wal_segment_bytes``); an existing data dir keeps its layout whatever ``wal`` says
    (``self.wal`` tells which one is in use).

    .. warning:: ``fsync=False`` is UNSAFE. It opens LMDB with ``sync=False, metasync=False``:
       a commit returns before the data reaches the disk, so an OS crash or power loss can lose
       writes that were acknowledged (votes, log entries), which can break Raft's safety (two
       leaders in a term, lost committed entries). Use it only for tests, benchmarks and
       throwaway clusters. A crash of the *process* alone loses nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = True,
        map_size: int = 1 << 30,
        wal: bool = False,
        wal_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if not isinstance(map_size, int) or isinstance(map_size, bool) or map_size <= 0:
            raise ConfigError(f"map_size must be a positive int, got {map_size!r}")
        if (
            not isinstance(wal_segment_bytes, int)
            or wal_segment_bytes < MIN_SEGMENT_BYTES
            or wal_segment_bytes % 8
        ):
            raise ConfigError(
                f"wal_segment_bytes must be a multiple of 8, at least {MIN_SEGMENT_BYTES}, "
                f"got {wal_segment_bytes!r}"
            )
        self.path = Path(path)
        self.fsync = bool(fsync)
        self._map_size = map_size
        #: True when log entries live in the write-ahead log (layout :data:`FORMAT_WAL`)
        self.wal = bool(wal)
        self._wal_segment_bytes = wal_segment_bytes
        self._wal: WriteAheadLog | None = None
        self._slot_seq = [0, 0]  # WAL batch seq of each snapshot slot (0: empty)
        self._slot_live = -1  # the slot holding the snapshot in effect (-1: none)
        self._lock_handle: io.FileIO | None = None
        self._env_or_none: lmdb.Environment | None = None
        self._dbs: dict[bytes, lmdb._Database] = {}
        self._closed = True
        self._failed: str | None = None
        self._commit_lock = threading.Lock()  # one commit at a time; close waits for it
        self._env_lock = threading.Lock()  # no read txn while the map is resized
        # pending batch (loop thread)
        self._pending_hard: dict[bytes, bytes] = {}
        #: WAL layout: hard-state values whose newest copy is in a WAL record (commit thread)
        self._wal_hard: dict[bytes, bytes] = {}
        self._pending_log: list[_LogOp] = []
        self._pending_ops = 0
        self._pending_sync = False
        self._taken_seq = 0
        self._committed_seq = 0
        # log bounds: the view includes pending ops (loop thread); durable is what is committed
        self._v_start = self._v_next = 1
        self._d_start = self._d_next = 1
        #: Counters for metrics (updated by ``commit``).
        self.stats: dict[str, float] = {
            "commits": 0,
            "batch_ops": 0,
            "bytes_written": 0,
            "fsync_seconds_total": 0.0,
            "commit_seconds_total": 0.0,
            "map_grows": 0,
        }
        try:
            self._open()
        except BaseException:
            self._release()
            raise
        self._closed = False
        if not self.fsync:
            log.warning(
                "LMDBStorage(%s) opened with fsync=False: commits are NOT durable; an OS crash "
                "or power loss can lose acknowledged writes and break safety. Never use this "
                "in production.",
                self.path,
            )

    # -- opening ------------------------------------------------------------------------
    def _open(self) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise ConfigError(f"data dir {path} exists and is not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data dir {path}: {exc}") from None
        self._lock_handle = _lock_dir(path)
        existed = (path / "data.mdb").exists()
        if not existed:
            stray = sorted(set(os.listdir(path)) - _LMDB_FILES - {LOCK_FILE, WAL_DIR})
            if stray:
                shown = ", ".join(stray[:5]) + (", ..." if len(stray) > 5 else "")
                raise CorruptStorage(
                    path,
                    f"the directory is not an LMDB environment (no data.mdb) but holds other "
                    f"files ({shown}); refusing to create storage among them",
                    hint=_NOT_OURS_HINT,
                )
            wal_dir = path / WAL_DIR
            if wal_dir.is_dir() and any(wal_dir.iterdir()):
                # never start over with a log but no hard state: the node forgot its votes
                raise CorruptStorage(
                    path,
                    "data.mdb (hard state, snapshots) is missing but wal/ still holds the log",
                    record="data.mdb",
                )
        try:
            self._env_or_none = lmdb.open(
                str(path),
                map_size=self._map_size,
                subdir=True,
                max_dbs=len(_DB_NAMES),
                sync=self.fsync,
                metasync=self.fsync,
                readahead=False,
                create=True,
                lock=True,
            )
        except (
            lmdb.InvalidError,
            lmdb.VersionMismatchError,
            lmdb.CorruptedError,
            lmdb.PageNotFoundError,
            lmdb.IncompatibleError,
        ) as exc:
            raise CorruptStorage(
                path, f"not a readable LMDB environment ({exc})", hint=_NOT_OURS_HINT
            ) from None
        except lmdb.LockError as exc:
            raise StorageInUse(
                f"data dir {path} in use by another process? LMDB could not lock it: {exc}"
            ) from None
        except lmdb.Error as exc:
            raise StorageError(f"cannot open the LMDB environment in {path}: {exc}") from None
        try:
            self._open_dbs(existed)
        except lmdb.Error as exc:
            raise CorruptStorage(
                path, f"unreadable LMDB environment ({exc})", hint=_NOT_OURS_HINT
            ) from None

    def _open_dbs(self, existed: bool) -> None:
        env = self._env
        with env.begin() as txn:
            names = sorted(bytes(k) for k in txn.cursor().iternext(values=False))
        if not names and existed:
            # Never re-initialize silently: a node that forgot its votes and log breaks safety.
            raise CorruptStorage(
                self.path,
                "data.mdb exists but holds no quorumkit storage (it was emptied, or its creation "
                "was interrupted; if this node never ran, delete the data dir and start again)",
                hint=_NOT_OURS_HINT,
            )
        if not names:  # a new environment: create the layout (before any worker thread runs)
            with env.begin(write=True) as txn:
                for name in _DB_NAMES:
                    self._dbs[name] = env.open_db(name, txn=txn, create=True)
                meta = self._dbs[_META]
                initial: tuple[tuple[bytes, int], ...] = (
                    ((_M_FORMAT, FORMAT_WAL),)
                    if self.wal
                    else ((_M_FORMAT, FORMAT_VERSION), (_M_LOG_START, 1), (_M_LOG_NEXT, 1))
                )
                for key, value in initial:
                    txn.put(key, _seal(_META, key, codec.encode(value)), db=meta)
            if self.wal:
                self._open_wal()
            return
        if names != sorted(_DB_NAMES):
            shown = ", ".join(repr(n) for n in names[:5])
            raise CorruptStorage(
                self.path,
                f"an LMDB environment but not quorumkit storage (top-level keys: {shown})",
                hint=_NOT_OURS_HINT,
            )
        with env.begin(write=True) as txn:
            for name in _DB_NAMES:
                self._dbs[name] = env.open_db(name, txn=txn, create=False)
        with env.begin() as txn:
            self.wal = self._read_format(txn) == FORMAT_WAL
        if self.wal:
            self._open_wal()
            return
        with env.begin() as txn:
            start, nxt = self._read_bounds(txn)
            cur = txn.cursor(db=self._dbs[_LOG])
            if cur.last():
                last = self._log_index(cur.key())
                if last != nxt - 1:
                    self._corrupt_end(last + 1, nxt)
        self._v_start = self._d_start = start
        self._v_next = self._d_next = nxt

    @property
    def _env(self) -> lmdb.Environment:
        env = self._env_or_none
        if env is None:
            raise StorageFailed(f"storage {self.path} is closed")
        return env

    # -- reading --------------------------------------------------------------------------
    def _decode(self, db: bytes, key: bytes, record: bytes, what: str) -> Any:
        try:
            return codec.decode(_payload(db, key, record))
        except (ValueError, DecodeError) as exc:
            raise CorruptStorage(self.path, str(exc), db=db.decode(), record=what) from None

    def _meta(self, txn: _Txn, key: bytes) -> Any:
        record = txn.get(key, db=self._dbs[_META])
        if record is None:
            return None
        return self._decode(_META, key, record, f"meta record {key.decode()!r}")

    def _read_format(self, txn: _Txn) -> int:
        """Check the format version and that meta holds only the records of that layout."""
        version = self._meta(txn, _M_FORMAT)
        if version is None:
            raise CorruptStorage(
                self.path, "missing (no format version)", db="meta", record="meta record 'format'"
            )
        if version not in _FORMATS:
            raise CorruptStorage(
                self.path,
                f"the data dir holds storage format version {version!r}; this quorumkit reads "
                f"versions {FORMAT_VERSION} and {FORMAT_WAL}",
                db="meta",
                record="meta record 'format'",
                hint=_VERSION_HINT,
            )
        known = _META_KEYS_WAL if version == FORMAT_WAL else _META_KEYS
        for key in txn.cursor(db=self._dbs[_META]).iternext(values=False):
            if bytes(key) not in known:
                raise CorruptStorage(
                    self.path, "unknown meta record", db="meta", record=f"key {bytes(key)!r}"
                )
        return int(version)

    def _read_bounds(self, txn: _Txn) -> tuple[int, int]:
        """Check the format version and read ``log_start`` and ``log_next`` from meta."""
        self._read_format(txn)
        bounds = []
        for key in (_M_LOG_START, _M_LOG_NEXT):
            value = self._meta(txn, key)
            if type(value) is not int or not 1 <= value <= _MAX_INDEX:
                raise CorruptStorage(
                    self.path,
                    "missing" if value is None else f"invalid value {value!r:.40}",
                    db="meta",
                    record=f"meta record {key.decode()!r}",
                )
            bounds.append(value)
        start, nxt = bounds
        if nxt < start:
            raise CorruptStorage(
                self.path,
                f"log_next {nxt} is before log_start {start}",
                db="meta",
                record="meta record 'log_next'",
            )
        return start, nxt

    def _log_index(self, key: bytes) -> int:
        if len(key) != _INDEX.size:
            raise CorruptStorage(
                self.path,
                f"log key {bytes(key)!r:.40} is not an 8-byte index",
                db="log",
                record="log key",
            )
        index: int = _INDEX.unpack(key)[0]
        return index

    def _corrupt_end(self, end: int, nxt: int) -> None:
        if end < nxt:
            detail = (
                f"missing: the log ends at {end - 1} but entries up to {nxt - 1} were committed"
            )
            record = f"log entry {end}"
        else:
            detail = f"present past the committed end of the log ({nxt - 1})"
            record = f"log entry {nxt}"
        raise CorruptStorage(self.path, detail, db="log", record=record)

    def load(self) -> StoredState:
        """Read back, and verify, everything that is durable (committed).

        Pending operations (not yet committed) are *not* included. Raises
        :class:`CorruptStorage` on any damage.
        """
        self._check_open()
        if self.wal:
            return self._load_wal()
        with self._env_lock:
            try:
                with self._env.begin() as txn:
                    return self._load(txn)
            except (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.BadValsizeError) as exc:
                raise CorruptStorage(self.path, f"LMDB reports damage ({exc})") from None
            except lmdb.Error as exc:
                raise StorageError(f"cannot read storage in {self.path}: {exc}") from None

    def _load(self, txn: _Txn) -> StoredState:
        start, nxt = self._read_bounds(txn)
        snap_record = txn.get(_M_SNAPSHOT, db=self._dbs[_META])
        snapshot = None
        if snap_record is not None:
            snapshot = self._decode(_META, _M_SNAPSHOT, snap_record, "snapshot")
        elif start > 1:
            raise CorruptStorage(
                self.path,
                f"missing: the log starts at {start} but no snapshot covers the entries before it",
                db="meta",
                record="snapshot",
            )
        hard = self._load_hard(txn)
        entries: list[Any] = []
        expect = start
        for key, record in txn.cursor(db=self._dbs[_LOG]):
            index = self._log_index(bytes(key))
            if index != expect:
                if index < start:
                    raise CorruptStorage(
                        self.path,
                        f"present before the log start {start} (compacted into the snapshot)",
                        db="log",
                        record=f"log entry {index}",
                    )
                raise CorruptStorage(
                    self.path,
                    f"missing: the log jumps from {expect - 1} to {index} (a gap)",
                    db="log",
                    record=f"log entry {expect}",
                )
            entries.append(self._decode(_LOG, bytes(key), bytes(record), f"log entry {index}"))
            expect += 1
        if expect != nxt:
            self._corrupt_end(expect, nxt)
        return StoredState(hard=hard, log_start=start, log=entries, snapshot=snapshot)

    def _load_hard(self, txn: _Txn) -> dict[str, Any]:
        hard: dict[str, Any] = {}
        for key, record in txn.cursor(db=self._dbs[_HARD]):
            key = bytes(key)
            name = self._hard_name(key)
            hard[name] = self._decode(_HARD, key, bytes(record), f"hard state {name!r}")
        return hard

    def _hard_name(self, key: bytes) -> str:
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptStorage(
                self.path, "key is not UTF-8", db="hard", record=f"hard state key {key!r:.60}"
            ) from None

    def _decode_wal_value(self, key: bytes, value: bytes, seq: int) -> Any:
        try:
            return codec.decode(value)
        except DecodeError as exc:
            raise CorruptStorage(
                self.path,
                f"does not decode ({exc})",
                record=f"WAL batch record {seq}, hard state {key!r:.60}",
            ) from None

    def _put_hard_seq(self, txn: _Txn, seq: int) -> None:
        txn.put(_M_HARD_SEQ, _seal(_META, _M_HARD_SEQ, codec.encode(seq)), db=self._dbs[_META])

    def _hard_seq(self, txn: _Txn) -> int | None:
        """WAL layout: meta ``hard_seq`` (None: not written yet)."""
        seq = self._meta(txn, _M_HARD_SEQ)
        if seq is not None and (type(seq) is not int or seq < 0):
            raise CorruptStorage(
                self.path, f"not a batch number: {seq!r:.40}", db="meta", record="hard_seq"
            )
        return seq

    # -- the WAL layout ----------------------------------------------------------------------
    def _wal_corrupt(self, exc: WalCorrupt) -> CorruptStorage:
        record = f"WAL file {exc.file}" + (f", {exc.record}" if exc.record else "")
        return CorruptStorage(self.path, exc.detail, record=record)

    def _open_wal(self) -> None:
        """Open (verify, repair a torn tail of) the WAL and settle the snapshot slots."""
        if not (self.path / WAL_DIR).exists():
            with self._env.begin() as txn:
                used = txn.cursor(db=self._dbs[_HARD]).first() or any(
                    txn.get(key, db=self._dbs[_META]) is not None
                    for key in (*_M_SLOTS, _M_HARD_SEQ)
                )
            if used:  # not a creation interrupted before wal/ existed: the log was removed
                raise CorruptStorage(
                    self.path,
                    "missing: this data dir keeps its log in wal/, and wal/ is gone",
                    record=f"WAL directory {self.path / WAL_DIR}",
                )
        wal = WriteAheadLog(
            self.path / WAL_DIR, fsync=self.fsync, segment_bytes=self._wal_segment_bytes
        )
        self._wal = wal
        try:
            image = wal.open()
        except WalCorrupt as exc:
            raise self._wal_corrupt(exc) from None
        except OSError as exc:
            raise StorageError(f"cannot open the WAL in {self.path / WAL_DIR}: {exc}") from None
        with self._env.begin() as txn:
            if txn.cursor(db=self._dbs[_LOG]).first():
                raise CorruptStorage(
                    self.path,
                    "log entries in LMDB in a data dir whose log is in the WAL",
                    db="log",
                    record="log entry",
                )
            slots = [self._read_slot(txn, i) for i in range(len(_M_SLOTS))]
            hard_seq = self._hard_seq(txn)
        if hard_seq is None or hard_seq > image.last_seq:
            # None: a new data dir (or one from before hard state in the WAL). Past the last
            # record: LMDB committed a snapshot batch whose WAL record did not (never
            # acknowledged); LMDB holds every value up to the last record, and the next
            # record, which takes the lost one's number, must count as newer.
            hard_seq = 0 if hard_seq is None else image.last_seq
            with self._env.begin(write=True) as txn:
                self._put_hard_seq(txn, hard_seq)
        self._wal_hard = {k: v for k, (_, v) in _newer_than_lmdb(image, hard_seq).items()}
        orphans = [i for i, slot in enumerate(slots) if slot and slot[1] > image.last_seq]
        if orphans:
            # LMDB committed, the WAL record of that commit did not: never acknowledged
            with self._env.begin(write=True) as txn:
                for i in orphans:
                    txn.delete(_M_SLOTS[i], db=self._dbs[_META])
            for i in orphans:
                log.warning(
                    "%s: discarding the snapshot in meta record %r: the WAL record of its "
                    "commit (batch %d) was not durable when the node stopped (never "
                    "acknowledged)",
                    self.path,
                    _M_SLOTS[i].decode(),
                    slots[i][1],  # type: ignore[index]
                )
                slots[i] = None
        self._slot_seq = [slot[1] if slot else 0 for slot in slots]
        self._slot_live = self._live_slot(slots, image.start)
        self._v_start = self._d_start = image.start
        self._v_next = self._d_next = image.next

    def _read_slot(self, txn: _Txn, i: int) -> tuple[int, int, bytes] | None:
        """Snapshot slot ``i``: (upto, WAL batch seq, encoded snapshot) or None."""
        key = _M_SLOTS[i]
        record = txn.get(key, db=self._dbs[_META])
        if record is None:
            return None
        try:
            payload = _payload(_META, key, bytes(record))
            if len(payload) < _SLOT_HEAD.size:
                raise ValueError("shorter than its header")
        except ValueError as exc:
            raise CorruptStorage(
                self.path, str(exc), db="meta", record=f"meta record {key.decode()!r}"
            ) from None
        upto, seq = _SLOT_HEAD.unpack_from(payload)
        return upto, seq, payload[_SLOT_HEAD.size :]

    def _live_slot(self, slots: Sequence[tuple[int, int, bytes] | None], start: int) -> int:
        """The slot whose snapshot is in effect: the newest; it must end right before the
        log start (a log that starts after 1 needs one)."""
        live = -1
        for i, slot in enumerate(slots):
            if slot is not None and (live < 0 or slot[1] > slots[live][1]):  # type: ignore[index]
                live = i
        if live < 0:
            if start > 1:
                raise CorruptStorage(
                    self.path,
                    f"missing: the log starts at {start} but no snapshot covers the entries "
                    "before it",
                    db="meta",
                    record="snapshot",
                )
            return -1
        upto = slots[live][0]  # type: ignore[index]
        if upto + 1 != start:
            raise CorruptStorage(
                self.path,
                f"the snapshot ends at {upto} but the log starts at {start}",
                db="meta",
                record=f"meta record {_M_SLOTS[live].decode()!r}",
            )
        return live

    def _load_wal(self) -> StoredState:
        wal = self._wal
        assert wal is not None
        with self._commit_lock:
            try:
                image = wal.scan()
            except WalCorrupt as exc:
                raise self._wal_corrupt(exc) from None
            with self._env_lock:
                try:
                    with self._env.begin() as txn:
                        self._read_format(txn)
                        hard = self._load_hard(txn)
                        hard_seq = self._hard_seq(txn) or 0
                        slots = [self._read_slot(txn, i) for i in range(len(_M_SLOTS))]
                except (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.BadValsizeError) as exc:
                    raise CorruptStorage(self.path, f"LMDB reports damage ({exc})") from None
                except lmdb.Error as exc:
                    raise StorageError(f"cannot read storage in {self.path}: {exc}") from None
        for key, (seq, value) in _newer_than_lmdb(image, hard_seq).items():
            hard[self._hard_name(key)] = self._decode_wal_value(key, value, seq)
        durable = [s if s is not None and s[1] <= image.last_seq else None for s in slots]
        live = self._live_slot(durable, image.start)
        snapshot = None
        if live >= 0:
            body = durable[live][2]  # type: ignore[index]
            try:
                snapshot = codec.decode(body)
            except DecodeError as exc:
                raise CorruptStorage(
                    self.path,
                    str(exc),
                    db="meta",
                    record=f"meta record {_M_SLOTS[live].decode()!r}",
                ) from None
        entries = []
        for offset, payload in enumerate(image.entries):
            try:
                entries.append(codec.decode(payload))
            except DecodeError as exc:
                raise CorruptStorage(
                    self.path,
                    f"does not decode ({exc})",
                    record=f"WAL, log entry {image.start + offset}",
                ) from None
        return StoredState(hard=hard, log_start=image.start, log=entries, snapshot=snapshot)

    # -- Storage: record operations in the pending batch -------------------------------------
    def _record(self, sync: bool) -> None:
        self._pending_ops += 1
        if sync:
            self._pending_sync = True

    def put(self, key: str, value: Any, *, sync: bool = True) -> None:
        """Set hard-state value ``key`` (a non-empty string of at most 480 UTF-8 bytes)."""
        self._check_usable()
        if not isinstance(key, str):
            raise ConfigError(f"hard-state key must be a str, got {type(key).__name__}")
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"hard-state key {key!r:.60} is not valid UTF-8") from None
        if not 1 <= len(raw) <= _MAX_KEY_BYTES:
            raise ConfigError(f"hard-state key must be 1..{_MAX_KEY_BYTES} UTF-8 bytes")
        self._pending_hard[raw] = codec.encode(value)
        self._record(sync)

    def log_append(self, index: int, entries: Sequence[Any], *, sync: bool = True) -> None:
        self._check_usable()
        index = _check_index("log index", index)
        if index < self._v_start:
            raise ConfigError(f"log_append at index {index} before the log start {self._v_start}")
        if index > self._v_next:
            raise ConfigError(
                f"log_append at index {index} leaves a gap after the last index {self._v_next - 1}"
            )
        payloads = tuple(codec.encode(entry) for entry in entries)
        if index + len(payloads) > _MAX_INDEX:
            raise ConfigError("log_append past the largest log index")
        self._pending_log.append(_Append(index, payloads))
        self._v_next = index + len(payloads)
        self._record(sync)

    def log_truncate(self, index: int, *, sync: bool = True) -> None:
        self._check_usable()
        index = _check_index("log index", index)
        cut = max(index, self._v_start)
        if cut < self._v_next:
            self._pending_log.append(_Truncate(cut))
            self._v_next = cut
        self._record(sync)

    def save_snapshot(self, snapshot: Any, upto_index: int, *, sync: bool = True) -> None:
        """Store ``snapshot`` covering entries up to ``upto_index`` and drop those entries.

        A snapshot older than the current log start is ignored (the newer one is kept).
        """
        self._check_usable()
        upto = _check_index("snapshot index", upto_index)
        if upto + 1 >= self._v_start:
            self._pending_log.append(_Snapshot(codec.encode(snapshot), upto))
            if upto + 1 > self._v_start:
                self._v_start = upto + 1
                self._v_next = max(self._v_next, self._v_start)
        self._record(sync)

    # -- the view and the pending batch ----------------------------------------------------------
    @property
    def log_start(self) -> int:
        """First index of the log, pending operations included."""
        return self._v_start

    @property
    def last_index(self) -> int:
        """Last index of the log (``log_start - 1`` when empty), pending operations included."""
        return self._v_next - 1

    @property
    def pending_ops(self) -> int:
        """Storage calls recorded since the last :meth:`take_batch`."""
        return self._pending_ops

    @property
    def pending_needs_sync(self) -> bool:
        """True when a pending call was made with ``sync=True``."""
        return self._pending_sync

    @property
    def pending_snapshot(self) -> bool:
        """The pending operations save a snapshot (a large write)."""
        return any(type(op) is _Snapshot for op in self._pending_log)

    def take_batch(self) -> Batch:
        """Return the pending operations as a :class:`Batch` and start a new, empty one."""
        self._check_usable()
        self._taken_seq += 1
        batch = Batch(
            seq=self._taken_seq,
            ops=self._pending_ops,
            needs_sync=self._pending_sync,
            hard=self._pending_hard,
            log_ops=tuple(self._pending_log),
            snapshot=self.pending_snapshot,
        )
        self._pending_hard = {}
        self._pending_log = []
        self._pending_ops = 0
        self._pending_sync = False
        return batch

    def flush(self) -> None:
        """Commit every pending operation now: ``commit(take_batch())``."""
        self.commit(self.take_batch())

    # -- committing (the worker thread) ----------------------------------------------------------
    def commit(self, batch: Batch) -> None:
        """Apply ``batch`` in one LMDB write transaction (one fsync when ``fsync=True``).

        Call it from one dedicated thread, in the order batches were taken. When it returns,
        the batch is durable. If it raises, the storage is unusable (:class:`StorageFailed`).
        """
        with self._commit_lock:
            self._check_usable()
            if batch.seq != self._committed_seq + 1:
                raise ConfigError(
                    f"batches must be committed in the order they were taken: got batch "
                    f"{batch.seq}, expected {self._committed_seq + 1}"
                )
            if not batch.hard and not batch.log_ops:
                self._committed_seq = batch.seq
                return
            began = time.perf_counter()
            try:
                start, nxt, written, fsync_s = self._write(batch)
            except BaseException as exc:
                self._failed = f"commit of batch {batch.seq} failed: {exc}"
                if isinstance(exc, QuorumkitError):
                    raise
                if isinstance(exc, lmdb.Error):
                    raise StorageFailed(
                        f"{self.path}: {self._failed}; restart the node (it recovers from what "
                        "was durable)"
                    ) from exc
                raise
            self._committed_seq = batch.seq
            self._d_start, self._d_next = start, nxt
            stats = self.stats
            stats["commits"] += 1
            stats["batch_ops"] += batch.ops
            stats["bytes_written"] += written
            stats["fsync_seconds_total"] += fsync_s
            stats["commit_seconds_total"] += time.perf_counter() - began

    def _write(self, batch: Batch) -> tuple[int, int, int, float]:
        for _ in range(_MAP_GROW_ATTEMPTS):
            try:
                return self._write_once(batch)
            except lmdb.MapFullError:
                self._grow_map()
        raise StorageFailed(f"{self.path}: the LMDB map is full at {self._map_size} bytes")

    def _grow_map(self) -> None:
        with self._env_lock:
            self._map_size *= 2
            self._env.set_mapsize(self._map_size)
        self.stats["map_grows"] += 1
        log.info("LMDBStorage(%s): map size grown to %d bytes", self.path, self._map_size)

    def _write_once(self, batch: Batch) -> tuple[int, int, int, float]:
        if self.wal:
            return self._write_wal(batch)
        start, nxt = self._d_start, self._d_next
        hard_db, log_db, meta_db = self._dbs[_HARD], self._dbs[_LOG], self._dbs[_META]
        written = 0
        txn = self._env.begin(write=True)
        try:
            for key, payload in batch.hard.items():
                record = _seal(_HARD, key, payload)
                txn.put(key, record, db=hard_db)
                written += len(key) + len(record)
            for op in batch.log_ops:
                if isinstance(op, _Append):
                    if not start <= op.index <= nxt:  # validated at call time: a bug if seen
                        raise StorageFailed(
                            f"internal: append at {op.index} outside [{start}, {nxt}]"
                        )
                    if op.index < nxt:
                        self._delete_from(txn, op.index)
                    index = op.index
                    for payload in op.payloads:
                        key = _INDEX.pack(index)
                        record = _seal(_LOG, key, payload)
                        if not txn.put(key, record, append=True, db=log_db):
                            raise CorruptStorage(
                                self.path,
                                "a record with a higher index is present",
                                db="log",
                                record=f"log entry {index}",
                            )
                        written += len(key) + len(record)
                        index += 1
                    nxt = index
                elif isinstance(op, _Truncate):
                    cut = max(op.index, start)
                    if cut < nxt:
                        self._delete_from(txn, cut)
                        nxt = cut
                else:
                    new_start = op.upto + 1
                    if new_start < start:
                        continue
                    record = _seal(_META, _M_SNAPSHOT, op.payload)
                    txn.put(_M_SNAPSHOT, record, db=meta_db)
                    written += len(_M_SNAPSHOT) + len(record)
                    if new_start > start:
                        self._delete_below(txn, new_start)
                        start = new_start
                        nxt = max(nxt, start)
            for key, value, old in (
                (_M_LOG_START, start, self._d_start),
                (_M_LOG_NEXT, nxt, self._d_next),
            ):
                if value != old:
                    record = _seal(_META, key, codec.encode(value))
                    txn.put(key, record, db=meta_db)
                    written += len(key) + len(record)
            began = time.perf_counter()
            txn.commit()
            fsync_s = time.perf_counter() - began
        except BaseException:
            txn.abort()
            raise
        return start, nxt, written, fsync_s

    def _write_wal(self, batch: Batch) -> tuple[int, int, int, float]:
        """The WAL layout: one WAL record, and before it an LMDB transaction when the batch
        saves a snapshot.

        Hard-state values go into the batch's WAL record (one fsync for the whole batch;
        Multi-Paxos's decided prefix and Raft's votes no longer cost an LMDB commit as well).
        A batch that saves a snapshot writes LMDB anyway, and it is the only kind that deletes
        WAL segments: its transaction takes every hard-state value whose newest copy is in
        the WAL, with ``hard_seq`` = its own WAL sequence number. At load, values in WAL
        records after ``hard_seq`` override LMDB's; older ones are already in LMDB."""
        wal = self._wal
        assert wal is not None
        start, nxt = self._d_start, self._d_next
        ops: list[WalOp] = []
        snap: tuple[int, bytes] | None = None
        for op in batch.log_ops:
            if isinstance(op, _Append):
                if not start <= op.index <= nxt:  # validated at call time: a bug if seen
                    raise StorageFailed(f"internal: append at {op.index} outside [{start}, {nxt}]")
                ops.append((OP_APPEND, op.index, op.payloads))
                nxt = op.index + len(op.payloads)
            elif isinstance(op, _Truncate):
                cut = max(op.index, start)
                if cut < nxt:
                    ops.append((OP_TRUNCATE, cut, ()))
                    nxt = cut
            else:
                new_start = op.upto + 1
                if new_start < start:
                    continue
                ops.append((OP_MARK, op.upto, ()))
                snap = (op.upto, op.payload)
                if new_start > start:
                    start = new_start
                    nxt = max(nxt, start)
        written = 0
        fsync_s = 0.0
        slot = -1
        if snap is None:
            ops.extend((OP_HARD, 0, (key, payload)) for key, payload in batch.hard.items())
        else:
            seq = wal.next_seq
            txn = self._env.begin(write=True)
            try:
                for key, payload in {**self._wal_hard, **batch.hard}.items():
                    record = _seal(_HARD, key, payload)
                    txn.put(key, record, db=self._dbs[_HARD])
                    written += len(key) + len(record)
                self._put_hard_seq(txn, seq)
                slot = 1 - self._slot_live if self._slot_live >= 0 else 0
                key = _M_SLOTS[slot]
                record = _seal(_META, key, _SLOT_HEAD.pack(snap[0], seq) + snap[1])
                txn.put(key, record, db=self._dbs[_META])
                written += len(key) + len(record)
                began = time.perf_counter()
                txn.commit()
                fsync_s += time.perf_counter() - began
            except BaseException:
                txn.abort()
                raise
            self._wal_hard.clear()
        if ops:
            began = time.perf_counter()
            written += wal.append(ops)
            fsync_s += time.perf_counter() - began
            if snap is None:
                self._wal_hard.update(batch.hard)
        if slot >= 0:
            self._slot_seq[slot] = wal.next_seq - 1
            self._slot_live = slot
        if start > self._d_start:
            wal.drop_below(start)
        return start, nxt, written, fsync_s

    def _delete_from(self, txn: _Txn, first: int) -> None:
        """Delete every log key >= ``first``."""
        cursor = txn.cursor(db=self._dbs[_LOG])
        if cursor.set_range(_INDEX.pack(first)):
            while cursor.delete():
                pass

    def _delete_below(self, txn: _Txn, limit: int) -> None:
        """Delete every log key < ``limit``."""
        cursor = txn.cursor(db=self._dbs[_LOG])
        end = _INDEX.pack(limit)
        if cursor.first():
            while cursor.key() < end and cursor.delete():
                pass

    # -- lifecycle -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StorageFailed(f"storage {self.path} is closed")

    def _check_usable(self) -> None:
        self._check_open()
        if self._failed is not None:
            raise StorageFailed(
                f"storage {self.path} is unusable: {self._failed}; restart the node"
            )

    def close(self) -> None:
        """Close the environment and release the data dir lock (idempotent).

        Pending (uncommitted) operations are discarded, as in a crash: call :meth:`flush` (or
        commit the last batch) first to keep them. Waits for an in-flight commit.
        """
        with self._commit_lock:
            if self._closed:
                return
            self._closed = True
            if self._pending_ops:
                log.debug(
                    "LMDBStorage(%s) closed with %d uncommitted operations discarded",
                    self.path,
                    self._pending_ops,
                )
            self._release()

    def _release(self) -> None:
        wal, self._wal = self._wal, None
        if wal is not None:
            wal.close()
        env, self._env_or_none = self._env_or_none, None
        self._dbs = {}
        if env is not None:
            env.close()
        handle, self._lock_handle = self._lock_handle, None
        if handle is not None:
            handle.close()

    def __enter__(self) -> LMDBStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # dropped without close (e.g. a simulated crash): release the env and the dir lock
        try:
            self._release()
        except Exception:  # noqa: S110 - best effort at garbage collection
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else "failed" if self._failed else "open"
        return f"LMDBStorage({str(self.path)!r}, fsync={self.fsync}, {state})"
