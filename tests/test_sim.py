"""The deterministic simulator: determinism, network model, node faults, timers, API errors."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from quorumkit.codec import message
from quorumkit.errors import ConfigError
from quorumkit.model import Topology
from quorumkit.protocol import ClientRequest, Context, Protocol, StoredState
from quorumkit.sim import Simulation

REPO = Path(__file__).resolve().parents[1]
FIVE = ("n1", "n2", "n3", "n4", "n5")
PROBE_INTERVAL = 0.01

# ----------------------------------------------------------------------------- test protocols
# Message tags are global: "test.sim.*" is this file's namespace.


@message("test.sim.Probe")
class Probe:
    seq: int


@message("test.sim.Ping")
class Ping:
    seq: int


class Prober(Protocol):
    """Sends a Probe to every other node every PROBE_INTERVAL; counts what arrives per sender."""

    name = "test-prober"

    def __init__(self, node_id: str, members: Any, config: Any = None) -> None:
        super().__init__(node_id, members, config)
        self.seq = 0
        self.received: Counter[str] = Counter()

    def on_start(self, ctx: Context) -> None:
        ctx.set_timer("probe", PROBE_INTERVAL)

    def on_timer(self, ctx: Context, name: str) -> None:
        self.seq += 1
        ctx.broadcast(Probe(self.seq))
        ctx.set_timer("probe", PROBE_INTERVAL)

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        self.received[src] += 1


class Recorder(Protocol):
    """Sends nothing by itself; records every message as (arrival time, sender, message)."""

    name = "test-recorder"

    def __init__(self, node_id: str, members: Any, config: Any = None) -> None:
        super().__init__(node_id, members, config)
        self.got: list[tuple[float, str, Any]] = []

    def on_start(self, ctx: Context) -> None:
        pass

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        self.got.append((ctx.now(), src, msg))

    def seqs_from(self, src: str) -> list[int]:
        return [m.seq for _, s, m in self.got if s == src]


class Scripted(Protocol):
    """Does what client commands say: timers and storage writes; records timers and recovery."""

    name = "test-scripted"

    def __init__(self, node_id: str, members: Any, config: Any = None) -> None:
        super().__init__(node_id, members, config)
        self.fired: list[tuple[str, float]] = []
        self.recovered: StoredState | None = None
        self.started = False

    def on_start(self, ctx: Context) -> None:
        self.started = True

    def on_recover(self, ctx: Context, stored: StoredState) -> None:
        self.recovered = stored

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        pass

    def on_timer(self, ctx: Context, name: str) -> None:
        self.fired.append((name, ctx.now()))

    def on_client(self, ctx: Context, request: ClientRequest) -> None:
        op, *args = request.command
        if op == "set":
            ctx.set_timer(args[0], args[1])
        elif op == "cancel":
            ctx.cancel_timer(args[0])
        elif op == "put":
            ctx.storage.put(args[0], args[1], sync=args[2])
        elif op == "append":
            ctx.storage.log_append(args[0], args[1], sync=args[2])
        elif op == "send":
            ctx.send(args[0], Ping(args[1]))
        ctx.reply(request, "ok")


def received_counts(sim: Simulation) -> dict[tuple[str, str], int]:
    """(receiver, sender) -> probes received so far, for every ordered pair of nodes."""
    return {
        (dst, src): sim.protocol(dst).received[src]
        for dst in sim.nodes
        for src in sim.nodes
        if src != dst
    }


def delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in after}


def binomial_band(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    mean = n * p
    sd = math.sqrt(n * p * (1 - p))
    return mean - sigmas * sd, mean + sigmas * sd


# ----------------------------------------------------------------------------- determinism

SCENARIO = textwrap.dedent(
    """
    import sys
    from quorumkit.sim import Simulation

    sim = Simulation("heartbeat", nodes=5, seed=int(sys.argv[1]), loss_rate=0.05,
                     duplicate_rate=0.05, reorder=0.05, delay_min=0.001, delay_max=0.02)
    sim.run(0.5)
    sim.partition(["n1", "n2"], ["n3", "n4", "n5"])
    sim.run(0.5)
    sim.crash("n4")
    sim.set_omission("n5", 0.3)
    sim.heal()
    sim.run(0.5)
    sim.restart("n4")
    sim.disconnect("n1")
    sim.run(0.5)
    sim.reconnect("n1")
    sim.run(0.5)
    print(sim.trace_hash(), sim.stats["delivered"], sim.stats["events"])
    """
)


def run_scenario_in_subprocess(seed: int, hashseed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO, str(seed)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    return out.stdout.strip()


def test_same_seed_gives_the_same_trace_hash_in_separate_processes():
    """Simulator rule 1: one seed determines everything, in any process (any hash seed)."""
    first = run_scenario_in_subprocess(seed=7, hashseed="1")
    second = run_scenario_in_subprocess(seed=7, hashseed="4242")
    other_seed = run_scenario_in_subprocess(seed=8, hashseed="1")
    trace_hash, delivered, events = first.split()
    assert len(trace_hash) == 32 and int(delivered) > 100 and int(events) > 100
    assert first == second
    assert other_seed.split()[0] != trace_hash


def test_same_seed_gives_the_same_events_in_process_and_different_seeds_differ():
    def run(seed: int) -> Simulation:
        sim = Simulation("heartbeat", nodes=5, seed=seed, delay_max=0.02, trace="full")
        sim.run(0.3)
        sim.crash("n2")
        sim.run(0.3)
        return sim

    a, b, c = run(3), run(3), run(4)
    assert a.events == b.events and len(a.events) > 50
    assert a.trace_hash() == b.trace_hash()
    assert a.trace_hash() != c.trace_hash()
    assert a.events != c.events


def test_trace_off_records_nothing_but_runs_the_same():
    on = Simulation("heartbeat", nodes=3, seed=2)
    off = Simulation("heartbeat", nodes=3, seed=2, trace="off")
    on.run(1.0)
    off.run(1.0)
    assert on.stats == off.stats
    assert off.trace_hash() == Simulation("heartbeat", nodes=3, trace="off").trace_hash()
    assert on.trace_hash() != off.trace_hash()


# ----------------------------------------------------------------------------- partitions


def test_partition_blocks_exactly_the_cut_links_and_heal_restores_them():
    """Definition 1.3: a partition cuts the edges between sides; messages within a side flow."""
    sim = Simulation(Prober, nodes=5, seed=3)
    left, right = {"n1", "n2"}, {"n3", "n4", "n5"}
    sim.run(0.5)
    before = received_counts(sim)
    assert all(v >= 40 for v in before.values())

    part = sim.partition(sorted(left), sorted(right))
    assert set(part.cut) == {frozenset((a, b)) for a in left for b in right}
    dropped = sim.stats["dropped_partition"]
    sim.run(0.5)
    during = received_counts(sim)
    for (dst, src), n in delta(during, before).items():
        same_side = (dst in left) == (src in left)
        if same_side:
            assert n >= 45, (dst, src, n)
        else:
            assert n == 0, (dst, src, n)
    assert sim.stats["dropped_partition"] - dropped >= 12 * 45

    sim.heal()
    sim.run(0.5)
    for (dst, src), n in delta(received_counts(sim), during).items():
        assert n >= 45, (dst, src, n)


def test_partition_with_one_group_separates_it_from_the_unnamed_rest():
    sim = Simulation(Prober, nodes=5, seed=3)
    sim.partition(["n1"])
    sim.run(0.5)
    for (dst, src), n in received_counts(sim).items():
        assert (n == 0) == ("n1" in (dst, src)), (dst, src, n)


def test_partition_drops_messages_already_in_flight_across_the_cut():
    """A message whose path is cut while it travels is dropped on arrival."""
    sim = Simulation(Recorder, nodes=2, seed=1, delay_min=0.1, delay_max=0.1)
    sim.inject("n1", "n2", Ping(1))
    sim.run(0.05)
    sim.partition(["n1"], ["n2"])
    sim.run(1.0)
    assert sim.protocol("n2").got == []
    assert sim.stats["dropped_partition"] == 1


def test_disconnect_blocks_only_the_links_of_one_node_and_reconnect_restores_them():
    sim = Simulation(Prober, nodes=5, seed=5)
    sim.run(0.3)
    before = received_counts(sim)
    sim.disconnect("n2")
    sim.run(0.5)
    during = received_counts(sim)
    for (dst, src), n in delta(during, before).items():
        if "n2" in (dst, src):
            assert n == 0, (dst, src, n)
        else:
            assert n >= 45, (dst, src, n)
    sim.reconnect("n2")
    sim.run(0.5)
    for (dst, src), n in delta(received_counts(sim), during).items():
        assert n >= 45, (dst, src, n)


def test_partition_refuses_a_string_in_place_of_a_group():
    """partition('ab') must not be read as the group ['a', 'b']."""
    sim = Simulation(Recorder, nodes=["a", "b", "c"], seed=1)
    with pytest.raises(ConfigError, match="lists of node ids"):
        sim.partition("ab")
    with pytest.raises(ConfigError, match="lists of node ids"):
        sim.partition(["a"], "bc")
    assert sim.topology.cut_links == frozenset()


# ----------------------------------------------------------------------------- multi-hop paths


def line_sim(**options: Any) -> Simulation:
    return Simulation(
        Recorder,
        nodes=3,
        seed=1,
        topology=Topology.line(["n1", "n2", "n3"]),
        delay_min=0.01,
        delay_max=0.01,
        **options,
    )


def test_message_between_non_adjacent_nodes_travels_the_path_hop_by_hop():
    """Theorem 1.1: in a connected C there is a path; a message takes one delay per hop."""
    sim = line_sim()
    assert not sim.topology.has_link("n1", "n3")
    sim.inject("n1", "n3", Ping(1))
    sim.inject("n1", "n2", Ping(2))
    sim.run(1.0)
    [(t13, src13, msg13)] = sim.protocol("n3").got
    assert (src13, msg13) == ("n1", Ping(1))
    assert t13 == pytest.approx(0.02, abs=1e-12)  # two hops
    [(t12, _, msg12)] = sim.protocol("n2").got  # the relay does not see relayed messages
    assert msg12 == Ping(2) and t12 == pytest.approx(0.01, abs=1e-12)


def test_delay_grows_with_the_number_of_hops():
    nodes = [f"n{i}" for i in range(1, 6)]
    sim = Simulation(
        Recorder,
        nodes=5,
        seed=1,
        topology=Topology.line(nodes),
        delay_min=0.01,
        delay_max=0.01,
    )
    for i, dst in enumerate(nodes[1:], start=1):
        sim.inject("n1", dst, Ping(i))
    sim.run(1.0)
    for hops, dst in enumerate(nodes[1:], start=1):
        [(t, _, _)] = sim.protocol(dst).got
        assert t == pytest.approx(0.01 * hops, abs=1e-12)


def test_no_message_crosses_a_disconnected_graph():
    """Theorem 1.1 (contrapositive): with the middle link cut there is no path, no delivery."""
    sim = line_sim()
    sim.partition(["n1"], ["n2", "n3"])  # cuts n1-n2, the only way from n1 to n3
    assert not sim.topology.is_connected()
    sim.inject("n1", "n3", Ping(1))
    sim.inject("n3", "n1", Ping(2))
    sim.run(1.0)
    assert sim.protocol("n3").got == [] and sim.protocol("n1").got == []
    assert sim.stats["dropped_partition"] == 2
    sim.heal()
    sim.inject("n1", "n3", Ping(3))
    sim.run(1.0)
    assert [m for _, _, m in sim.protocol("n3").got] == [Ping(3)]


def test_a_crashed_relay_blocks_the_path():
    sim = line_sim()
    sim.crash("n2")
    sim.inject("n1", "n3", Ping(1))
    sim.run(1.0)
    assert sim.protocol("n3").got == []
    assert sim.stats["dropped_partition"] == 1
    sim.restart("n2")
    sim.inject("n1", "n3", Ping(2))
    sim.run(1.0)
    assert [m for _, _, m in sim.protocol("n3").got] == [Ping(2)]


def test_a_duplicate_also_takes_one_delay_per_hop():
    sim = line_sim(duplicate_rate=1.0)
    sim.inject("n1", "n3", Ping(1))
    sim.run(1.0)
    times = [t for t, _, _ in sim.protocol("n3").got]
    assert len(times) == 2
    assert times == pytest.approx([0.02, 0.02], abs=1e-12)


def test_a_message_to_oneself_is_not_counted_as_a_partition_drop():
    sim = Simulation(Recorder, nodes=3, seed=1)
    try:
        sim.inject("n1", "n1", Ping(1))
    except ConfigError:
        return  # refusing a self-send is acceptable too
    sim.run(1.0)
    assert sim.stats["dropped_partition"] == 0
    assert [m for _, _, m in sim.protocol("n1").got] == [Ping(1)]


# ----------------------------------------------------------------------------- loss, dup, order

N_STAT = 20_000


def test_loss_rate_holds_statistically():
    """Each message is lost independently with loss_rate (5-sigma binomial band)."""
    sim = Simulation(Recorder, nodes=2, seed=11, loss_rate=0.1, trace="off")
    for i in range(N_STAT):
        sim.inject("n1", "n2", Ping(i))
    sim.run(1.0)
    seqs = sim.protocol("n2").seqs_from("n1")
    lo, hi = binomial_band(N_STAT, 0.9)
    assert lo <= len(seqs) <= hi
    assert len(set(seqs)) == len(seqs)  # loss never duplicates
    assert sim.stats["dropped_loss"] == N_STAT - len(seqs)
    assert sim.stats["delivered"] == len(seqs)


def test_duplicate_rate_holds_statistically():
    """Each message is duplicated independently with duplicate_rate (5-sigma band)."""
    sim = Simulation(Recorder, nodes=2, seed=12, duplicate_rate=0.2, trace="off")
    for i in range(N_STAT):
        sim.inject("n1", "n2", Ping(i))
    sim.run(1.0)
    copies = Counter(sim.protocol("n2").seqs_from("n1"))
    assert set(copies) == set(range(N_STAT))  # nothing lost
    assert set(copies.values()) == {1, 2}
    doubled = sum(1 for c in copies.values() if c == 2)
    lo, hi = binomial_band(N_STAT, 0.2)
    assert lo <= doubled <= hi
    assert sim.stats["duplicated"] == doubled


def test_loss_and_duplication_can_be_changed_at_runtime():
    sim = Simulation(Recorder, nodes=2, seed=13, trace="off")
    for i in range(1000):
        sim.inject("n1", "n2", Ping(i))
    sim.network.loss_rate = 1.0
    for i in range(1000, 2000):
        sim.inject("n1", "n2", Ping(i))
    sim.network.loss_rate = 0.0
    sim.network.duplicate_rate = 1.0
    for i in range(2000, 3000):
        sim.inject("n1", "n2", Ping(i))
    sim.run(1.0)
    copies = Counter(sim.protocol("n2").seqs_from("n1"))
    assert all(copies[i] == 1 for i in range(1000))
    assert all(copies[i] == 0 for i in range(1000, 2000))
    assert all(copies[i] == 2 for i in range(2000, 3000))


def send_spread(sim: Simulation, n: int, every: float) -> None:
    for i in range(n):
        sim.call_at(i * every, lambda i=i: sim.inject("n1", "n2", Ping(i)))


def test_without_reorder_each_link_is_fifo():
    """reorder=0: per-link FIFO order (like TCP), even with delays much wider than the gaps."""
    sim = Simulation(Recorder, nodes=2, seed=14, delay_min=0.001, delay_max=0.05, trace="off")
    send_spread(sim, 2000, every=0.0005)
    sim.run(5.0)
    assert sim.protocol("n2").seqs_from("n1") == list(range(2000))


def test_with_reorder_some_messages_overtake_others():
    sim = Simulation(
        Recorder, nodes=2, seed=14, delay_min=0.001, delay_max=0.05, reorder=0.1, trace="off"
    )
    send_spread(sim, 2000, every=0.0005)
    sim.run(10.0)
    seqs = sim.protocol("n2").seqs_from("n1")
    assert sorted(seqs) == list(range(2000))  # reordered, not lost
    inversions = sum(1 for a, b in itertools.pairwise(seqs) if a > b)
    assert inversions >= 50


def test_delays_stay_within_delay_min_and_delay_max():
    sim = Simulation(Recorder, nodes=2, seed=15, delay_min=0.02, delay_max=0.03, trace="off")
    for i in range(500):
        sim.call_at(i * 0.1, lambda i=i: sim.inject("n1", "n2", Ping(i)))
    sim.run(60.0)
    got = sim.protocol("n2").got
    assert len(got) == 500
    for t, _, m in got:
        assert 0.02 - 1e-9 <= t - m.seq * 0.1 <= 0.03 + 1e-9


# ----------------------------------------------------------------------------- crash, restart


def test_a_crashed_node_receives_nothing_and_drops_count_as_down():
    sim = Simulation(Recorder, nodes=3, seed=1)
    sim.crash("n2")
    assert sim.protocol("n2") is None
    assert not sim.is_up("n2")
    assert sim.status("n2") == {"id": "n2", "up": False}
    assert sim.up_nodes() == ["n1", "n3"]
    for i in range(10):
        sim.inject("n1", "n2", Ping(i))
    sim.run(1.0)
    assert sim.stats["dropped_down"] == 10
    assert sim.stats["delivered"] == 0
    sim.restart("n2")
    assert sim.protocol("n2").got == []  # nothing was queued for the new incarnation


def test_a_crashed_node_sends_nothing_and_others_keep_talking():
    sim = Simulation(Prober, nodes=3, seed=2)
    sim.run(0.2)
    sim.crash("n3")
    before = received_counts_up(sim)
    down = sim.stats["dropped_down"]
    sim.run(0.5)
    after = received_counts_up(sim)
    assert after[("n1", "n3")] == before[("n1", "n3")]
    assert after[("n2", "n3")] == before[("n2", "n3")]
    assert after[("n1", "n2")] - before[("n1", "n2")] >= 45
    assert sim.stats["dropped_down"] - down >= 2 * 45  # probes sent to n3


def received_counts_up(sim: Simulation) -> dict[tuple[str, str], int]:
    return {
        (dst, src): sim.protocol(dst).received[src]
        for dst in sim.up_nodes()
        for src in sim.nodes
        if src != dst
    }


def write_then_crash(lose_unsynced: bool | None, **options: Any) -> StoredState:
    sim = Simulation(Scripted, nodes=2, seed=1, **options)
    sim.client_request("n1", ("put", "term", 3, True))
    sim.client_request("n1", ("append", 1, ("a", "b"), True))
    sim.client_request("n1", ("put", "voted_for", "n2", False))
    sim.client_request("n1", ("append", 3, ("c",), False))
    first = sim.protocol("n1")
    if lose_unsynced is None:
        sim.crash("n1")
    else:
        sim.crash("n1", lose_unsynced=lose_unsynced)
    sim.restart("n1")
    proto = sim.protocol("n1")
    assert proto is not first  # volatile state is gone: a fresh protocol object
    assert proto.recovered is not None and not proto.started
    return proto.recovered


def test_restart_hands_durable_storage_to_on_recover():
    """A crash loses volatile state; on_recover gets everything stored."""
    stored = write_then_crash(lose_unsynced=False)
    assert stored.hard == {"term": 3, "voted_for": "n2"}
    assert stored.log == ["a", "b", "c"]


def test_restart_after_a_lossy_crash_has_lost_the_unsynced_writes():
    stored = write_then_crash(lose_unsynced=True)
    assert stored.hard == {"term": 3}
    assert stored.log == ["a", "b"]


def test_lose_unsynced_on_crash_is_the_simulation_default_when_set():
    assert write_then_crash(None, lose_unsynced_on_crash=True).hard == {"term": 3}
    assert write_then_crash(None).hard == {"term": 3, "voted_for": "n2"}


def test_crash_and_restart_are_idempotent():
    sim = Simulation(Scripted, nodes=2, seed=1)
    live = sim.protocol("n1")
    sim.restart("n1")  # already up: nothing happens
    assert sim.protocol("n1") is live
    sim.crash("n1")
    sim.crash("n1")
    sim.restart("n1")
    assert sim.is_up("n1")


def test_client_requests_get_replies_and_crashed_nodes_answer_down():
    sim = Simulation("heartbeat", nodes=3, seed=1)
    seen = []
    rid = sim.client_request("n1", ("get", "x"), callback=lambda node, res: seen.append(res))
    assert sim.replies[rid][0] == "n1"
    assert sim.replies[rid][1]["error"] == "unsupported"
    assert seen == [sim.replies[rid][1]]
    sim.crash("n2")
    rid2 = sim.client_request("n2", ("get", "x"))
    assert rid2 > rid
    assert sim.replies[rid2] == ("n2", {"error": "down", "node": "n2"})


# ----------------------------------------------------------------------------- omission


def test_omission_drops_about_half_of_a_nodes_sends_and_receives():
    """Definition 3.1, omission: the node drops a fraction of what it sends and receives."""
    sim = Simulation(Recorder, nodes=3, seed=21, trace="off")
    sim.set_omission("n1", 0.5)
    n = 4000
    for i in range(n):
        sim.inject("n1", "n2", Ping(i))  # n1 sends
        sim.inject("n2", "n1", Ping(i))  # n1 receives
        sim.inject("n2", "n3", Ping(i))  # n1 not involved
    sim.run(1.0)
    sent_ok = len(sim.protocol("n2").seqs_from("n1"))
    received_ok = len(sim.protocol("n1").seqs_from("n2"))
    lo, hi = binomial_band(n, 0.5)
    assert lo <= sent_ok <= hi
    assert lo <= received_ok <= hi
    assert len(sim.protocol("n3").seqs_from("n2")) == n
    assert sim.stats["dropped_omission"] == (n - sent_ok) + (n - received_ok)


def test_omission_send_and_receive_rates_are_separate():
    sim = Simulation(Recorder, nodes=2, seed=22, trace="off")
    sim.set_omission("n1", send=1.0, receive=0.0)
    for i in range(100):
        sim.inject("n1", "n2", Ping(i))
        sim.inject("n2", "n1", Ping(i))
    sim.run(1.0)
    assert sim.protocol("n2").got == []
    assert len(sim.protocol("n1").got) == 100
    sim.set_omission("n1", 0.0)
    sim.inject("n1", "n2", Ping(0))
    sim.run(1.0)
    assert len(sim.protocol("n2").got) == 1


# ----------------------------------------------------------------------------- bad input


def fresh() -> Simulation:
    return Simulation("heartbeat", nodes=5, seed=1)


BAD_CALLS = {
    "unknown protocol": lambda: Simulation("no-such-protocol"),
    "protocol not a class or name": lambda: Simulation(42),
    "nodes=0": lambda: Simulation("heartbeat", nodes=0),
    "nodes=-3": lambda: Simulation("heartbeat", nodes=-3),
    "nodes=2.5": lambda: Simulation("heartbeat", nodes=2.5),
    "nodes='5'": lambda: Simulation("heartbeat", nodes="5"),
    "nodes=True": lambda: Simulation("heartbeat", nodes=True),
    "nodes=[]": lambda: Simulation("heartbeat", nodes=[]),
    "duplicate ids": lambda: Simulation("heartbeat", nodes=["a", "a"]),
    "seed='1'": lambda: Simulation("heartbeat", seed="1"),
    "unknown protocol option": lambda: Simulation("heartbeat", bogus=1),
    "option to an optionless protocol": lambda: Simulation(Recorder, bogus=1),
    "topology lacks nodes": lambda: Simulation("heartbeat", nodes=3, topology=Topology(["n1"])),
    "trace mode": lambda: Simulation("heartbeat", trace="verbose"),
    "loss_rate=1.5": lambda: Simulation("heartbeat", loss_rate=1.5),
    "duplicate_rate=-0.1": lambda: Simulation("heartbeat", duplicate_rate=-0.1),
    "reorder=2": lambda: Simulation("heartbeat", reorder=2),
    "loss_rate=nan": lambda: Simulation("heartbeat", loss_rate=float("nan")),
    "delay_min=-0.1": lambda: Simulation("heartbeat", delay_min=-0.1),
    "delay_max=-1": lambda: Simulation("heartbeat", delay_max=-1),
    "delay_max=inf": lambda: Simulation("heartbeat", delay_max=float("inf")),
    "network.loss_rate=1.5": lambda: setattr(fresh().network, "loss_rate", 1.5),
    "network.duplicate_rate=-0.1": lambda: setattr(fresh().network, "duplicate_rate", -0.1),
    "network.reorder=-1": lambda: setattr(fresh().network, "reorder", -1),
    "network.loss_rate='x'": lambda: setattr(fresh().network, "loss_rate", "x"),
    "network.delay_min=-1": lambda: setattr(fresh().network, "delay_min", -1),
    "network.delay_max<delay_min": lambda: setattr(fresh().network, "delay_max", 0.0005),
    "network.unknown": lambda: setattr(fresh().network, "jitter", 0.1),
    "run(-1)": lambda: fresh().run(-1),
    "run('1')": lambda: fresh().run("1"),
    "run_until timeout -1": lambda: fresh().run_until(lambda: False, -1),
    "crash unknown": lambda: fresh().crash("n9"),
    "restart unknown": lambda: fresh().restart("n9"),
    "status unknown": lambda: fresh().status("n9"),
    "protocol unknown": lambda: fresh().protocol("n9"),
    "disconnect unknown": lambda: fresh().disconnect("n9"),
    "reconnect unknown": lambda: fresh().reconnect("n9"),
    "set_omission unknown": lambda: fresh().set_omission("n9", 0.5),
    "set_omission rate 2": lambda: fresh().set_omission("n1", 2.0),
    "set_omission receive -1": lambda: fresh().set_omission("n1", 0.1, -1),
    "inject unknown src": lambda: fresh().inject("n9", "n1", Ping(1)),
    "inject unknown dst": lambda: fresh().inject("n1", "n9", Ping(1)),
    "client_request unknown": lambda: fresh().client_request("n9", "x"),
    "partition unknown node": lambda: fresh().partition(["n1", "n9"], ["n2"]),
    "partition overlapping groups": lambda: fresh().partition(["n1", "n2"], ["n2", "n3"]),
    "partition no groups": lambda: fresh().partition(),
    "call_at in the past": lambda: _advanced().call_at(0.5, lambda: None),
}


def _advanced() -> Simulation:
    sim = fresh()
    sim.run(1.0)
    return sim


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_input_raises_config_error_which_is_a_value_error(call):
    """Simulator rule 5: misuse raises ConfigError (also a ValueError) at once."""
    with pytest.raises(ConfigError) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert str(info.value)


def test_a_refused_network_setting_leaves_the_old_value():
    sim = Simulation("heartbeat", nodes=3, loss_rate=0.2)
    with pytest.raises(ConfigError):
        sim.network.loss_rate = 1.5
    assert sim.network.loss_rate == 0.2
    sim.network.loss_rate = 1  # ints are fine
    assert sim.network.loss_rate == 1.0


def test_constructor_refuses_delay_max_below_delay_min():
    with pytest.raises(ConfigError):
        Simulation("heartbeat", nodes=3, delay_min=0.5, delay_max=0.1)


def test_failed_partition_cuts_nothing():
    sim = fresh()
    with pytest.raises(ConfigError):
        sim.partition(["n1"], ["n9"])
    assert sim.topology.cut_links == frozenset()


# ----------------------------------------------------------------------------- timers


def test_set_timer_replaces_a_pending_timer_of_the_same_name():
    sim = Simulation(Scripted, nodes=1, seed=1)
    sim.client_request("n1", ("set", "t", 1.0))
    sim.call_at(0.5, lambda: sim.client_request("n1", ("set", "t", 1.0)))
    sim.run(3.0)
    assert sim.protocol("n1").fired == [("t", 1.5)]
    assert sim.stats["timers"] == 1


def test_timers_of_different_names_are_independent_and_fire_in_time_order():
    sim = Simulation(Scripted, nodes=1, seed=1)
    sim.client_request("n1", ("set", "late", 2.0))
    sim.client_request("n1", ("set", "early", 1.0))
    sim.client_request("n1", ("set", "now", 0.0))
    sim.run(3.0)
    assert sim.protocol("n1").fired == [("now", 0.0), ("early", 1.0), ("late", 2.0)]


def test_cancel_timer_cancels_only_that_timer():
    sim = Simulation(Scripted, nodes=1, seed=1)
    sim.client_request("n1", ("set", "a", 1.0))
    sim.client_request("n1", ("set", "b", 1.0))
    sim.call_at(0.5, lambda: sim.client_request("n1", ("cancel", "a")))
    sim.call_at(0.6, lambda: sim.client_request("n1", ("cancel", "never-set")))
    sim.run(3.0)
    assert sim.protocol("n1").fired == [("b", 1.0)]


def test_crash_cancels_all_timers():
    sim = Simulation(Scripted, nodes=2, seed=1)
    sim.client_request("n1", ("set", "a", 1.0))
    sim.client_request("n1", ("set", "b", 2.0))
    sim.client_request("n2", ("set", "a", 1.0))
    sim.call_at(0.5, lambda: sim.crash("n1"))
    sim.call_at(0.6, lambda: sim.restart("n1"))
    sim.run(3.0)
    assert sim.protocol("n1").fired == []
    assert sim.protocol("n2").fired == [("a", 1.0)]
    assert sim.stats["timers"] == 1


def test_negative_timer_delay_is_refused():
    sim = Simulation(Scripted, nodes=1, seed=1)
    with pytest.raises(ConfigError):
        sim.client_request("n1", ("set", "t", -1.0))


def test_call_at_runs_at_exactly_that_virtual_time():
    sim = Simulation(Recorder, nodes=1, seed=1)
    seen = []
    sim.call_at(0.25, lambda: seen.append(sim.now))
    sim.call_after(0.5, lambda: seen.append(sim.now))
    sim.run(1.0)
    assert seen == [0.25, 0.5]
    assert sim.now == 1.0


# ----------------------------------------------------------------------------- run, run_until


def test_run_advances_virtual_time_by_exactly_the_duration():
    sim = Simulation("heartbeat", nodes=3, seed=1)
    sim.run(0.123)
    assert sim.now == 0.123
    sim.run(0)
    assert sim.now == 0.123
    sim.run(1)
    assert sim.now == 0.123 + 1


def test_run_until_returns_true_at_the_event_that_makes_the_predicate_hold():
    sim = Simulation("heartbeat", nodes=3, seed=1)
    flags = []
    sim.call_at(0.3, lambda: flags.append("first"))
    sim.call_at(0.3000001, lambda: flags.append("second"))
    assert sim.run_until(lambda: bool(flags), timeout=5.0) is True
    assert sim.now == 0.3  # not advanced past the event
    assert flags == ["first"]  # later events not processed


def test_run_until_accepts_a_predicate_of_the_simulation():
    sim = Simulation(Recorder, nodes=2, seed=1, delay_min=0.01, delay_max=0.01)
    sim.inject("n1", "n2", Ping(1))
    assert sim.run_until(lambda s: len(s.protocol("n2").got) == 1, timeout=1.0) is True
    assert sim.now == pytest.approx(0.01, abs=1e-12)


def test_run_until_returns_true_at_once_when_the_predicate_already_holds():
    sim = Simulation("heartbeat", nodes=3, seed=1)
    sim.run(0.5)
    events = sim.stats["events"]
    assert sim.run_until(lambda: True, timeout=10.0) is True
    assert sim.now == 0.5
    assert sim.stats["events"] == events


def test_run_until_returns_false_after_exactly_the_timeout():
    sim = Simulation("heartbeat", nodes=3, seed=1)
    sim.run(0.123)
    start = sim.now
    assert sim.run_until(lambda: False, timeout=2.0) is False
    assert sim.now == start + 2.0
    quiet = Simulation(Recorder, nodes=2, seed=1)  # no events at all
    assert quiet.run_until(lambda: False, timeout=1.5) is False
    assert quiet.now == 1.5


# ----------------------------------------------------------------------------- heartbeat


HB_INTERVAL, HB_TIMEOUT, HB_DELAY_MAX = 0.05, 0.2, 0.005


def heartbeat_sim(seed: int) -> Simulation:
    return Simulation(
        "heartbeat",
        nodes=5,
        seed=seed,
        interval_s=HB_INTERVAL,
        timeout_s=HB_TIMEOUT,
        delay_max=HB_DELAY_MAX,
    )


def everyone_suspects(sim: Simulation, peer: str) -> bool:
    return all(peer in sim.status(n)["suspected"] for n in sim.up_nodes())


@pytest.mark.parametrize("crash_at", [1.0 + k * 0.013 for k in range(8)])
def test_heartbeat_suspects_a_crashed_peer_within_the_timeout(crash_at):
    """Failure detector: a crashed peer is suspected by every correct node once it has been
    silent for timeout_s; suspicion is checked every timeout_s / 2, so it comes at most one
    check period (plus one message delay) after the timeout, and never before it."""
    sim = heartbeat_sim(seed=4)
    sim.run(crash_at)
    assert all(sim.status(n)["suspected"] == [] for n in FIVE)
    sim.crash("n3")
    assert sim.run_until(lambda: everyone_suspects(sim, "n3"), timeout=1.0)
    elapsed = sim.now - crash_at
    assert HB_TIMEOUT - HB_INTERVAL < elapsed <= HB_TIMEOUT + HB_TIMEOUT / 2 + HB_DELAY_MAX
    assert all(sim.status(n)["suspected"] == ["n3"] for n in sim.up_nodes())


def test_heartbeat_trusts_a_restarted_peer_again():
    """After a restart the peer's first heartbeat (sent on recovery) clears the suspicion."""
    sim = heartbeat_sim(seed=4)
    sim.run(1.0)
    sim.crash("n3")
    sim.run(1.0)
    assert everyone_suspects(sim, "n3")
    assert sim.status("n3") == {"id": "n3", "up": False}
    sim.restart("n3")
    t1 = sim.now
    assert sim.run_until(
        lambda: all(sim.status(n)["suspected"] == [] for n in FIVE if n != "n3"), timeout=1.0
    )
    assert sim.now - t1 <= HB_DELAY_MAX
    assert sim.status("n3")["epoch"] == 1  # the restart count came from durable storage
    sim.run(2.0)
    assert all(sim.status(n)["suspected"] == [] for n in FIVE)


def test_heartbeat_suspects_across_a_partition_and_trusts_after_heal():
    sim = Simulation("heartbeat", nodes=5, seed=6)
    sim.run(0.5)
    sim.partition(["n1", "n2"], ["n3", "n4", "n5"])
    sim.run(1.0)
    assert sim.status("n1")["suspected"] == ["n3", "n4", "n5"]
    assert sim.status("n4")["suspected"] == ["n1", "n2"]
    sim.heal()
    sim.run(0.5)
    assert all(sim.status(n)["suspected"] == [] for n in FIVE)


def test_heartbeat_options_reach_the_protocol():
    sim = Simulation("heartbeat", nodes=3, seed=1, interval_s=0.1)
    sim.run(1.0)
    sent = sim.status("n1")["heartbeats_sent"]
    assert 10 <= sent <= 11  # one at start, then one every 0.1 s
