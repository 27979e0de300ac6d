"""Multi-Paxos and PBFT through the same runtime as Raft: real processes on loopback.

The runtime, the front ends and the clients are unchanged; only ``--protocol`` differs. For
PBFT, ``cluster up`` provisions Ed25519 key pairs and the Python client collects f + 1
matching answers from the replicas.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest

from quorumkit.client import Client
from runtime_helpers import RuntimeCluster, redis_client, running_cluster, wait_for
from test_runtime import _writer, unique


@pytest.fixture(scope="module")
def paxos3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeCluster]:
    with running_cluster(tmp_path_factory.mktemp("px3"), 3, protocol="paxos", fsync=True) as c:
        yield c


@pytest.fixture(scope="module")
def pbft4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeCluster]:
    with running_cluster(tmp_path_factory.mktemp("bft4"), 4, protocol="pbft") as c:
        yield c


def _endpoints(c: RuntimeCluster) -> list[str]:
    return [s.http for s in c.specs]


def _kill_during_writes(
    c: RuntimeCluster,
    victim: str,
    prefix: str,
    *,
    writes_before: int,
    deadline_s: float,
    probe_timeout_s: float,
    write_timeout_s: float = 2,
    settle_s: float = 0.0,
) -> dict[str, str]:
    """Write unique keys through random nodes, SIGKILL ``victim`` once ``writes_before`` were
    acknowledged, wait until a write succeeds without it; the acknowledged writes."""
    acked: dict[str, str] = {}
    stop = threading.Event()
    args = (c, unique(prefix), stop, acked, write_timeout_s)
    writer = threading.Thread(target=_writer, args=args, daemon=True)
    writer.start()
    try:
        wait_for(
            lambda: len(acked) >= writes_before,
            deadline_s,
            f"{writes_before} acknowledged writes before the kill",
        )
        c.kill(victim, signal.SIGKILL)
        probe = unique("after")
        wait_for(
            lambda: any(c.put(n, probe, "x", timeout=probe_timeout_s).ok for n in c.live()),
            deadline_s,
            f"a write after {victim}'s death",
        )
        time.sleep(settle_s)
    finally:
        stop.set()
        writer.join(30)
    return acked


# ----------------------------------------------------------------------------- Multi-Paxos


def test_paxos_serves_http_resp_and_the_python_client_on_every_node(paxos3: RuntimeCluster) -> None:
    c = paxos3
    st = c.status(c.wait_leader())
    assert st is not None and st["protocol"] == "paxos" and isinstance(st["ballot"], list)
    key = unique("px")
    for n in c.ids:
        c.put_sure(n, f"{key}-{n}", n)
    for n in c.ids:
        for m in c.ids:
            assert c.value(n, f"{key}-{m}") == m
    r = redis_client(c.spec(c.ids[1]).resp_port)
    assert r.set(f"{key}-r", "7") is True
    assert r.incr(f"{key}-r") == 8
    assert r.get(f"{key}-r") == "8"
    client = Client(_endpoints(c))
    client.put(f"{key}-py", "a")
    client.append(f"{key}-py", "b")
    assert client.cas(f"{key}-py", "ab", "c") is True
    assert client.get(f"{key}-py") == "c"


def test_paxos_kill_9_of_the_leader_loses_no_acknowledged_write(paxos3: RuntimeCluster) -> None:
    c = paxos3
    old = c.wait_leader()
    acked = _kill_during_writes(
        c, old, "pxkill", writes_before=15, deadline_s=30, probe_timeout_s=1, settle_s=0.3
    )
    new = c.wait_leader()
    assert new != old
    for n in c.live():
        for key, value in acked.items():
            assert c.value(n, key) == value, f"acknowledged {key}={value} lost at {n}"
    c.start_node(old)
    c.wait_serving([old])
    latest = unique("latest")
    c.put_ok(latest, "back")
    wait_for(lambda: c.value(old, latest, stale=True) == "back", 30, f"{old} catching up")


def test_paxos_data_survives_a_restart_of_every_node(paxos3: RuntimeCluster) -> None:
    c = paxos3
    key = unique("pxrestart")
    c.put_ok(key, "durable")
    for n in c.live():
        c.kill(n, signal.SIGKILL)
    c.restart_all()
    assert c.value(c.wait_leader(), key) == "durable"


# ----------------------------------------------------------------------------- PBFT


def test_pbft_cluster_up_provisions_keys_and_signs_with_them(pbft4: RuntimeCluster) -> None:
    c = pbft4
    keys = c.data_dir / "keys"
    assert sorted(p.name for p in keys.glob("*.key")) == sorted(
        [f"{n}.key" for n in c.ids] + [f"{n}.x25519.key" for n in c.ids]  # x25519: auth="mac"
    )
    assert (keys / "n1.key").stat().st_mode & 0o077 == 0  # private keys: owner only
    assert (keys / "n1.x25519.key").stat().st_mode & 0o077 == 0
    st = c.status(c.ids[0])
    assert st is not None and st["protocol"] == "pbft"


def test_pbft_http_resp_and_a_quorum_python_client(pbft4: RuntimeCluster) -> None:
    c = pbft4
    key = unique("bft")
    for n in c.ids:
        c.put_sure(n, f"{key}-{n}", n)
    for n in c.ids:
        assert c.value(n, f"{key}-{c.ids[0]}") == c.ids[0]
    r = redis_client(c.spec(c.ids[2]).resp_port)
    assert r.set(f"{key}-r", "1") is True
    assert r.incr(f"{key}-r") == 2
    client = Client(_endpoints(c))
    assert client.quorum == 2  # f + 1 for n = 4
    client.put(f"{key}-py", "x")
    client.append(f"{key}-py", "y")
    assert client.get(f"{key}-py") == "xy"


def test_pbft_kill_9_of_the_primary_loses_no_acknowledged_write(pbft4: RuntimeCluster) -> None:
    c = pbft4
    primary = c.wait_leader()
    acked = _kill_during_writes(
        c, primary, "bftkill", writes_before=10, deadline_s=60, probe_timeout_s=3, write_timeout_s=4
    )
    for n in c.live():
        for key, value in acked.items():
            assert c.value(n, key) == value, f"acknowledged {key}={value} lost at {n}"
    c.start_node(primary)
    c.wait_serving([primary])
