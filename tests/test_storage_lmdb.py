"""LMDBStorage: the runtime's durable storage (group commit, checksums, crash behaviour).

It must mean exactly what MemoryStorage means (the simulator's model), for what was committed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quorumkit import codec
from quorumkit.errors import ConfigError, QuorumkitError
from quorumkit.net.storage_lmdb import (
    CorruptStorage,
    LMDBStorage,
    StorageFailed,
    StorageInUse,
    _payload,
    _seal,
)
from quorumkit.protocol import Storage, StoredState
from quorumkit.protocols.raft.messages import LogEntry, Membership, Snapshot
from quorumkit.storage import MemoryStorage


def idx(i: int) -> bytes:
    return i.to_bytes(8, "big")


def E(term: int, command: Any = None) -> LogEntry:
    return LogEntry(term, command)


@contextmanager
def raw_lmdb(path: Path) -> Iterator[tuple[Any, dict[bytes, Any]]]:
    """Open the environment with lmdb directly (the storage must be closed) to tamper with it."""
    env = lmdb.open(str(path), max_dbs=3, subdir=True)
    try:
        with env.begin(write=True) as txn:
            dbs = {n: env.open_db(n, txn=txn, create=False) for n in (b"hard", b"log", b"meta")}
            yield txn, dbs
    finally:
        env.close()


def last_txnid(path: Path) -> int:
    env = lmdb.open(str(path), max_dbs=3, subdir=True, readonly=True)
    try:
        return int(env.info()["last_txnid"])
    finally:
        env.close()


def populated(path: Path) -> None:
    """A committed store: hard state, a snapshot up to 2, log entries 3..6."""
    with LMDBStorage(path) as st:
        st.put("current_term", 2)
        st.put("voted_for", "n2")
        st.log_append(1, [E(1, "a"), E(1, "b"), E(2, "c"), E(2, "d"), E(2, "e"), E(2, "f")])
        st.save_snapshot(("snap", 2), 2)
        st.flush()


# ----------------------------------------------------------------------------- basics


def test_a_new_data_dir_is_created_and_loads_empty(tmp_path: Path) -> None:
    path = tmp_path / "a" / "node1"
    with LMDBStorage(path) as st:
        assert isinstance(st, Storage)
        assert st.load() == StoredState()
        assert (st.log_start, st.last_index) == (1, 0)
    assert (path / "data.mdb").exists()
    with LMDBStorage(path) as st:
        assert st.load() == StoredState()


def test_committed_writes_survive_close_and_reopen(tmp_path: Path) -> None:
    snap = Snapshot(3, 2, Membership(("n1", "n2", "n3")), b"\x00state")
    with LMDBStorage(tmp_path) as st:
        st.put("current_term", 5)
        st.put("voted_for", None)
        st.put("config", {"a": (1, 2), "b": b"x"})
        st.log_append(1, [E(1, "a"), E(1, "b"), E(2, "c"), E(2, "d")])
        st.save_snapshot(snap, 3)
        st.log_append(5, [E(5, {"op": "put"})])
        st.flush()
    with LMDBStorage(tmp_path) as st:
        assert st.load() == StoredState(
            hard={"current_term": 5, "voted_for": None, "config": {"a": (1, 2), "b": b"x"}},
            log_start=4,
            log=[E(2, "d"), E(5, {"op": "put"})],
            snapshot=snap,
        )
        assert (st.log_start, st.last_index) == (4, 5)
        st.log_append(6, [E(6)])  # the view was rebuilt from disk: appending goes on
        with pytest.raises(ConfigError, match="gap"):
            st.log_append(8, [E(6)])


def test_load_returns_only_what_is_durable(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path) as st:
        st.put("term", 1)
        st.log_append(1, [E(1)])
        assert st.load() == StoredState()  # recorded, not committed
        assert st.pending_ops == 2
        st.flush()
        assert st.load() == StoredState(hard={"term": 1}, log=[E(1)])
        assert st.pending_ops == 0


def test_validation_errors_are_raised_at_call_time_like_memory_storage(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path) as st:
        with pytest.raises(ConfigError, match="gap"):
            st.log_append(2, [E(1)])
        st.log_append(1, [E(1), E(1), E(1)])
        with pytest.raises(ConfigError, match="gap"):
            st.log_append(5, [E(1)])
        st.save_snapshot("S", 2)  # not committed yet: the view moved the log start anyway
        with pytest.raises(ConfigError, match="before the log start"):
            st.log_append(2, [E(1)])
        with pytest.raises(ConfigError, match="not wire-encodable"):
            st.put("k", object())
        with pytest.raises(ConfigError, match="not wire-encodable"):
            st.log_append(4, [E(1), object()])
        with pytest.raises(ConfigError):
            st.put("", 1)
        with pytest.raises(ConfigError):
            st.log_truncate("3")  # type: ignore[arg-type]
        assert st.pending_ops == 2  # refused calls record nothing
        st.flush()
        assert st.load() == StoredState(log_start=3, log=[E(1)], snapshot="S")


def test_log_truncate_discards_from_index_on(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path) as st:
        st.log_append(1, [E(1, c) for c in "abcd"])
        st.log_truncate(4)  # in the same batch as the append
        st.flush()
        assert st.load().log == [E(1, "a"), E(1, "b"), E(1, "c")]
        st.log_truncate(3)  # just the last entry
        st.flush()
        assert st.load().log == [E(1, "a"), E(1, "b")]
        st.log_truncate(7)  # past the end: nothing
        st.flush()
        assert st.load().log == [E(1, "a"), E(1, "b")]
        st.log_truncate(-3)  # before the start: everything, the start stays
        st.flush()
        assert st.load() == StoredState(log_start=1, log=[])


def test_an_older_snapshot_is_ignored(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path) as st:
        st.log_append(1, [E(1, c) for c in "abcd"])
        st.save_snapshot("S3", 3)
        st.flush()
        st.save_snapshot("S1", 1)
        st.flush()
        assert st.load() == StoredState(log_start=4, log=[E(1, "d")], snapshot="S3")


def test_a_snapshot_past_the_end_of_the_log_empties_it(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path) as st:
        st.log_append(1, [E(1), E(1)])
        st.flush()
        st.save_snapshot("S", 10)
        st.flush()
        assert st.load() == StoredState(log_start=11, log=[], snapshot="S")
    with LMDBStorage(tmp_path) as st:
        st.log_append(11, [E(3, "k")])
        st.flush()
        assert st.load().log == [E(3, "k")]


# ----------------------------------------------------------------------------- same semantics


keys = st.sampled_from(["current_term", "voted_for", "commit_index", "k"])
values = st.one_of(
    st.none(),
    st.integers(-5, 2**40),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.tuples(st.integers(0, 3), st.text(max_size=2)),
)
entry_lists = st.lists(
    st.builds(
        LogEntry, st.integers(0, 5), st.one_of(st.none(), st.integers(0, 9), st.text(max_size=3))
    ),
    max_size=4,
)
syncs = st.booleans()
KINDS = [
    "put",
    "append",
    "append",
    "append",
    "truncate",
    "truncate",
    "snapshot",
    "flush",
    "flush",
    "reopen",
]


def draw_op(data: st.DataObject, state: StoredState) -> tuple[Any, ...]:
    """One operation, with indexes drawn around the current log (mostly valid, sometimes not:
    a gap, before the start, a snapshot older than the start or past the end)."""
    start, nxt = state.log_start, state.log_start + len(state.log)

    def around(lo: int, hi: int) -> st.SearchStrategy[int]:
        return st.sampled_from(range(lo, hi + 1))  # uniform over the window

    kind = data.draw(st.sampled_from(KINDS), label="kind")
    if kind == "put":
        return (kind, data.draw(keys), data.draw(values), data.draw(syncs))
    if kind == "append":
        index = data.draw(around(start - 1, nxt + 1), label="index")
        return (kind, index, data.draw(entry_lists), data.draw(syncs))
    if kind == "truncate":
        return (kind, data.draw(around(start - 2, nxt + 1), label="index"), data.draw(syncs))
    if kind == "snapshot":
        upto = data.draw(around(start - 3, nxt + 2), label="upto")
        return (kind, data.draw(values), upto, data.draw(syncs))
    if kind == "reopen":
        return (kind, data.draw(st.booleans(), label="crash"))
    return (kind,)


def apply(storage: Storage, op: tuple[Any, ...]) -> str | None:
    """Apply a write operation; report a refused one."""
    try:
        if op[0] == "put":
            storage.put(op[1], op[2], sync=op[3])
        elif op[0] == "append":
            storage.log_append(op[1], op[2], sync=op[3])
        elif op[0] == "truncate":
            storage.log_truncate(op[1], sync=op[2])
        else:
            storage.save_snapshot(op[1], op[2], sync=op[3])
    except ConfigError:
        return "ConfigError"
    return None


def bounds(state: StoredState) -> tuple[int, int]:
    return state.log_start, state.log_start + len(state.log) - 1


def memory_storage_holding(state: StoredState) -> MemoryStorage:
    model = MemoryStorage()
    for key, value in state.hard.items():
        model.put(key, value)
    if state.snapshot is not None or state.log_start > 1:
        model.save_snapshot(state.snapshot, state.log_start - 1)
    model.log_append(state.log_start, state.log)
    assert model.load() == state
    return model


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_committed_state_equals_memory_storage_on_random_operation_sequences(
    data: st.DataObject,
) -> None:
    """Any sequence of writes, committed after random subsets, reads back exactly as
    MemoryStorage holds it at the last commit, also after a close or a crash and a reopen;
    what was not committed is gone after the reopen. Refused writes are refused by both."""
    with tempfile.TemporaryDirectory() as tmp:
        model = MemoryStorage()
        lm = LMDBStorage(tmp, fsync=False)
        committed = model.load()
        for _ in range(data.draw(st.integers(0, 60), label="length")):
            op = draw_op(data, model.load())
            if op[0] == "flush":
                lm.flush()
                committed = model.load()
                assert lm.load() == committed
            elif op[0] == "reopen":
                if op[1]:
                    dropped = weakref.ref(lm)
                    del lm  # dropped without flush or close, as in a crash
                    if dropped() is not None:
                        gc.collect()
                else:
                    lm.close()  # close discards what is pending too
                lm = LMDBStorage(tmp, fsync=False)
                assert lm.load() == committed
                model = memory_storage_holding(committed)
            else:
                assert apply(lm, op) == apply(model, op)
            assert (lm.log_start, lm.last_index) == bounds(model.load())
        lm.close()
        with LMDBStorage(tmp, fsync=False) as again:
            assert again.load() == committed


# ----------------------------------------------------------------------------- group commit


def test_group_commit_writes_many_operations_in_one_transaction(tmp_path: Path) -> None:
    LMDBStorage(tmp_path).close()
    before = last_txnid(tmp_path)
    with LMDBStorage(tmp_path) as st:
        for i in range(1, 201):
            st.log_append(i, [E(1, i)])
            st.put("commit_index", i, sync=(i % 2 == 0))
        st.save_snapshot("S50", 50)
        st.log_truncate(190)
        batch = st.take_batch()
        assert (len(batch), batch.needs_sync, st.pending_ops) == (402, True, 0)
        st.commit(batch)
        assert (st.stats["commits"], st.stats["batch_ops"]) == (1, 402)
        assert st.stats["bytes_written"] > 189 * 8
        assert st.stats["fsync_seconds_total"] > 0
        loaded = st.load()
    assert last_txnid(tmp_path) == before + 1  # exactly one LMDB write transaction
    assert (loaded.log_start, loaded.log, loaded.hard) == (
        51,
        [E(1, i) for i in range(51, 190)],
        {"commit_index": 200},
    )


def test_unsynced_writes_join_the_batch_and_become_durable_with_it(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path) as st:
        st.put("a", 1, sync=False)
        st.log_append(1, [E(1)], sync=False)
        assert (st.pending_ops, st.pending_needs_sync) == (2, False)
        batch = st.take_batch()
        assert not batch.needs_sync
        st.commit(batch)
    with LMDBStorage(tmp_path) as st:
        assert st.load() == StoredState(hard={"a": 1}, log=[E(1)])


def test_empty_batches_commit_nothing(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path) as st:
        st.flush()
        st.log_truncate(5)  # no effect on an empty log: nothing to write
        st.flush()
        assert st.stats["commits"] == 0


def test_batches_must_be_committed_in_the_order_they_were_taken(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path) as st:
        st.log_append(1, [E(1)])
        first = st.take_batch()
        st.log_append(2, [E(1)])
        second = st.take_batch()
        with pytest.raises(ConfigError, match="order"):
            st.commit(second)
        st.commit(first)
        st.commit(second)
        assert st.load().log == [E(1), E(1)]


def test_commits_run_on_one_worker_thread_while_the_event_loop_keeps_recording(
    tmp_path: Path,
) -> None:
    """How the runtime drives it: record on the loop, commit batches in a one-thread executor."""

    async def node(st: LMDBStorage) -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit") as pool:
            inflight: list[asyncio.Future[None]] = []
            for i in range(1, 101):
                st.put("current_term", i)
                st.log_append(i, [E(i, f"cmd{i}")])
                if i % 10 == 0:
                    inflight.append(loop.run_in_executor(pool, st.commit, st.take_batch()))
                    await asyncio.sleep(0)
            await asyncio.gather(*inflight)

    with LMDBStorage(tmp_path) as st:
        asyncio.run(node(st))
        assert st.stats["commits"] == 10
    with LMDBStorage(tmp_path) as st:
        loaded = st.load()
        assert loaded.hard == {"current_term": 100}
        assert loaded.log == [E(i, f"cmd{i}") for i in range(1, 101)]


def test_the_map_grows_when_a_commit_fills_it(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path, map_size=64 * 1024) as st:
        st.log_append(1, [E(1, b"x" * 2000) for _ in range(300)])
        st.flush()
        assert st.stats["map_grows"] >= 1
        assert len(st.load().log) == 300


def test_fsync_false_works_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="quorumkit.net.storage_lmdb"):
        st = LMDBStorage(tmp_path, fsync=False)
    assert "NOT durable" in caplog.text
    with st:
        assert st._env.flags()["sync"] is False
        st.put("a", 1)
        st.log_append(1, [E(1)])
        st.flush()
    with LMDBStorage(tmp_path, fsync=False) as st:
        assert st.load() == StoredState(hard={"a": 1}, log=[E(1)])


# ----------------------------------------------------------------------------- crashes


def test_uncommitted_operations_are_lost_in_a_crash(tmp_path: Path) -> None:
    st = LMDBStorage(tmp_path)
    st.put("current_term", 1)
    st.log_append(1, [E(1, "kept")])
    st.flush()
    st.put("current_term", 2)
    st.log_append(2, [E(2, "lost")])
    st.log_truncate(1)
    st.save_snapshot("lost", 1)
    del st  # a crash: no flush, no close
    gc.collect()
    with LMDBStorage(tmp_path) as st:
        assert st.load() == StoredState(hard={"current_term": 1}, log=[E(1, "kept")])


def test_a_killed_process_keeps_its_commits_and_releases_the_data_dir(tmp_path: Path) -> None:
    """SIGKILL a process holding the storage: while it runs, the dir is in use; after it dies,
    what it committed is there and what it had pending is not."""
    child = textwrap.dedent(
        """
        import sys, time
        from quorumkit.net.storage_lmdb import LMDBStorage
        st = LMDBStorage(sys.argv[1])
        st.put("current_term", 7)
        st.log_append(1, [("entry", 1)])
        st.flush()
        st.put("current_term", 8)
        st.log_append(2, [("entry", 2)])
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StorageInUse, match=f"in use by another process.*pid {proc.pid}"):
            LMDBStorage(tmp_path)
    finally:
        proc.kill()
        proc.wait()
    with LMDBStorage(tmp_path) as st:
        assert st.load() == StoredState(hard={"current_term": 7}, log=[("entry", 1)])


def test_a_data_dir_cannot_be_opened_twice(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path):
        with pytest.raises(StorageInUse, match="in use") as info:
            LMDBStorage(tmp_path)
        assert isinstance(info.value, QuorumkitError)
    LMDBStorage(tmp_path).close()  # released on close


def test_a_failed_commit_makes_the_storage_refuse_further_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = LMDBStorage(tmp_path)
    st.put("a", 1)
    st.flush()

    def disk_error(batch: Any) -> Any:
        raise lmdb.DiskError("simulated EIO on fsync")

    monkeypatch.setattr(st, "_write_once", disk_error)
    st.put("a", 2)
    with pytest.raises(StorageFailed, match="restart the node"):
        st.flush()
    with pytest.raises(StorageFailed, match="unusable"):
        st.put("a", 3)
    st.close()
    with LMDBStorage(tmp_path) as again:
        assert again.load().hard == {"a": 1}


def test_a_closed_storage_refuses_use_and_close_is_idempotent(tmp_path: Path) -> None:
    st = LMDBStorage(tmp_path)
    st.close()
    st.close()
    for call in (lambda: st.put("a", 1), st.load, st.flush):
        with pytest.raises(StorageFailed, match="closed"):
            call()


# ----------------------------------------------------------------------------- corruption


def flip_last_byte(record: bytes) -> bytes:
    return record[:-1] + bytes([record[-1] ^ 0x01])


@pytest.mark.parametrize(
    ("db", "key", "db_name", "record"),
    [
        (b"log", idx(4), "log", "log entry 4"),
        (b"hard", b"voted_for", "hard", "hard state 'voted_for'"),
        (b"meta", b"snapshot", "meta", "snapshot"),
    ],
)
def test_a_flipped_byte_in_a_record_is_detected_and_named(
    tmp_path: Path, db: bytes, key: bytes, db_name: str, record: str
) -> None:
    populated(tmp_path)
    with raw_lmdb(tmp_path) as (txn, dbs):
        txn.put(key, flip_last_byte(txn.get(key, db=dbs[db])), db=dbs[db])
    with LMDBStorage(tmp_path) as st, pytest.raises(CorruptStorage) as info:
        st.load()
    err = info.value
    assert (err.db, err.record) == (db_name, record)
    message = str(err)
    assert str(tmp_path) in message and record in message and "checksum mismatch" in message
    assert "restore it from a replica" in message and "majority" in message


def test_a_record_moved_to_another_key_is_detected(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_lmdb(tmp_path) as (txn, dbs):
        txn.put(idx(4), txn.get(idx(5), db=dbs[b"log"]), db=dbs[b"log"])
    with LMDBStorage(tmp_path) as st, pytest.raises(CorruptStorage, match="log entry 4"):
        st.load()


def test_a_bad_record_format_byte_is_detected(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_lmdb(tmp_path) as (txn, dbs):
        value = txn.get(b"current_term", db=dbs[b"hard"])
        txn.put(b"current_term", b"\x07" + value[1:], db=dbs[b"hard"])
    with LMDBStorage(tmp_path) as st, pytest.raises(CorruptStorage, match="format byte 7"):
        st.load()


def test_a_gap_in_the_log_is_detected(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_lmdb(tmp_path) as (txn, dbs):
        txn.delete(idx(4), db=dbs[b"log"])
    with LMDBStorage(tmp_path) as st, pytest.raises(CorruptStorage, match="gap") as info:
        st.load()
    assert info.value.record == "log entry 4"


def test_a_lost_tail_of_the_log_is_detected(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_lmdb(tmp_path) as (txn, dbs):
        txn.delete(idx(6), db=dbs[b"log"])
    with pytest.raises(CorruptStorage, match=r"log entry 6.*missing"):
        LMDBStorage(tmp_path).load()


def test_an_entry_before_the_log_start_is_detected(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_lmdb(tmp_path) as (txn, dbs):
        txn.put(idx(2), _seal(b"log", idx(2), codec.encode(E(1, "b"))), db=dbs[b"log"])
    with LMDBStorage(tmp_path) as st, pytest.raises(CorruptStorage, match="before the log start"):
        st.load()


def test_a_lost_snapshot_is_detected(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_lmdb(tmp_path) as (txn, dbs):
        txn.delete(b"snapshot", db=dbs[b"meta"])
    with LMDBStorage(tmp_path) as st, pytest.raises(CorruptStorage, match=r"snapshot.*missing"):
        st.load()


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_lmdb(tmp_path) as (txn, dbs):
        txn.put(b"format", _seal(b"meta", b"format", codec.encode(99)), db=dbs[b"meta"])
    with pytest.raises(CorruptStorage, match="format version 99"):
        LMDBStorage(tmp_path)
    LMDBStorage(tmp_path / "fresh").close()  # and the failed open left no lock behind
    with pytest.raises(CorruptStorage):
        LMDBStorage(tmp_path)


def test_a_corrupt_log_start_is_refused_at_open(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_lmdb(tmp_path) as (txn, dbs):
        txn.put(
            b"log_start", flip_last_byte(txn.get(b"log_start", db=dbs[b"meta"])), db=dbs[b"meta"]
        )
    with pytest.raises(CorruptStorage, match="meta record 'log_start'"):
        LMDBStorage(tmp_path)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: (p / "notes.txt").write_text("hello"), "not an LMDB environment"),
        (lambda p: (p / "data.mdb").write_bytes(os.urandom(65536)), "not a readable LMDB"),
        (lambda p: (p / "data.mdb").write_bytes(b"\x00" * 65536), "not a readable LMDB"),
        (lambda p: (p / "data.mdb").write_bytes(b""), "holds no quorumkit storage"),
    ],
    ids=["other-files", "random-data-mdb", "zeroed-data-mdb", "empty-data-mdb"],
)
def test_a_garbage_directory_is_refused(
    tmp_path: Path, make: Callable[[Path], object], match: str
) -> None:
    make(tmp_path)
    with pytest.raises(CorruptStorage, match=match) as info:
        LMDBStorage(tmp_path)
    assert str(tmp_path) in str(info.value) and "Check that the data dir path" in str(info.value)


def test_a_foreign_lmdb_environment_is_refused(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path))
    with env.begin(write=True) as txn:
        txn.put(b"user", b"data")
    env.close()
    with pytest.raises(CorruptStorage, match="not quorumkit storage"):
        LMDBStorage(tmp_path)


def test_a_file_is_not_a_data_dir(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        LMDBStorage(tmp_path / "f")


def test_record_checksums_cover_the_sub_database_and_the_key() -> None:
    record = _seal(b"log", idx(3), b"payload")
    assert _payload(b"log", idx(3), record) == b"payload"
    for db, key in ((b"log", idx(4)), (b"hard", idx(3))):
        with pytest.raises(ValueError, match="checksum"):
            _payload(db, key, record)
    with pytest.raises(ValueError, match="shorter"):
        _payload(b"log", idx(3), b"\x01")
