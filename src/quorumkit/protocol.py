"""The sans-I/O protocol contract every quorumkit protocol implements.

Rules of this module (DESIGN.md, "The protocol contract"):

1. A :class:`Protocol` instance is the logic of *one* node. It never performs I/O, never reads a
   clock, never sleeps, never starts a thread and never touches the global ``random``: it acts
   only through the :class:`Context` it is handed with each input.
2. Inputs are method calls by a driver (the simulator or the asyncio runtime):
   :meth:`Protocol.on_start`, :meth:`Protocol.on_recover`, :meth:`Protocol.on_message`,
   :meth:`Protocol.on_timer`, :meth:`Protocol.on_client`, :meth:`Protocol.on_persisted`.
3. Outputs go through the context only: ``send``, ``broadcast``, ``set_timer``,
   ``cancel_timer``, ``reply``, ``storage`` writes, ``trace`` (and rule 4's ``send_early``,
   ``reply_early``, ``when_durable``); ``now()`` and ``rng`` are the only sources of time and
   randomness.
4. **Durability ordering.** Sends and replies made while handling one input are released only
   after that input's storage writes (those made with ``sync=True``, the default), and those of
   every input handled before it, are durable. A driver may group many inputs into one durable
   commit (one fsync) before releasing their effects. A protocol may therefore send a vote right
   after persisting it, in the same handler.

   **The one exception: early effects.** ``ctx.send_early`` and ``ctx.reply_early`` may be
   released at once, before those writes are durable. They are only for messages whose safety
   does not depend on the sender's own durability, e.g. AppendEntries carrying entries the
   leader is itself persisting (Raft dissertation 10.2.1), or the result of a command that a
   quorum of *durable* copies committed. A protocol that uses them must learn when its own
   writes are durable before it counts them anywhere: ``ctx.when_durable(token)`` returns True
   when every synced write made so far is already durable (drivers whose storage is durable
   when a write returns, like the simulator's), else False, and the driver then calls
   :meth:`Protocol.on_persisted` with ``token`` as an input once they are. Early effects may
   overtake the sender's earlier, normal ones; a driver may also release them late (as normal).
5. **Determinism.** Same state + same input + same ``rng`` draws give the same outputs. State is
   plain data so that it can be deep-copied, compared and hashed.
6. Messages are frozen dataclasses declared with :func:`quorumkit.codec.message`. A message that
   fails validation is dropped and counted by the driver; it never reaches ``on_message``.
7. **Batching.** A handler may defer work by setting ``needs_flush``; the driver then calls
   :meth:`Protocol.on_flush` before it commits the writes of the batch (the simulator right
   after that input; the runtime once per group commit). Raft uses it to send one
   AppendEntries for all the proposals of a batch.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import random


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client command or read handed to a node by a driver.

    ``request_id`` is unique within the driver and is how the driver routes the reply.
    ``command`` is opaque to the consensus protocol (any msgpack-encodable value).
    """

    request_id: int
    command: Any


@dataclass(slots=True)
class StoredState:
    """What survives a crash: the durable storage of one node, handed to ``on_recover``.

    ``hard`` holds named values (``current_term``, ``voted_for``, ...). ``log`` holds the log
    entries from ``log_start`` on (entry ``log[i]`` has index ``log_start + i``); entries before
    ``log_start`` were compacted into ``snapshot``.
    """

    hard: dict[str, Any] = field(default_factory=dict)
    log_start: int = 1
    log: list[Any] = field(default_factory=list)
    snapshot: Any = None

    def is_empty(self) -> bool:
        return not self.hard and not self.log and self.snapshot is None


class Storage(abc.ABC):
    """The durable storage a protocol writes to (hard state, a log, one snapshot).

    Values written must not be mutated afterwards (store immutable values: tuples, frozen
    dataclasses, numbers, strings). ``sync=False`` marks a write that need not be durable before
    the effects of the current input are released; it may be lost in a crash that loses
    unsynced writes, until a later synced write makes everything before it durable.
    """

    @abc.abstractmethod
    def put(self, key: str, value: Any, *, sync: bool = True) -> None:
        """Set hard-state value ``key``."""

    @abc.abstractmethod
    def log_append(self, index: int, entries: Sequence[Any], *, sync: bool = True) -> None:
        """Write ``entries`` at ``index``, ``index + 1``, ...; entries at and after ``index``
        that were there before are discarded first (truncate-then-append)."""

    @abc.abstractmethod
    def log_truncate(self, index: int, *, sync: bool = True) -> None:
        """Discard log entries at ``index`` and after."""

    @abc.abstractmethod
    def save_snapshot(self, snapshot: Any, upto_index: int, *, sync: bool = True) -> None:
        """Store ``snapshot`` covering entries up to ``upto_index`` and drop those entries."""

    @abc.abstractmethod
    def load(self) -> StoredState:
        """Return a copy of what is stored (used by drivers at restart)."""


class Context(abc.ABC):
    """Everything a protocol may do to the world, for one node.

    Drivers implement it; protocols only call it.
    """

    node_id: str
    members: tuple[str, ...]
    storage: Storage
    rng: random.Random

    @abc.abstractmethod
    def now(self) -> float:
        """Current time in seconds (virtual in the simulator, monotonic in the runtime)."""

    @abc.abstractmethod
    def send(self, dst: str, msg: Any) -> None:
        """Send ``msg`` to node ``dst`` (released after this input's synced writes)."""

    def broadcast(self, msg: Any) -> None:
        """Send ``msg`` to every member except this node."""
        me = self.node_id
        for dst in self.members:
            if dst != me:
                self.send(dst, msg)

    @abc.abstractmethod
    def set_timer(self, name: str, delay_s: float) -> None:
        """(Re)arm timer ``name`` to fire ``delay_s`` seconds from now, replacing any pending
        timer of the same name."""

    @abc.abstractmethod
    def cancel_timer(self, name: str) -> None:
        """Cancel timer ``name`` if pending."""

    @abc.abstractmethod
    def reply(self, request: ClientRequest, result: Any) -> None:
        """Answer client request ``request`` (released after this input's synced writes)."""

    def send_early(self, dst: str, msg: Any) -> None:
        """Send ``msg`` to ``dst``, possibly before this input's writes are durable (rule 4's
        exception: only for a message whose safety does not depend on the sender's own
        durability). Default: an ordinary :meth:`send`, which is always allowed."""
        self.send(dst, msg)

    def reply_early(self, request: ClientRequest, result: Any) -> None:
        """Answer ``request``, possibly before this input's writes are durable (rule 4's
        exception: only for a result that does not depend on the sender's own durability).
        Default: an ordinary :meth:`reply`."""
        self.reply(request, result)

    def when_durable(self, token: Any) -> bool:
        """True if every synced write made so far is durable already. Otherwise False, and the
        driver calls :meth:`Protocol.on_persisted` ``(ctx, token)`` once they are (rule 4).
        Default: True, for drivers whose storage is durable when a write returns."""
        return True

    def trace(self, event: str, **fields: Any) -> None:  # noqa: B027 - optional hook
        """Record a protocol-level event for pictures and debugging. Default: ignore."""


class InvariantChecker:
    """Checks a protocol's safety invariants over all node states after each step.

    Subclasses keep whatever history they need (e.g. the log each leader had) and raise
    :class:`~quorumkit.errors.InvariantViolation` from :meth:`check`.
    """

    names: ClassVar[tuple[str, ...]] = ()

    def check(self, nodes: Mapping[str, Protocol | None]) -> None:
        """Check the states of all nodes; crashed nodes are ``None``."""


class Protocol(abc.ABC):
    """One node's logic. See the module rules."""

    #: Registered short name ("raft", "paxos", "pbft", "heartbeat").
    name: ClassVar[str] = ""
    #: Set by a handler that deferred work to :meth:`on_flush` (rule 7).
    needs_flush: bool = False
    #: Keep the history of what was applied (for ``applied_commands()`` and the invariant
    #: checkers). Drivers that run for days (the runtime) set it False before the first input,
    #: so that a node's memory does not grow with every command.
    keep_history: bool = True
    #: True for a node that runs a byzantine behaviour: invariant checkers, convergence and
    #: agreement checks speak only of the correct nodes.
    is_byzantine: bool = False
    #: Names accepted by :meth:`byzantine_class` (empty: the protocol assumes crash faults).
    byzantine_behaviours: ClassVar[tuple[str, ...]] = ()

    def __init__(self, node_id: str, members: Sequence[str], config: Any = None) -> None:
        self.node_id = node_id
        self.members = tuple(members)
        self.config = config

    @abc.abstractmethod
    def on_start(self, ctx: Context) -> None:
        """First start of this node, with empty storage."""

    def on_recover(self, ctx: Context, stored: StoredState) -> None:
        """Restart after a crash: rebuild volatile state from ``stored``, then start.

        The default ignores storage and calls :meth:`on_start`.
        """
        self.on_start(ctx)

    @abc.abstractmethod
    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        """A validated message ``msg`` from node ``src`` arrived."""

    def on_timer(self, ctx: Context, name: str) -> None:  # noqa: B027 - optional input
        """Timer ``name`` fired."""

    def on_flush(self, ctx: Context) -> None:
        """End of a batch of inputs (rule 7): do the deferred work; clear ``needs_flush``."""
        self.needs_flush = False

    def on_persisted(self, ctx: Context, token: Any) -> None:  # noqa: B027 - optional input
        """The writes made before ``ctx.when_durable(token)`` returned False are durable now."""

    def leader(self) -> str | None:
        """The node this node believes leads (None when unknown or leaderless protocols)."""
        return None

    def on_client(self, ctx: Context, request: ClientRequest) -> None:
        """A client request arrived at this node. Default: refuse it."""
        ctx.reply(request, {"error": "unsupported", "detail": f"{self.name} takes no commands"})

    def status(self) -> dict[str, Any]:
        """A JSON-able summary (role, term/view/ballot, commit/applied, leader, ...)."""
        return {"id": self.node_id}

    @classmethod
    def make_checker(cls) -> InvariantChecker | None:
        """A fresh invariant checker for a cluster of this protocol, or None."""
        return None

    @classmethod
    def byzantine_class(cls, behaviour: str) -> type[Protocol]:
        """The class a driver instantiates for a node that runs byzantine ``behaviour``."""
        from quorumkit.errors import ConfigError

        if not cls.byzantine_behaviours:
            raise ConfigError(
                f"protocol {cls.name!r} tolerates crash faults only; it has no byzantine "
                "behaviours (use pbft)"
            )
        raise ConfigError(
            f"unknown byzantine behaviour {behaviour!r} for {cls.name} "
            f"(known: {', '.join(cls.byzantine_behaviours)})"
        )

    @classmethod
    def client_replies_needed(cls, members: int, config: Any) -> int:
        """How many matching replies from distinct nodes a client needs before it accepts a
        result. 1 (the default): ask one node, follow redirects to the leader. More (PBFT:
        f + 1): send the request to every node and wait for that many matching answers."""
        return 1

    @classmethod
    def make_config(cls, **options: Any) -> Any:
        """Build this protocol's configuration from keyword options (CLI/simulator)."""
        if options:
            from quorumkit.errors import ConfigError

            raise ConfigError(f"protocol {cls.name!r} takes no options, got {sorted(options)}")
        return None
