"""The write-ahead log layout of LMDBStorage (quorumkit.net.wal): same meaning as
MemoryStorage, crash consistency (torn tails repaired and said, other damage refused and named),
segment rollover and cleanup, and a decoder that never raises anything but its own errors."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import weakref
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quorumkit import codec
from quorumkit.net import wal as walmod
from quorumkit.net.storage_lmdb import (
    FORMAT_VERSION,
    FORMAT_WAL,
    CorruptStorage,
    LMDBStorage,
    StorageFailed,
    _seal,
)
from quorumkit.net.wal import (
    BATCH_HEADER_BYTES,
    MIN_SEGMENT_BYTES,
    OP_APPEND,
    OP_HARD,
    OP_MARK,
    OP_TRUNCATE,
    SEGMENT_HEADER_BYTES,
    WalCorrupt,
    WriteAheadLog,
    batch_record,
    encode_ops,
    parse_ops,
)
from quorumkit.protocol import StoredState
from quorumkit.protocols.raft.messages import LogEntry
from quorumkit.storage import MemoryStorage
from test_storage_lmdb import apply, bounds, draw_op, memory_storage_holding

SMALL = 4096  # a small segment: a few records each, so rollover and cleanup happen


def E(term: int, command: Any = None) -> LogEntry:
    return LogEntry(term, command)


def wal_storage(path: Path | str, **kw: Any) -> LMDBStorage:
    kw.setdefault("wal_segment_bytes", SMALL)
    return LMDBStorage(path, wal=True, **kw)


def segments(path: Path) -> list[Path]:
    return sorted((path / "wal").glob("*.wal"))


def records(file: Path) -> list[tuple[int, int, int]]:
    """(offset, seq, size with padding) of each batch record of a segment file."""
    data = file.read_bytes()
    out = []
    offset = SEGMENT_HEADER_BYTES
    while offset + BATCH_HEADER_BYTES <= len(data):
        magic, length, seq, _, _ = struct.unpack_from(">IIQII", data, offset)
        if magic != walmod.BATCH_MAGIC:
            break
        size = BATCH_HEADER_BYTES + length + (-length % 8)
        out.append((offset, seq, size))
        offset += size
    return out


def poke(file: Path, offset: int, data: bytes) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        f.write(data)


def flip(file: Path, offset: int) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def three_commits(path: Path) -> None:
    """Hard state and entries 1..3 in three commits (three WAL records in one segment)."""
    with wal_storage(path, wal_segment_bytes=1 << 20) as s:
        s.put("hard", (1, "n1"))
        for i in (1, 2, 3):
            s.log_append(i, [E(1, f"e{i}")])
            s.flush()


# ----------------------------------------------------------------------------- semantics


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_wal_layout_equals_memory_storage_on_random_operation_sequences(
    data: st.DataObject,
) -> None:
    """As for the LMDB layout: committed state reads back exactly as MemoryStorage holds it,
    across closes, crashes and reopens, with segments small enough to roll over and be
    deleted all the time."""
    with tempfile.TemporaryDirectory() as tmp:
        model = MemoryStorage()
        lm = wal_storage(tmp, fsync=False, wal_segment_bytes=MIN_SEGMENT_BYTES)
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
                    del lm
                    if dropped() is not None:
                        gc.collect()
                else:
                    lm.close()
                lm = wal_storage(tmp, fsync=False, wal_segment_bytes=MIN_SEGMENT_BYTES)
                assert lm.load() == committed
                model = memory_storage_holding(committed)
            else:
                assert apply(lm, op) == apply(model, op)
            assert (lm.log_start, lm.last_index) == bounds(model.load())
        lm.close()
        with wal_storage(tmp, fsync=False, wal_segment_bytes=MIN_SEGMENT_BYTES) as again:
            assert again.load() == committed


def test_a_data_dir_keeps_the_layout_it_was_created_with(tmp_path: Path) -> None:
    with wal_storage(tmp_path / "w") as s:
        assert s.wal
    with LMDBStorage(tmp_path / "w") as s:  # no wal=True: still the WAL layout
        assert s.wal
    with LMDBStorage(tmp_path / "l") as s:
        assert not s.wal
        s.log_append(1, [E(1, "x")])
        s.flush()
    with wal_storage(tmp_path / "l") as s:  # an LMDB-layout dir is never converted
        assert not s.wal
        assert s.load().log == [E(1, "x")]
    assert not (tmp_path / "l" / "wal").exists()
    for sub, version in (("w", FORMAT_WAL), ("l", FORMAT_VERSION)):
        env = lmdb.open(str(tmp_path / sub), max_dbs=3, readonly=True)
        try:
            with env.begin() as txn:
                meta = env.open_db(b"meta", txn=txn, create=False)
                record = txn.get(b"format", db=meta)
                assert codec.decode(record[5:]) == version
        finally:
            env.close()


def test_a_commit_of_hard_state_and_log_entries_is_one_wal_record_and_no_lmdb_transaction(
    tmp_path: Path,
) -> None:
    with wal_storage(tmp_path, wal_segment_bytes=1 << 20) as s:
        env_txn = s._env.info()["last_txnid"]
        s.put("hard", (1, None))
        s.flush()
        for i in range(1, 51):
            s.log_append(i, [E(1, i)])
        s.log_truncate(40)
        s.put("commit", 39, sync=False)
        s.flush()
        assert s._env.info()["last_txnid"] == env_txn
        assert s.load().log == [E(1, i) for i in range(1, 40)]
        assert s.load().hard == {"hard": (1, None), "commit": 39}
    (seg,) = segments(tmp_path)
    assert [seq for _, seq, _ in records(seg)] == [1, 2]


def test_segments_roll_over_and_compacted_ones_are_deleted(tmp_path: Path) -> None:
    with wal_storage(tmp_path) as s:
        for i in range(1, 301):
            s.log_append(i, [E(1, "x" * 40)])
            s.flush()
        assert len(segments(tmp_path)) > 5
        s.save_snapshot("S", 290)
        s.flush()
        assert len(segments(tmp_path)) <= 2
        assert s.load() == StoredState(log_start=291, log=[E(1, "x" * 40)] * 10, snapshot="S")
    with wal_storage(tmp_path) as s:
        assert s.load().log_start == 291


def test_a_batch_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    with wal_storage(tmp_path) as s:
        s.log_append(1, [E(1, "y" * 100) for _ in range(200)])
        s.flush()
        s.log_append(201, [E(1, "z")])
        s.flush()
    with wal_storage(tmp_path) as s:
        log = s.load().log
        assert len(log) == 201 and log[-1] == E(1, "z")


# ----------------------------------------------------------------------------- crashes


def test_a_torn_last_record_is_repaired_and_said_and_nothing_acknowledged_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash in the middle of the last write leaves part of the record unwritten (zeros):
    that write never returned, so it was never acknowledged; the record is discarded."""
    three_commits(tmp_path)
    (seg,) = segments(tmp_path)
    offset, _seq, size = records(seg)[-1]
    end = (
        offset
        + size
        - len(seg.read_bytes()[offset : offset + size])
        + len(seg.read_bytes()[offset : offset + size].rstrip(b"\x00"))
    )
    poke(seg, end - 4, bytes(4))  # the end of the record never made it to the disk
    with caplog.at_level(logging.WARNING, logger="quorumkit.net.wal"):
        s = wal_storage(tmp_path)
    assert (
        "torn tail" in caplog.text and str(seg) in caplog.text and f"byte {offset}" in caplog.text
    )
    with s:
        assert s.load() == StoredState(hard={"hard": (1, "n1")}, log=[E(1, "e1"), E(1, "e2")])
        s.log_append(3, [E(2, "again")])
        s.flush()
    caplog.clear()
    with caplog.at_level(logging.WARNING), wal_storage(tmp_path) as s:
        assert s.load().log == [E(1, "e1"), E(1, "e2"), E(2, "again")]
    assert "torn" not in caplog.text


@pytest.mark.parametrize("kept", [0, 4, BATCH_HEADER_BYTES, BATCH_HEADER_BYTES + 5])
def test_a_last_record_cut_short_is_a_torn_tail(tmp_path: Path, kept: int) -> None:
    """A truncated tail: the crash came after the first ``kept`` bytes of the last record
    (the segment is preallocated, so the rest reads as zeros)."""
    three_commits(tmp_path)
    (seg,) = segments(tmp_path)
    offset, _, size = records(seg)[-1]
    poke(seg, offset + kept, bytes(size - kept))
    with wal_storage(tmp_path) as s:
        assert s.load().log == [E(1, "e1"), E(1, "e2")]
        for i in range(3, 40):  # appends go on, into a new segment when this one is full
            s.log_append(i, [E(3, i)])
            s.flush()
    with wal_storage(tmp_path) as s:
        assert s.load().log[-1] == E(3, 39)


def test_a_segment_file_cut_shorter_refuses_to_start(tmp_path: Path) -> None:
    """Segments are preallocated: no crash changes their size. A shorter file lost records
    that may have been acknowledged."""
    three_commits(tmp_path)
    (seg,) = segments(tmp_path)
    os.truncate(seg, records(seg)[-1][0] + 10)
    with pytest.raises(CorruptStorage, match="cut or extended") as info:
        wal_storage(tmp_path)
    assert str(seg) in str(info.value)


def test_a_flipped_byte_in_the_last_record_counts_as_a_torn_write(tmp_path: Path) -> None:
    """The last record cannot be told apart from a torn write (documented): repaired."""
    three_commits(tmp_path)
    (seg,) = segments(tmp_path)
    offset, _, _ = records(seg)[-1]
    flip(seg, offset + BATCH_HEADER_BYTES + 2)
    with wal_storage(tmp_path) as s:
        assert s.load().log == [E(1, "e1"), E(1, "e2")]


@pytest.mark.parametrize("where", ["payload", "header"])
def test_a_flipped_byte_before_the_last_record_refuses_to_start_naming_file_and_record(
    tmp_path: Path, where: str
) -> None:
    three_commits(tmp_path)
    (seg,) = segments(tmp_path)
    offset, seq, _ = records(seg)[1]
    # in the payload: a byte of the encoded entry (after the op's kind, index, count, length)
    flip(seg, offset + (BATCH_HEADER_BYTES + 18 if where == "payload" else 9))
    with pytest.raises(CorruptStorage) as info:
        wal_storage(tmp_path)
    message = str(info.value)
    assert str(seg) in message and f"at byte {offset}" in message
    if where == "payload":
        assert f"batch record {seq} at byte {offset} (log entry 2)" in message
        assert ": checksum mismatch (stored" in message
    else:
        assert "header checksum mismatch" in message
    assert "a valid batch record follows" in message and "restore it from a replica" in message
    with pytest.raises(CorruptStorage):  # and it stays refused: nothing was "repaired"
        wal_storage(tmp_path)


def test_damage_in_an_older_segment_refuses_to_start(tmp_path: Path) -> None:
    with wal_storage(tmp_path) as s:
        for i in range(1, 80):
            s.log_append(i, [E(1, "x" * 40)])
            s.flush()
    first, *rest = segments(tmp_path)
    assert rest
    offset, _, _ = records(first)[-1]  # the last record of a segment that newer ones follow
    flip(first, offset + BATCH_HEADER_BYTES)
    with pytest.raises(CorruptStorage, match="newer segments follow") as info:
        wal_storage(tmp_path)
    assert str(first) in str(info.value)


def test_a_damaged_segment_header_refuses_to_start(tmp_path: Path) -> None:
    with wal_storage(tmp_path) as s:
        for i in range(1, 80):
            s.log_append(i, [E(1, "x" * 40)])
            s.flush()
    first = segments(tmp_path)[0]
    flip(first, 20)
    with pytest.raises(CorruptStorage, match="segment header") as info:
        wal_storage(tmp_path)
    assert str(first) in str(info.value)


def test_a_segment_whose_creation_a_crash_interrupted_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    three_commits(tmp_path)
    (seg,) = segments(tmp_path)
    half = seg.with_name(f"{int(seg.stem) + 1:016d}.wal")
    half.write_bytes(bytes(SMALL))  # created, header never durable
    with caplog.at_level(logging.WARNING, logger="quorumkit.net.wal"), wal_storage(tmp_path) as s:
        assert len(s.load().log) == 3
    assert not half.exists() and "creation a crash interrupted" in caplog.text


def test_segments_left_over_by_an_interrupted_cleanup_are_removed(tmp_path: Path) -> None:
    with wal_storage(tmp_path) as s:
        for i in range(1, 200):
            s.log_append(i, [E(1, "x" * 40)])
            s.flush()
        kept = segments(tmp_path)[-1]
        old = segments(tmp_path)[0].read_bytes()
        s.save_snapshot("S", 199)
        s.flush()
    assert segments(tmp_path) == [kept]
    stale = kept.with_name(f"{1:016d}.wal")
    stale.write_bytes(old)  # a deletion the crash undid
    with wal_storage(tmp_path) as s:
        assert s.load() == StoredState(log_start=200, snapshot="S")
    assert not stale.exists()


def test_a_wal_without_its_lmdb_environment_refuses_to_start(tmp_path: Path) -> None:
    """The votes live in LMDB: a log without them must not start over as a fresh node."""
    three_commits(tmp_path)
    for name in ("data.mdb", "lock.mdb"):
        (tmp_path / name).unlink()
    with pytest.raises(CorruptStorage, match=r"data\.mdb .* is missing but wal/ still holds"):
        wal_storage(tmp_path)
    assert not (tmp_path / "data.mdb").exists()


def test_an_lmdb_environment_whose_wal_directory_is_gone_refuses_to_start(tmp_path: Path) -> None:
    three_commits(tmp_path)
    shutil.rmtree(tmp_path / "wal")
    with pytest.raises(CorruptStorage, match="wal/ is gone"):
        wal_storage(tmp_path)


def test_an_unexpected_file_in_the_wal_directory_refuses_to_start(tmp_path: Path) -> None:
    three_commits(tmp_path)
    (tmp_path / "wal" / "notes.txt").write_text("hi")
    with pytest.raises(CorruptStorage, match="unexpected file"):
        wal_storage(tmp_path)


def test_a_record_that_verifies_but_holds_an_undecodable_entry_is_named(tmp_path: Path) -> None:
    three_commits(tmp_path)
    (seg,) = segments(tmp_path)
    offset, seq, _ = records(seg)[-1]
    payload = encode_ops([(OP_APPEND, 3, (b"\xc1",))])  # 0xc1: never valid msgpack
    poke(seg, offset, batch_record(int(seg.stem), seq, payload) + bytes(64))
    with wal_storage(tmp_path) as s, pytest.raises(CorruptStorage, match="log entry 3") as info:
        s.load()
    assert "WAL" in str(info.value)


def test_a_snapshot_whose_wal_record_never_became_durable_is_discarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """LMDB (the snapshot) commits first, then the WAL record that moves the log start: a
    crash between the two leaves the snapshot without its record; it does not count."""
    with wal_storage(tmp_path) as s:
        s.log_append(1, [E(1, i) for i in range(10)])
        s.save_snapshot("S4", 4)
        s.flush()

        def broken(*args: Any, **kwargs: Any) -> int:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(s._wal, "append", broken)
        s.save_snapshot("S8", 8)
        with pytest.raises(OSError):
            s.flush()
        with pytest.raises(StorageFailed):
            s.put("k", 1)
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING), wal_storage(tmp_path) as s:
        loaded = s.load()
        assert (loaded.snapshot, loaded.log_start) == ("S4", 5)
        s.save_snapshot("S9", 9)  # and the next snapshot reuses the discarded slot
        s.flush()
    assert "discarding the snapshot" in caplog.text
    with wal_storage(tmp_path) as s:
        assert (s.load().snapshot, s.load().log_start) == ("S9", 10)


def test_a_killed_process_keeps_every_acknowledged_commit(tmp_path: Path) -> None:
    """SIGKILL a writer in the middle of a stream of commits: everything it reported durable
    is there afterwards, in order, and the storage opens cleanly."""
    child = textwrap.dedent(
        """
        import sys
        from quorumkit.net.storage_lmdb import LMDBStorage
        st = LMDBStorage(sys.argv[1], wal=True, wal_segment_bytes=4096)
        i = 0
        while True:
            i += 1
            st.log_append(i, [("entry", i, "x" * (i % 50))])
            if i % 7 == 0:
                st.put("hard", (i, None))
            if i % 40 == 0:
                st.save_snapshot(("snap", i - 10), i - 10)
            st.flush()
            print(i, flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    acked = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            acked = int(line)
            if acked >= 300:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    with wal_storage(tmp_path) as s:
        loaded = s.load()
    last = loaded.log_start + len(loaded.log) - 1
    assert last >= acked
    assert loaded.log[-1] == ("entry", last, "x" * (last % 50))
    assert loaded.snapshot == ("snap", loaded.log_start - 1)
    assert loaded.hard["hard"][0] >= acked - acked % 7


# ----------------------------------------------------------------------------- hard state


def lmdb_hard(where: Path | LMDBStorage) -> tuple[dict[str, Any], Any]:
    """What LMDB itself holds: the hard-state db, and meta ``hard_seq`` (through the storage's
    own environment while it is open: LMDB allows one per process)."""
    opened = isinstance(where, LMDBStorage)
    env = where._env if opened else lmdb.open(str(where), max_dbs=3, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            hard_db = env.open_db(b"hard", txn=txn, create=False)
            meta = env.open_db(b"meta", txn=txn, create=False)
            hard = {bytes(k).decode(): codec.decode(bytes(v)[5:]) for k, v in txn.cursor(hard_db)}
            seq = txn.get(b"hard_seq", db=meta)
            return hard, None if seq is None else codec.decode(bytes(seq)[5:])
    finally:
        if not opened:
            env.close()


def test_hard_state_lives_in_wal_records_until_a_snapshot_moves_it_into_lmdb(
    tmp_path: Path,
) -> None:
    """A hard-state write costs no LMDB transaction; the snapshot that deletes the segments
    holding those values first writes them to LMDB, so they outlive their segments."""
    with wal_storage(tmp_path, wal_segment_bytes=MIN_SEGMENT_BYTES) as s:
        s.put("term", 3)
        for i in range(1, 41):
            s.log_append(i, [E(3, "x" * 30)])
            s.put("commit", i, sync=False)
            s.flush()
        assert lmdb_hard(s)[0] == {}  # nothing in LMDB yet
        assert len(segments(tmp_path)) > 5
        s.save_snapshot("S", 38)
        s.flush()
        assert len(segments(tmp_path)) <= 2  # the segments with term=3 are gone
        hard, seq = lmdb_hard(s)
        assert hard == {"term": 3, "commit": 40}
        assert seq == 41  # the snapshot batch's own WAL record (40 batches before it)
        s.put("commit", 41, sync=False)
        s.flush()
    with wal_storage(tmp_path) as s:
        assert s.load().hard == {"term": 3, "commit": 41}  # the WAL's is newer than LMDB's
    assert lmdb_hard(tmp_path)[0]["commit"] == 40


def test_hard_state_in_the_wal_older_than_lmdbs_does_not_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot batch writes LMDB (hard state included) before its WAL record. When that
    record is lost, LMDB's values stand; WAL records before it hold older ones."""
    with wal_storage(tmp_path) as s:
        s.log_append(1, [E(1, i) for i in range(10)])
        s.put("vote", "n1")
        s.flush()
        s.put("vote", "n2")
        s.flush()

        def broken(*args: Any, **kwargs: Any) -> int:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(s._wal, "append", broken)
        s.put("vote", "n3")
        s.save_snapshot("S4", 4)
        with pytest.raises(OSError):
            s.flush()
    monkeypatch.undo()
    assert lmdb_hard(tmp_path) == ({"vote": "n3"}, 3)
    with wal_storage(tmp_path) as s:
        loaded = s.load()
        # never acknowledged, and ahead: as before, LMDB's hard state may run ahead of the log
        assert loaded.hard == {"vote": "n3"}
        assert (loaded.snapshot, loaded.log_start) == (None, 1)
        # the next record takes the lost record's number (3): its values must still count
        s.put("vote", "n4")
        s.flush()
    with wal_storage(tmp_path) as s:
        assert s.load().hard == {"vote": "n4"}


def test_a_torn_record_holding_hard_state_is_repaired_and_the_value_before_it_stands(
    tmp_path: Path,
) -> None:
    with wal_storage(tmp_path, wal_segment_bytes=1 << 20) as s:
        s.put("term", 1)
        s.flush()
        s.put("term", 2)
        s.flush()
    (seg,) = segments(tmp_path)
    offset, _, _ = records(seg)[-1]
    flip(seg, offset + BATCH_HEADER_BYTES + 3)
    with wal_storage(tmp_path) as s:
        assert s.load().hard == {"term": 1}


def test_a_record_that_verifies_but_holds_an_undecodable_hard_state_value_is_named(
    tmp_path: Path,
) -> None:
    three_commits(tmp_path)
    (seg,) = segments(tmp_path)
    offset, seq, _ = records(seg)[-1]
    payload = encode_ops([(OP_HARD, 0, (b"vote", b"\xc1"))])  # 0xc1: never valid msgpack
    poke(seg, offset, batch_record(int(seg.stem), seq, payload) + bytes(64))
    with wal_storage(tmp_path) as s, pytest.raises(CorruptStorage, match="'vote'") as info:
        s.load()
    assert f"WAL batch record {seq}" in str(info.value)


def test_a_data_dir_whose_wal_held_only_hard_state_refuses_to_start_without_it(
    tmp_path: Path,
) -> None:
    """The votes are in the WAL now: a data dir that lost wal/ must not start over."""
    with wal_storage(tmp_path) as s:
        s.put("vote", "n1")
        s.flush()
    shutil.rmtree(tmp_path / "wal")
    with pytest.raises(CorruptStorage, match="wal/ is gone"):
        wal_storage(tmp_path)


def test_a_data_dir_from_before_hard_state_in_the_wal_keeps_its_votes(tmp_path: Path) -> None:
    """Data dirs written by an earlier quorumkit hold hard state in LMDB and no ``hard_seq``:
    their values load, and values written now override them."""
    with wal_storage(tmp_path) as s:
        s.log_append(1, [E(1, "a")])
        s.flush()
    env = lmdb.open(str(tmp_path), max_dbs=3)
    try:  # as the earlier layout left it
        with env.begin(write=True) as txn:
            hard = env.open_db(b"hard", txn=txn, create=False)
            meta = env.open_db(b"meta", txn=txn, create=False)
            txn.delete(b"hard_seq", db=meta)
            txn.put(b"vote", _seal(b"hard", b"vote", codec.encode("n2")), db=hard)
            txn.put(b"term", _seal(b"hard", b"term", codec.encode(4)), db=hard)
    finally:
        env.close()
    with wal_storage(tmp_path) as s:
        assert s.load().hard == {"vote": "n2", "term": 4}
        s.put("term", 5)
        s.flush()
    with wal_storage(tmp_path) as s:
        loaded = s.load()
        assert loaded.hard == {"vote": "n2", "term": 5}
        assert loaded.log == [E(1, "a")]
    assert lmdb_hard(tmp_path) == ({"vote": "n2", "term": 4}, 0)  # the marker, written once


@pytest.mark.parametrize(
    "ops",
    [
        [(OP_HARD, 5, (b"k", b"v"))],  # a hard-state value has no index
        [(OP_HARD, 0, (b"k",))],
        [(OP_HARD, 0, (b"k", b"v", b"w"))],
        [(OP_HARD, 0, (b"", b"v"))],
    ],
)
def test_a_malformed_hard_state_operation_does_not_decode(ops: list[Any]) -> None:
    with pytest.raises(ValueError, match="hard-state value"):
        parse_ops(encode_ops(ops))


# ----------------------------------------------------------------------------- the decoder

ops_strategy = st.lists(
    st.one_of(
        st.tuples(
            st.just(OP_APPEND),
            st.integers(1, 2**40),
            st.lists(st.binary(max_size=20), max_size=5).map(tuple),
        ),
        st.tuples(st.just(OP_TRUNCATE), st.integers(1, 2**62), st.just(())),
        st.tuples(st.just(OP_MARK), st.integers(0, 2**62), st.just(())),
        st.tuples(
            st.just(OP_HARD),
            st.just(0),
            st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=20)),
        ),
    ),
    max_size=8,
)


@given(ops=ops_strategy)
def test_batch_payloads_round_trip(ops: list[Any]) -> None:
    assert parse_ops(encode_ops(ops)) == ops


@settings(max_examples=500)
@given(blob=st.binary(max_size=200))
def test_the_payload_decoder_raises_only_value_error_on_any_bytes(blob: bytes) -> None:
    try:
        parse_ops(blob)
    except ValueError:
        pass


#: three batches and the log after each prefix of them: (start, next, entries)
BATCHES = [
    [(OP_APPEND, 1, (b"a", b"b"))],
    [(OP_APPEND, 3, (b"c",)), (OP_MARK, 1, ())],
    [(OP_TRUNCATE, 3, ())],
]
PREFIXES = [(1, 1, []), (1, 3, [b"a", b"b"]), (2, 4, [b"b", b"c"]), (2, 3, [b"b"])]


@settings(max_examples=400, deadline=None)
@given(noise=st.binary(min_size=1, max_size=48), at=st.integers(0, 200))
def test_damage_anywhere_in_a_segment_gives_a_prefix_of_its_records_or_a_refusal(
    noise: bytes, at: int
) -> None:
    """Overwrite bytes anywhere after the segment header of three valid records: opening
    either refuses (WalCorrupt) or gives the log after some prefix of the records (a torn
    tail repaired). Never another exception, never a log the records did not make."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wal"
        log = WriteAheadLog(path, fsync=False, segment_bytes=SMALL)
        log.open()
        for ops in BATCHES:
            log.append(ops)
        log.close()
        (seg,) = sorted(path.glob("*.wal"))
        poke(seg, SEGMENT_HEADER_BYTES + at, noise)
        again = WriteAheadLog(path, fsync=False, segment_bytes=SMALL)
        try:
            image = again.open()
        except WalCorrupt:
            return
        finally:
            again.close()
        assert (image.start, image.next, image.entries) in PREFIXES
        assert (image.start, image.next, image.entries) == PREFIXES[image.last_seq]
        # and what opened once opens again the same way (the repair is durable)
        third = WriteAheadLog(path, fsync=False, segment_bytes=SMALL)
        assert third.open() == image
        third.close()
