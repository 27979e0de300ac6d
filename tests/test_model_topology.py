"""The communication network C = (N, E) (Definition 1.3) and its paths (Theorem 1.1)."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pytest

from quorumkit.errors import ConfigError
from quorumkit.model import PARTITION_SHAPES, Partition, Topology, link

FIVE = ["n1", "n2", "n3", "n4", "n5"]


def L(a: str, b: str) -> frozenset[str]:
    return frozenset((a, b))


def all_pairs(nodes) -> set[frozenset[str]]:
    return {L(a, b) for a, b in itertools.combinations(nodes, 2)}


def across(*groups) -> set[frozenset[str]]:
    """Every pair of nodes taken from two different groups."""
    out = set()
    for g1, g2 in itertools.combinations(groups, 2):
        out |= {L(a, b) for a in g1 for b in g2}
    return out


def check_cut_exactly(t: Topology, part: Partition, expected_cut: set[frozenset[str]]):
    """The partition cuts exactly ``expected_cut``; applying it leaves every other link up."""
    before = t.links()
    assert set(part.cut) == expected_cut
    t.cut(part.cut)
    assert t.links() == before - expected_cut
    assert set(t.cut_links) == expected_cut
    for lk in before:
        a, b = sorted(lk)
        assert t.has_link(a, b) == (lk not in expected_cut)


# ----------------------------------------------------------------------------- nodes and links


def test_link_is_an_unordered_pair_of_distinct_nodes():
    """Definition 1.3: E holds undirected links between two nodes."""
    assert link("a", "b") == link("b", "a") == frozenset({"a", "b"})
    with pytest.raises(ConfigError):
        link("a", "a")


def test_add_and_remove_nodes_and_links():
    """Definition 1.3: C = (N, E); nodes and links can be added and removed."""
    t = Topology(["a", "b"])
    v0 = t.version
    t.add_node("c")
    assert sorted(t.nodes()) == ["a", "b", "c"]
    assert "c" in t and "z" not in t
    t.add_link("a", "b")
    t.add_link("b", "c")
    assert t.links() == {L("a", "b"), L("b", "c")}
    assert t.has_link("b", "a") and not t.has_link("a", "c")
    assert t.neighbors("b") == {"a", "c"}
    t.remove_link("a", "b")
    assert t.links() == {L("b", "c")}
    assert t.neighbors("a") == set()
    t.remove_node("c")
    assert sorted(t.nodes()) == ["a", "b"]
    assert t.links() == set()
    assert t.version > v0


def test_every_mutation_changes_the_version():
    t = Topology(["a", "b", "c"])
    seen = {t.version}
    for mutate in (
        lambda: t.add_node("d"),
        lambda: t.add_link("a", "b"),
        lambda: t.cut([("a", "b")]),
        lambda: t.restore([("a", "b")]),
        lambda: t.isolate("a"),
        lambda: t.heal(),
        lambda: t.remove_link("a", "b"),
        lambda: t.remove_node("d"),
    ):
        mutate()
        assert t.version not in seen
        seen.add(t.version)


def test_unknown_nodes_and_self_links_are_config_errors():
    t = Topology.full(["a", "b"])
    for bad in (
        lambda: t.add_link("a", "zz"),
        lambda: t.remove_link("zz", "a"),
        lambda: t.remove_node("zz"),
        lambda: t.neighbors("zz"),
        lambda: t.isolate("zz"),
        lambda: t.cut([("a", "zz")]),
        lambda: t.path("a", "zz"),
        lambda: t.add_link("a", "a"),
    ):
        with pytest.raises(ConfigError):
            bad()


def test_constructors_build_the_named_graphs():
    assert Topology.full(FIVE).links() == all_pairs(FIVE)
    assert Topology.line(FIVE).links() == {L(FIVE[i], FIVE[i + 1]) for i in range(4)}
    assert Topology.ring_of(FIVE).links() == {L(FIVE[i], FIVE[(i + 1) % 5]) for i in range(5)}
    assert Topology.star("h", ["a", "b"]).links() == {L("h", "a"), L("h", "b")}
    assert Topology.from_graph(nx.path_graph(["x", "y"])).links() == {L("x", "y")}


def test_copy_is_independent():
    t = Topology.full(["a", "b", "c"])
    t.cut([("a", "b")])
    c = t.copy()
    assert c.links() == t.links() and c.cut_links == t.cut_links
    c.heal()
    c.remove_node("c")
    assert t.cut_links == {L("a", "b")}
    assert "c" in t


def test_removing_a_node_forgets_its_cut_links():
    t = Topology.full(["a", "b", "c"])
    t.isolate("c")
    t.remove_node("c")
    assert t.cut_links == frozenset()


# ----------------------------------------------------------------------------- cutting


def test_cut_restore_heal_isolate():
    """Cut links stay in the graph but carry nothing until restored."""
    t = Topology.full(FIVE)
    t.cut([("n1", "n2"), ("n3", "n4")])
    assert t.cut_links == {L("n1", "n2"), L("n3", "n4")}
    assert not t.has_link("n2", "n1")
    assert t.graph.has_edge("n1", "n2")  # the link exists, it is only cut
    t.restore([("n2", "n1")])
    assert t.cut_links == {L("n3", "n4")}
    cut = t.isolate("n5")
    assert cut == {L("n5", x) for x in FIVE[:4]}
    assert t.neighbors("n5") == set()
    t.heal()
    assert t.cut_links == frozenset()
    assert t.links() == all_pairs(FIVE)


def test_cutting_a_link_that_does_not_exist_is_ignored():
    """Topology.cut: 'links that do not exist are ignored'."""
    t = Topology(["a", "b", "c"])
    t.cut([("a", "b")])
    assert t.cut_links == frozenset()
    t.add_link("a", "b")
    assert t.has_link("a", "b")


# ----------------------------------------------------------------------------- reachability


def test_is_connected_follows_uncut_links():
    """Theorem 1.1: C connected iff every two nodes have a path over uncut links."""
    t = Topology.line(["a", "b", "c"])
    assert t.is_connected()
    t.cut([("a", "b")])
    assert not t.is_connected()
    t.heal()
    assert t.is_connected()
    t.add_node("lonely")
    assert not t.is_connected()
    assert Topology().is_connected()
    assert Topology(["only"]).is_connected()


def test_components_largest_first_ties_by_smallest_id():
    t = Topology.full(["a", "b", "c", "d", "e", "f"])
    t.cut(t.links_between([["e", "f"], ["c", "d"]]))
    assert t.components() == [{"a", "b"}, {"c", "d"}, {"e", "f"}]
    t.heal()
    t.isolate("a")
    assert t.components() == [{"b", "c", "d", "e", "f"}, {"a"}]


def test_path_is_a_shortest_path_over_uncut_links():
    """Theorem 1.1: in a connected C every two nodes have a path; it is a shortest one."""
    t = Topology.ring_of(["a", "b", "c", "d", "e", "f"])
    assert t.path("a", "a") == ["a"]
    assert t.path("a", "b") == ["a", "b"]
    assert t.path("a", "c") == ["a", "b", "c"]
    assert t.path("a", "e") == ["a", "f", "e"]
    t.cut([("a", "f")])
    assert t.path("a", "e") == ["a", "b", "c", "d", "e"]
    t.cut([("c", "d")])
    assert t.path("a", "e") is None


def test_path_breaks_ties_lexicographically_and_deterministically():
    """Among shortest paths, the lexicographically smallest one, whatever the insertion order."""
    rng = random.Random(5)
    for trial in range(30):
        g = nx.gnp_random_graph(9, 0.35, seed=trial)
        names = {i: f"v{i}" for i in g.nodes}
        edges = [(names[a], names[b]) for a, b in g.edges]
        rng.shuffle(edges)
        shuffled = nx.Graph()
        shuffled.add_nodes_from(rng.sample(list(names.values()), len(names)))
        shuffled.add_edges_from(edges)
        t = Topology.from_graph(shuffled)
        for a, b in itertools.permutations(sorted(names.values()), 2):
            got = t.path(a, b)
            if nx.has_path(shuffled, a, b):
                assert got == min(nx.all_shortest_paths(shuffled, a, b))
            else:
                assert got is None


def test_path_avoids_relays_but_not_endpoints():
    t = Topology.full(["a", "b", "c"])
    t.cut([("a", "c")])
    assert t.path("a", "c") == ["a", "b", "c"]
    assert t.path("a", "c", avoid=["b"]) is None
    assert t.path("a", "b", avoid=["a", "b"]) == ["a", "b"]
    g = Topology.from_graph(nx.Graph([("a", "b"), ("b", "d"), ("a", "c"), ("c", "d")]))
    assert g.path("a", "d") == ["a", "b", "d"]
    assert g.path("a", "d", avoid={"b"}) == ["a", "c", "d"]


# ----------------------------------------------------------------------------- links_between


def test_links_between_groups_and_the_implicit_rest_group():
    """Unnamed nodes form one extra group: [[n1, n2]] separates n1, n2 from everybody else."""
    t = Topology.full(FIVE)
    assert t.links_between([["n1", "n2"], ["n3", "n4", "n5"]]) == across(
        ["n1", "n2"], ["n3", "n4", "n5"]
    )
    assert t.links_between([["n1", "n2"]]) == across(["n1", "n2"], ["n3", "n4", "n5"])
    assert t.links_between([["n1"], ["n2"]]) == across(["n1"], ["n2"], ["n3", "n4", "n5"])
    assert t.links_between([FIVE]) == frozenset()
    assert t.links_between([]) == frozenset()


def test_links_between_returns_only_existing_links():
    t = Topology.line(FIVE)
    assert t.links_between([["n1", "n3", "n5"]]) == {
        L("n1", "n2"),
        L("n2", "n3"),
        L("n3", "n4"),
        L("n4", "n5"),
    }
    assert t.links_between([["n1", "n2"]]) == {L("n2", "n3")}


def test_links_between_refuses_overlapping_groups_and_unknown_nodes():
    t = Topology.full(FIVE)
    with pytest.raises(ConfigError, match="two partition groups"):
        t.links_between([["n1", "n2"], ["n2", "n3"]])
    with pytest.raises(ConfigError, match="unknown node"):
        t.links_between([["n1", "n9"]])


# ----------------------------------------------------------------------------- partition shapes


@pytest.mark.parametrize("shape", ["halves", "majority-minority"])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7])
def test_halves_cut_exactly_the_links_between_the_two_halves(shape, n):
    nodes = [f"n{i}" for i in range(1, n + 1)]
    t = Topology.full(nodes)
    part = t.partition_shape(shape)
    small, big = part.groups
    assert (len(small), len(big)) == (n // 2, n - n // 2)
    assert set(small) | set(big) == set(nodes) and not set(small) & set(big)
    check_cut_exactly(t, part, across(small, big))
    assert t.components() == sorted([set(small), set(big)], key=lambda c: (-len(c), min(c)))


def test_majority_minority_on_five_is_three_against_two():
    t = Topology.full(FIVE)
    part = t.partition_shape("majority-minority")
    assert part.groups == (("n1", "n2"), ("n3", "n4", "n5"))
    check_cut_exactly(t, part, across(["n1", "n2"], ["n3", "n4", "n5"]))


def test_isolate_cuts_exactly_the_links_of_one_node():
    t = Topology.full(FIVE)
    part = t.partition_shape("isolate", node="n3")
    assert part.groups == (("n3",), ("n1", "n2", "n4", "n5"))
    check_cut_exactly(t, part, {L("n3", x) for x in FIVE if x != "n3"})
    assert t.components() == [{"n1", "n2", "n4", "n5"}, {"n3"}]
    default = Topology.full(FIVE).partition_shape("isolate")
    assert default.groups[0] == ("n1",)


def test_bridge_keeps_one_node_linked_to_both_sides():
    t = Topology.full(FIVE)
    part = t.partition_shape("bridge")
    left, (bridge,), right = part.groups
    assert (left, bridge, right) == (("n1", "n2"), "n3", ("n4", "n5"))
    check_cut_exactly(t, part, across(left, right))
    assert t.is_connected()  # through the bridge only
    assert t.path("n1", "n5") == ["n1", "n3", "n5"]
    assert t.neighbors("n3") == {"n1", "n2", "n4", "n5"}


def test_ring_keeps_only_links_to_ring_neighbours():
    """Majorities ring: each node keeps its two ring neighbours, so it sees its own majority."""
    t = Topology.full(FIVE)
    part = t.partition_shape("ring")
    ring = {L(FIVE[i], FIVE[(i + 1) % 5]) for i in range(5)}
    check_cut_exactly(t, part, all_pairs(FIVE) - ring)
    assert part.groups == ()
    for i, node in enumerate(FIVE):
        assert t.neighbors(node) == {FIVE[i - 1], FIVE[(i + 1) % 5]}


def test_shapes_on_a_sparse_graph_cut_only_existing_links():
    t = Topology.line(FIVE)
    for shape in PARTITION_SHAPES:
        part = t.partition_shape(shape)
        assert part.cut <= t.links()


def test_shapes_with_an_rng_are_deterministic_and_cover_all_nodes():
    for shape in ("halves", "majority-minority", "isolate", "bridge"):
        a = Topology.full(FIVE).partition_shape(shape, rng=random.Random(3))
        b = Topology.full(FIVE).partition_shape(shape, rng=random.Random(3))
        assert a == b
        assert sorted(itertools.chain.from_iterable(a.groups)) == FIVE
    a = Topology.full(FIVE).partition_shape("ring", rng=random.Random(3))
    assert a == Topology.full(FIVE).partition_shape("ring", rng=random.Random(3))
    assert len(a.cut) == 10 - 5


def test_partition_describe_names_the_groups():
    part = Topology.full(FIVE).partition_shape("halves")
    assert part.describe() == "halves: n1,n2 | n3,n4,n5"
    assert "5 links cut" in Topology.full(FIVE).partition_shape("ring").describe()


def test_partition_shape_computes_without_cutting():
    t = Topology.full(FIVE)
    t.partition_shape("halves")
    assert t.cut_links == frozenset()


def test_unknown_shape_or_node_or_too_few_nodes_is_a_config_error():
    t = Topology.full(FIVE)
    with pytest.raises(ConfigError, match="unknown partition shape"):
        t.partition_shape("triangle")
    with pytest.raises(ConfigError, match="unknown node"):
        t.partition_shape("isolate", node="n9")
    with pytest.raises(ConfigError):
        Topology(["a"]).partition_shape("halves")
    with pytest.raises(ConfigError):
        Topology.full(["a", "b"]).partition_shape("bridge")
    with pytest.raises(ConfigError):
        Topology.full(["a", "b", "c"]).partition_shape("ring")
