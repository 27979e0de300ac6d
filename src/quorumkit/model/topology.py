"""Definition 1.3: the communication network C = (N, E), on a networkx graph.

A :class:`Topology` holds the links that exist (the graph) and the links that are currently
*cut* (by a partition or a disconnect). Adjacent nodes talk over their link, and not at all
while it is cut; between non-adjacent nodes messages travel along a shortest path of uncut
links (Theorem 1.1: if C is connected, every two nodes have a path). See :meth:`Topology.hops`. ``version`` changes on every mutation, so drivers can cache routes.

Named partition shapes (:meth:`Topology.partition_shape`) return the set of links a partition of
that shape cuts; nothing else is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx

from quorumkit.errors import ConfigError

if TYPE_CHECKING:
    import random

Link = frozenset[str]

PARTITION_SHAPES = ("halves", "majority-minority", "isolate", "bridge", "ring")


def link(a: str, b: str) -> Link:
    if a == b:
        raise ConfigError(f"a link joins two different nodes, got {a!r} twice")
    return frozenset((a, b))


@dataclass(frozen=True)
class Partition:
    """A named partition: the groups it separates (when it has groups) and the links it cuts."""

    shape: str
    groups: tuple[tuple[str, ...], ...]
    cut: frozenset[Link]

    def describe(self) -> str:
        if self.groups:
            return f"{self.shape}: " + " | ".join(",".join(g) for g in self.groups)
        return f"{self.shape}: {len(self.cut)} links cut"


class Topology:
    """The communication graph, with cut links tracked separately from existing links."""

    def __init__(self, nodes: Iterable[str] = (), *, graph: nx.Graph | None = None) -> None:
        self._graph: nx.Graph = nx.Graph() if graph is None else nx.Graph(graph)
        for n in nodes:
            self._graph.add_node(n)
        self._cut: set[Link] = set()
        self.version = 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def full(cls, nodes: Sequence[str]) -> Topology:
        """Every pair of nodes linked (the default cluster network)."""
        return cls(graph=nx.complete_graph(list(nodes)))

    @classmethod
    def ring_of(cls, nodes: Sequence[str]) -> Topology:
        g = nx.cycle_graph(list(nodes)) if len(nodes) > 2 else nx.path_graph(list(nodes))
        return cls(graph=g)

    @classmethod
    def line(cls, nodes: Sequence[str]) -> Topology:
        return cls(graph=nx.path_graph(list(nodes)))

    @classmethod
    def star(cls, center: str, leaves: Sequence[str]) -> Topology:
        t = cls([center, *leaves])
        for leaf in leaves:
            t.add_link(center, leaf)
        return t

    @classmethod
    def from_graph(cls, graph: nx.Graph) -> Topology:
        return cls(graph=graph)

    def copy(self) -> Topology:
        t = Topology(graph=self._graph)
        t._cut = set(self._cut)
        return t

    # ------------------------------------------------------------------ nodes and links
    @property
    def graph(self) -> nx.Graph:
        """The graph of existing links (cut links included)."""
        return self._graph

    def nodes(self) -> list[str]:
        return list(self._graph.nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._graph

    def _require(self, *nodes: str) -> None:
        for n in nodes:
            if n not in self._graph:
                known = ", ".join(sorted(map(str, self._graph.nodes))) or "none"
                raise ConfigError(f"unknown node {n!r} (known nodes: {known})")

    def add_node(self, node: str) -> None:
        self._graph.add_node(node)
        self.version += 1

    def remove_node(self, node: str) -> None:
        self._require(node)
        self._graph.remove_node(node)
        self._cut = {lk for lk in self._cut if node not in lk}
        self.version += 1

    def add_link(self, a: str, b: str) -> None:
        self._require(a, b)
        link(a, b)
        self._graph.add_edge(a, b)
        self.version += 1

    def remove_link(self, a: str, b: str) -> None:
        self._require(a, b)
        if self._graph.has_edge(a, b):
            self._graph.remove_edge(a, b)
        self._cut.discard(link(a, b))
        self.version += 1

    def links(self) -> set[Link]:
        """Links that exist and are not cut."""
        return {frozenset(e) for e in self._graph.edges} - self._cut

    def has_link(self, a: str, b: str) -> bool:
        """True when a and b are adjacent and their link is not cut."""
        return self._graph.has_edge(a, b) and link(a, b) not in self._cut

    def neighbors(self, node: str) -> set[str]:
        self._require(node)
        return {m for m in self._graph.neighbors(node) if link(node, m) not in self._cut}

    # ------------------------------------------------------------------ cutting
    @property
    def cut_links(self) -> frozenset[Link]:
        return frozenset(self._cut)

    def cut(self, links: Iterable[Iterable[str]]) -> None:
        """Cut the given links (pairs of nodes); links that do not exist are ignored."""
        new = set()
        for pair in links:
            a, b = tuple(pair)
            self._require(a, b)
            if self._graph.has_edge(a, b):
                new.add(link(a, b))
        self._cut |= new
        self.version += 1

    def restore(self, links: Iterable[Iterable[str]]) -> None:
        for pair in links:
            a, b = tuple(pair)
            self._cut.discard(link(a, b))
        self.version += 1

    def heal(self) -> None:
        """Restore every cut link."""
        self._cut.clear()
        self.version += 1

    def isolate(self, node: str) -> frozenset[Link]:
        """Cut every link of ``node``; returns the links cut."""
        self._require(node)
        links = frozenset(link(node, m) for m in self._graph.neighbors(node))
        self._cut |= links
        self.version += 1
        return links

    def links_between(self, groups: Sequence[Iterable[str]]) -> frozenset[Link]:
        """The existing links that join nodes of different groups.

        Groups must be disjoint and name known nodes; nodes named in no group form one extra
        group of their own (so ``[["n1", "n2"]]`` separates n1, n2 from everybody else).
        """
        seen: dict[str, int] = {}
        for i, group in enumerate(groups):
            for n in group:
                self._require(n)
                if n in seen:
                    raise ConfigError(f"node {n!r} is named in two partition groups")
                seen[n] = i
        rest = len(groups)
        out = set()
        for a, b in self._graph.edges:
            if seen.get(a, rest) != seen.get(b, rest):
                out.add(link(a, b))
        return frozenset(out)

    # ------------------------------------------------------------------ reachability
    def _view(self, avoid: Iterable[str] = ()) -> Any:
        avoid_set = set(avoid)
        return nx.restricted_view(self._graph, avoid_set, [tuple(lk) for lk in self._cut])

    def is_connected(self) -> bool:
        """True when every node can reach every other over uncut links (Theorem 1.1)."""
        if self._graph.number_of_nodes() == 0:
            return True
        return bool(nx.is_connected(self._view()))

    def components(self) -> list[set[str]]:
        """Connected components over uncut links, largest first, ties by smallest node id."""
        comps = [set(c) for c in nx.connected_components(self._view())]
        comps.sort(key=lambda c: (-len(c), min(c)))
        return comps

    def hops(self, a: str, b: str, avoid: Iterable[str] = ()) -> int:
        """How many links a message from a to b crosses; 0 when it cannot get there.

        Nodes that share a link talk over that link only: when it is cut, they cannot talk
        (cluster members do not relay for each other, as hosts behind a firewall rule).
        Nodes that share no link are reached along a shortest path of uncut links whose relays
        are not in ``avoid`` (Theorem 1.1).
        """
        if a == b:
            return 1
        if self._graph.has_edge(a, b):
            return 0 if link(a, b) in self._cut else 1
        found = self.path(a, b, avoid)
        return 0 if found is None else len(found) - 1

    def path(self, a: str, b: str, avoid: Iterable[str] = ()) -> list[str] | None:
        """A shortest path from a to b over uncut links, not through ``avoid`` (as relays),
        or None when there is none. Deterministic: ties go to the lexicographically smallest."""
        self._require(a, b)
        if a == b:
            return [a]
        blocked = set(avoid) - {a, b}
        view = self._view(blocked)
        # breadth-first search with sorted neighbours: deterministic shortest path
        parents: dict[str, str] = {a: a}
        frontier = [a]
        while frontier:
            nxt: list[str] = []
            for u in frontier:
                for v in sorted(view.neighbors(u)):
                    if v not in parents:
                        parents[v] = u
                        if v == b:
                            out = [b]
                            while out[-1] != a:
                                out.append(parents[out[-1]])
                            return out[::-1]
                        nxt.append(v)
            frontier = nxt
        return None

    # ------------------------------------------------------------------ partition shapes
    def partition_shape(
        self,
        shape: str,
        *,
        rng: random.Random | None = None,
        node: str | None = None,
    ) -> Partition:
        """The links a partition of ``shape`` cuts over the current nodes.

        * ``halves``: two halves of sizes floor(n/2) and ceil(n/2).
        * ``majority-minority``: the same split, named for what it is for: the majority side
          can still decide, the minority side cannot.
        * ``isolate``: ``node`` (or a chosen node) alone against the rest.
        * ``bridge``: two halves that cannot talk directly, joined by one node that sees both.
        * ``ring``: every node keeps only the links to its two neighbours on a ring, so each
          node sees a different majority of a 5-node cluster (Jepsen's "majorities ring").

        With ``rng`` the nodes are shuffled first; without, sorted order is used.
        """
        order = sorted(self._graph.nodes)
        if rng is not None:
            rng.shuffle(order)
        n = len(order)
        if n < 2:
            raise ConfigError("a partition needs at least two nodes")
        if shape in ("halves", "majority-minority"):
            k = n // 2
            groups = (tuple(sorted(order[:k])), tuple(sorted(order[k:])))
            return Partition(shape, groups, self.links_between(groups))
        if shape == "isolate":
            target = node if node is not None else order[0]
            self._require(target)
            rest = tuple(sorted(x for x in order if x != target))
            groups = ((target,), rest)
            return Partition(shape, groups, self.links_between(groups))
        if shape == "bridge":
            if n < 3:
                raise ConfigError("a bridge partition needs at least three nodes")
            bridge = order[n // 2]
            left = set(order[: n // 2])
            right = set(order[n // 2 + 1 :])
            cut = frozenset(
                link(a, b)
                for a, b in self._graph.edges
                if (a in left and b in right) or (a in right and b in left)
            )
            trio: tuple[tuple[str, ...], ...] = (
                tuple(sorted(left)),
                (bridge,),
                tuple(sorted(right)),
            )
            return Partition(shape, trio, cut)
        if shape == "ring":
            if n < 4:
                raise ConfigError("a ring partition needs at least four nodes")
            keep = {link(order[i], order[(i + 1) % n]) for i in range(n)}
            cut = frozenset(frozenset(e) for e in self._graph.edges) - keep
            return Partition(shape, (), frozenset(cut))
        raise ConfigError(
            f"unknown partition shape {shape!r} (choose from {', '.join(PARTITION_SHAPES)})"
        )
