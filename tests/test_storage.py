"""MemoryStorage: the durable-storage model of the simulator (what a crash keeps)."""

from __future__ import annotations

import pytest

from quorumkit.errors import ConfigError
from quorumkit.protocol import Storage, StoredState
from quorumkit.storage import MemoryStorage


def state(st: MemoryStorage) -> tuple:
    s = st.load()
    return (s.hard, s.log_start, s.log, s.snapshot)


# ----------------------------------------------------------------------------- basic semantics


def test_fresh_storage_is_empty():
    st = MemoryStorage()
    assert isinstance(st, Storage)
    loaded = st.load()
    assert loaded.is_empty()
    assert loaded == StoredState(hard={}, log_start=1, log=[], snapshot=None)


def test_put_sets_and_overwrites_hard_state():
    st = MemoryStorage()
    st.put("current_term", 1)
    st.put("voted_for", "n2")
    st.put("current_term", 2)
    assert st.load().hard == {"current_term": 2, "voted_for": "n2"}


def test_log_append_writes_consecutive_indexes_from_log_start():
    st = MemoryStorage()
    st.log_append(1, ["a", "b"])
    st.log_append(3, ["c"])
    st.log_append(4, [])
    assert st.load().log == ["a", "b", "c"]
    assert st.load().log_start == 1


def test_log_append_truncates_then_appends():
    """Entries at and after ``index`` are discarded first (Raft's conflicting-suffix rule)."""
    st = MemoryStorage()
    st.log_append(1, ["a", "b", "c", "d"])
    st.log_append(2, ["x"])
    assert st.load().log == ["a", "x"]
    st.log_append(1, [])
    assert st.load().log == []


def test_log_append_refuses_a_gap_and_an_index_before_the_start():
    st = MemoryStorage()
    with pytest.raises(ConfigError, match="gap"):
        st.log_append(2, ["x"])
    st.log_append(1, ["a", "b", "c"])
    with pytest.raises(ConfigError, match="gap"):
        st.log_append(5, ["x"])
    st.save_snapshot("S", 2)
    with pytest.raises(ConfigError, match="before the log start"):
        st.log_append(2, ["x"])
    with pytest.raises(ValueError):
        st.log_append(0, ["x"])
    assert st.load().log == ["c"]  # refused writes change nothing
    assert st.writes == 2


def test_log_truncate_discards_from_index_on():
    st = MemoryStorage()
    st.log_append(1, ["a", "b", "c"])
    st.log_truncate(4)
    assert st.load().log == ["a", "b", "c"]
    st.log_truncate(2)
    assert st.load().log == ["a"]
    st.log_truncate(1)
    assert st.load().log == []


def test_snapshot_drops_covered_entries_and_moves_log_start():
    st = MemoryStorage()
    st.log_append(1, ["a", "b", "c", "d"])
    st.save_snapshot({"x": 2}, 2)
    loaded = st.load()
    assert (loaded.snapshot, loaded.log_start, loaded.log) == ({"x": 2}, 3, ["c", "d"])
    st.log_append(5, ["e"])
    assert st.load().log == ["c", "d", "e"]
    st.log_append(4, ["D"])
    assert st.load().log == ["c", "D"]
    st.log_truncate(3)
    assert (st.load().log_start, st.load().log) == (3, [])


def test_snapshot_past_the_end_of_the_log_empties_it():
    st = MemoryStorage()
    st.log_append(1, ["a", "b"])
    st.save_snapshot("S", 10)
    assert (st.load().log_start, st.load().log, st.load().snapshot) == (11, [], "S")
    st.log_append(11, ["k"])
    assert st.load().log == ["k"]


def test_an_older_snapshot_never_leaves_a_hole_between_snapshot_and_log():
    """Nothing stored is lost: an older snapshot is refused or ignored, never half-applied."""
    st = MemoryStorage()
    st.log_append(1, ["a", "b", "c"])
    st.save_snapshot("S2", 2)
    try:
        st.save_snapshot("S1", 1)
    except ConfigError:
        pass
    assert (st.load().log_start, st.load().log, st.load().snapshot) == (3, ["c"], "S2")


def test_load_returns_a_copy():
    st = MemoryStorage()
    st.put("k", 1)
    st.log_append(1, ["a"])
    loaded = st.load()
    loaded.hard["k"] = 99
    loaded.log.append("zzz")
    assert state(st) == ({"k": 1}, 1, ["a"], None)


def test_write_and_sync_counters():
    st = MemoryStorage()
    st.put("a", 1)
    st.put("b", 2, sync=False)
    st.log_append(1, ["x"], sync=False)
    assert (st.writes, st.syncs, st.unsynced_writes) == (3, 1, 2)
    st.log_truncate(5)
    assert (st.writes, st.syncs, st.unsynced_writes) == (4, 2, 0)


# ----------------------------------------------------------------------------- crash model


def test_unsynced_writes_are_visible_before_a_crash():
    st = MemoryStorage()
    st.put("a", 1, sync=False)
    st.log_append(1, ["x"], sync=False)
    assert state(st) == ({"a": 1}, 1, ["x"], None)


def test_crash_losing_unsynced_keeps_only_synced_writes():
    """A crash that loses unsynced writes keeps exactly what was durable."""
    st = MemoryStorage()
    st.put("term", 1)
    st.log_append(1, ["a", "b"])
    st.put("term", 2, sync=False)
    st.put("voted_for", "n3", sync=False)
    st.log_append(3, ["c"], sync=False)
    st.log_truncate(2, sync=False)
    st.save_snapshot("S", 1, sync=False)
    st.crash(lose_unsynced=True)
    assert state(st) == ({"term": 1}, 1, ["a", "b"], None)
    assert st.unsynced_writes == 0


def test_a_later_synced_write_makes_earlier_unsynced_writes_durable():
    """A synced write is an fsync: everything written before it survives the crash."""
    st = MemoryStorage()
    st.put("a", 1, sync=False)
    st.log_append(1, ["x", "y"], sync=False)
    st.log_truncate(2, sync=False)
    st.put("b", 2)  # covers the three writes above
    st.put("c", 3, sync=False)  # not covered
    st.log_append(2, ["z"], sync=False)  # not covered
    st.crash(lose_unsynced=True)
    assert state(st) == ({"a": 1, "b": 2}, 1, ["x"], None)


def test_crash_keeping_unsynced_keeps_everything():
    st = MemoryStorage()
    st.put("a", 1)
    st.put("b", 2, sync=False)
    st.log_append(1, ["x", "y"], sync=False)
    st.save_snapshot("S", 1, sync=False)
    before = state(st)
    st.crash(lose_unsynced=False)
    assert state(st) == before == ({"a": 1, "b": 2}, 2, ["y"], "S")
    # and what it kept is durable now: a second, lossy crash keeps it too
    st.crash(lose_unsynced=True)
    assert state(st) == before


def test_crash_default_keeps_everything():
    st = MemoryStorage()
    st.put("b", 2, sync=False)
    st.crash()
    assert st.load().hard == {"b": 2}


def test_lost_snapshot_restores_the_durable_log_start():
    st = MemoryStorage()
    st.log_append(1, ["a", "b", "c"])
    st.save_snapshot("S", 2, sync=False)
    assert st.load().log_start == 3
    st.crash(lose_unsynced=True)
    assert state(st) == ({}, 1, ["a", "b", "c"], None)


def test_storage_works_normally_after_a_lossy_crash():
    st = MemoryStorage()
    st.log_append(1, ["a"])
    st.log_append(2, ["b"], sync=False)
    st.crash(lose_unsynced=True)
    with pytest.raises(ConfigError, match="gap"):
        st.log_append(3, ["c"])  # index 2 is gone, so 3 would leave a gap
    st.log_append(2, ["B"], sync=False)
    st.put("k", 1)
    st.crash(lose_unsynced=True)
    assert state(st) == ({"k": 1}, 1, ["a", "B"], None)


def test_repeated_lossy_crashes_do_not_share_state_with_the_durable_copy():
    st = MemoryStorage()
    st.put("a", 1)
    st.crash(lose_unsynced=True)
    st.put("b", 2, sync=False)
    st.log_append(1, ["x"], sync=False)
    st.crash(lose_unsynced=True)
    assert state(st) == ({"a": 1}, 1, [], None)
