"""The asyncio runtime: one protocol instance driven by real time, TCP and LMDB.

Rules of this module:

1. One event loop per node. Protocol handlers run on the loop, one at a time, as they arrive.
2. **Group commit** (DESIGN.md, durability ordering): storage writes and effects (sends,
   replies) of the inputs handled since the last commit are taken together; the writes go to
   storage in one commit (one fsync: a WAL record, see :mod:`.storage_lmdb`) while the loop
   keeps handling inputs; only then are the effects released. Nothing is sent or acknowledged
   before the writes it depends on are durable: an input's effects wait for its own writes and
   for every write made before it. An input that wrote nothing while nothing was pending
   depends only on the batch being committed, so its effects leave as soon as that batch is
   durable, not one commit later. Writes made with ``sync=False`` hold back no effect and
   start no commit: they wait in the pending batch and become durable with the next synced
   write (the contract's rule; Multi-Paxos's decided prefix cost its leader a second commit
   per write, each blocking the leader's loop about 0.4 ms at C=1).
3. **Early effects** (protocol.py rule 4's exception): ``send_early`` and ``reply_early`` are
   released at once. ``when_durable(token)`` is True when nothing is pending or being
   committed; otherwise the token joins the effects of the input and, when they are released
   (its writes durable), the protocol gets ``on_persisted(ctx, token)`` as an input.
4. **Batching** (rule 7): ``on_flush`` runs before each group commit and, while a commit is
   in flight, at the end of each turn of the loop in which an input asked for it: a leader's
   AppendEntries leave in parallel with its own fsync instead of waiting for it (measured at
   C=64, medians of 3: p99 46 ms against 57 ms when on_flush waits for the commit; at most
   once per commit in between, or once per millisecond, did no better).
5. **Where the fsync waits.** A leader with more than ``LEADER_INLINE_MAX_WAITING`` client
   requests waiting commits on a worker thread (its loop serves clients meanwhile). A
   follower, or a leader with hardly anything waiting, has nothing to do but wait for that
   fsync, and commits on the loop: no thread hand-off (measured: about 70 us of CPU per
   commit; at C=1, p50 1.08 ms against 1.14 ms with the thread, means of 5 alternating runs;
   its AppendEntries left before the fsync, so the followers' fsyncs still run in parallel).
   A batch that saves a snapshot (large) always goes to the thread. The inputs of one turn of
   the loop schedule one plain callback, ``_commit_turn``, which commits on the loop; it wakes
   the flusher task only for a commit that must wait for the one in flight or go to the
   thread. What the fsync released leaves at once, not at the next turn.
6. **Garbage collection.** At start, once the protocol has recovered, every object alive is
   frozen out of the cyclic collector (``gc.freeze``): modules, classes and the recovered
   state never die, and a full collection no longer walks them (measured: 40-100 ms pauses
   became 2-20 ms).
7. Timers are the loop's timers; ``now()`` is the loop's monotonic clock; ``rng`` is a
   ``random.Random`` seeded from the OS. A timer set again to a later deadline keeps its
   handle, which re-arms itself when it fires before the deadline (at most
   ``TIMER_SLACK_S`` early counts as due).
8. Client requests reach the protocol through :meth:`NodeRuntime.execute`; a follower forwards
   to the leader over the peer connection; every request ends with a result or an error
   value, never an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quorumkit.errors import ConfigError
from quorumkit.net.messages import ClientForward, ClientForwardReply
from quorumkit.net.metrics import Metrics
from quorumkit.net.tls import TlsFiles, names_text, own_identity, server_context
from quorumkit.net.transport import Transport
from quorumkit.protocol import ClientRequest, Context, Protocol
from quorumkit.protocols import resolve_protocol

if TYPE_CHECKING:
    from quorumkit.net.storage_lmdb import Batch

#: rule 5: a leader with at most this many client requests waiting commits on its loop
LEADER_INLINE_MAX_WAITING = 2
#: rule 7: a timer whose handle fires at most this early counts as due (uvloop's timers
#: have millisecond resolution)
TIMER_SLACK_S = 0.001
log = logging.getLogger("quorumkit.node")


#: what a request's future holds when the request timed out
_TIMED_OUT: Any = object()


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(_TIMED_OUT)


_frozen = False


def _freeze_startup_objects() -> None:
    """Rule 6: keep what exists after start-up out of every later full collection (once per
    process: a node process starts one runtime)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


@dataclass
class NodeConfig:
    """Everything one node process needs (``quorumkit node`` flags or a TOML file)."""

    node_id: str
    peers: dict[str, tuple[str, int]]
    data_dir: Path
    protocol: str = "raft"
    http: tuple[str, int] | None = None
    resp: tuple[str, int] | None = None
    key: bytes | None = None
    #: mutual TLS between peers (certificate, key, CA); None: plain TCP
    tls: TlsFiles | None = None
    fsync: bool = True
    fault_injection: bool = False
    request_timeout_s: float = 5.0
    protocol_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.node_id not in self.peers:
            raise ConfigError(
                f"--id {self.node_id} is not in --peers ({', '.join(sorted(self.peers))}): "
                "--peers names every member, this node included"
            )
        if self.tls is not None:
            names = own_identity(self.tls)
            if self.node_id not in names:
                raise ConfigError(
                    f"--tls-cert {self.tls.cert} is a certificate for "
                    f"{names_text(names)}, not for this node ({self.node_id}): "
                    "its peers would refuse it"
                )
            server_context(self.tls)  # unreadable or mismatched files fail here, before start

    @property
    def peer_auth(self) -> str:
        """How peers prove who they are: ``hmac``, ``tls``, ``hmac+tls`` or ``loopback-only``."""
        kinds = [k for k, on in (("hmac", self.key), ("tls", self.tls)) if on]
        return "+".join(kinds) or "loopback-only"


#: kinds of held effects
_SEND = 0
_REPLY = 1
_TOKEN = 2

_Effect = tuple[int, Any, Any]


class RuntimeContext(Context):
    """Collects a node's effects until the storage writes they depend on are durable."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self._rt = runtime
        self.node_id = runtime.config.node_id
        self.members = tuple(sorted(runtime.config.peers))
        self.storage = runtime.storage
        self.rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        #: effects of the input being handled (the runtime files them when it returns)
        self.effects: list[_Effect] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: when each timer is due (its handle may be due earlier, and re-arms: rule 7)
        self._deadlines: dict[str, float] = {}

    def now(self) -> float:
        return self._rt.loop.time()

    def send(self, dst: str, msg: Any) -> None:
        self.effects.append((_SEND, dst, msg))

    def send_early(self, dst: str, msg: Any) -> None:
        self._rt.transport.send(dst, msg)
        self._rt.metrics.messages_sent.inc()

    def reply_early(self, request: ClientRequest, result: Any) -> None:
        self._rt.answer(request, result)

    def when_durable(self, token: Any) -> bool:
        rt = self._rt
        if not rt.storage.pending_needs_sync and not rt.committing:
            return True
        self.effects.append((_TOKEN, token, None))
        return False

    def set_timer(self, name: str, delay_s: float) -> None:
        """Rule 7: a timer set again to fire later keeps its handle and only moves its
        deadline; the handle, when it fires early, re-arms itself for the deadline (a
        follower resets its election timer on every AppendEntries: no cancel and new handle
        each time)."""
        loop = self._rt.loop
        deadline = loop.time() + delay_s
        self._deadlines[name] = deadline
        old = self._timers.get(name)
        if old is not None:
            if old.when() <= deadline:
                return
            old.cancel()
        self._timers[name] = loop.call_at(deadline, self._fire, name)

    def _fire(self, name: str) -> None:
        loop = self._rt.loop
        deadline = self._deadlines.get(name)
        if deadline is None:
            return
        if deadline - loop.time() > TIMER_SLACK_S:  # moved on since this handle was made
            self._timers[name] = loop.call_at(deadline, self._fire, name)
            return
        del self._timers[name], self._deadlines[name]
        self._rt.on_timer(name)

    def cancel_timer(self, name: str) -> None:
        self._deadlines.pop(name, None)
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()

    def reply(self, request: ClientRequest, result: Any) -> None:
        self.effects.append((_REPLY, request, result))

    def trace(self, event: str, **fields: Any) -> None:
        self._rt.metrics.on_trace(event, fields)

    def cancel_all(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._deadlines.clear()


class NodeRuntime:
    """One quorumkit node: protocol + LMDB + peer transport (+ front ends, attached)."""

    def __init__(self, config: NodeConfig) -> None:
        from quorumkit.net.storage_lmdb import LMDBStorage

        self.config = config
        self.loop = asyncio.get_running_loop()
        self.protocol_cls = resolve_protocol(config.protocol)
        self.metrics = Metrics()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        # log entries in the write-ahead log (storage_lmdb's FORMAT_WAL) for new data dirs
        self.storage = LMDBStorage(config.data_dir / "state", fsync=config.fsync, wal=True)
        self.ctx = RuntimeContext(self)
        self.protocol: Protocol = self.protocol_cls(
            config.node_id,
            tuple(sorted(config.peers)),
            self.protocol_cls.make_config(**config.protocol_options),
        )
        self.protocol.keep_history = False  # no checker here: memory must not grow per write
        self.transport = Transport(
            config.node_id, config.peers, self.on_peer_message, key=config.key, tls=config.tls
        )
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmdb")
        self._dirty = asyncio.Event()
        #: held effects: those that wait for the pending (not yet taken) writes, and those
        #: that wait only for the batch being committed (or for nothing)
        self._after_pending: list[_Effect] = []
        self._after_commit: list[_Effect] = []
        #: a group commit is in flight
        self.committing = False
        self._flush_scheduled = False  # rule 4's on_flush at the end of this turn
        self._commit_scheduled = False  # rule 5's _commit_turn at the end of this turn
        self._flusher: asyncio.Task[None] | None = None
        self._next_request = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._forwarded: dict[int, asyncio.Future[Any]] = {}
        self._stopping = False
        self._tasks: set[asyncio.Future[None]] = set()
        self.failed = False
        self.on_fatal: Callable[[], None] | None = None
        self.started_at = time.time()
        #: a leader-based protocol: requests may be forwarded to the leader. A protocol whose
        #: clients need several matching answers (PBFT) handles every request where it lands.
        self._forwards = (
            self.protocol_cls.client_replies_needed(len(config.peers), self.protocol.config) == 1
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        stored = self.storage.load()
        host, port = self.config.peers[self.config.node_id]
        await self.transport.start(host, port)
        if stored.is_empty():
            self._input(lambda: self.protocol.on_start(self.ctx))
        else:
            log.info(
                "%s: recovering from %s (log from %d, %d entries)",
                self.config.node_id,
                self.config.data_dir,
                stored.log_start,
                len(stored.log),
            )
            self._input(lambda: self.protocol.on_recover(self.ctx, stored))
        self._flusher = asyncio.create_task(self._flush_loop(), name="flusher")
        _freeze_startup_objects()

    async def stop(self) -> None:
        """Graceful stop: finish the current batch, close storage."""
        if self._stopping:
            return
        self._stopping = True
        self.ctx.cancel_all()
        self._dirty.set()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
        if not self.failed:
            await self._loop_io(self._commit_pending)
        await self.transport.stop()
        for fut in [*self._waiting.values(), *self._forwarded.values()]:
            if not fut.done():
                fut.set_result({"error": "unavailable", "detail": "node stopping"})
        self._io.shutdown(wait=True)
        self.storage.close()

    async def _loop_io(self, fn: Callable[[], Any]) -> Any:
        return await self.loop.run_in_executor(self._io, fn)

    # ------------------------------------------------------------------ inputs
    def _input(self, fn: Callable[[], Any]) -> Any:
        if self._stopping:
            return None
        out = fn()
        self._file_effects()
        if self.committing and self.protocol.needs_flush and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._extra_flush)
        if (self.storage.pending_needs_sync or self.protocol.needs_flush) and not (
            self._commit_scheduled
        ):  # writes made with sync=False alone wait for a synced one
            self._commit_scheduled = True
            self.loop.call_soon(self._commit_turn)
        return out

    def _file_effects(self) -> None:
        """File the effects of the input just handled by what they wait for (rule 2)."""
        ctx = self.ctx
        effects = ctx.effects
        if not effects:
            return
        ctx.effects = []
        if self.storage.pending_needs_sync:
            self._after_pending.extend(effects)
        elif self.committing or self._after_commit:
            self._after_commit.extend(effects)
        else:  # every write it depends on is durable
            self._release(effects)

    def _extra_flush(self) -> None:
        """Rule 4: ``on_flush`` at the end of a turn while a commit is in flight."""
        self._flush_scheduled = False
        if self.committing and self.protocol.needs_flush:
            self._input(self._on_flush)
            self.transport.flush()

    def _on_flush(self) -> None:
        self.protocol.on_flush(self.ctx)

    def answer(self, request: ClientRequest, result: Any) -> None:
        fut = self._waiting.pop(request.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def _release(self, effects: list[_Effect]) -> None:
        """Send, answer and report durable what waited for writes that are durable now."""
        send = self.transport.send
        sent = 0
        tokens = []
        for kind, a, b in effects:
            if kind == _SEND:
                send(a, b)
                sent += 1
            elif kind == _REPLY:
                self.answer(a, b)
            else:
                tokens.append(a)
        if sent:
            self.metrics.messages_sent.inc(sent)
        for token in tokens:
            self._input(partial(self.protocol.on_persisted, self.ctx, token))

    def on_timer(self, name: str) -> None:
        self._input(lambda: self.protocol.on_timer(self.ctx, name))

    def on_peer_message(self, src: str, msg: Any) -> None:
        if type(msg) is ClientForward:
            task = asyncio.ensure_future(self._serve_forward(src, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if type(msg) is ClientForwardReply:
            fut = self._forwarded.pop(msg.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg.result)
            return
        self.metrics.messages_received.inc()
        self._input(lambda: self.protocol.on_message(self.ctx, src, msg))

    # ------------------------------------------------------------------ group commit
    def _commit_pending(self) -> None:
        self.storage.commit(self.storage.take_batch())

    def _fail_stop(self) -> None:
        """A node that cannot make its writes durable must not go on (call it from an
        ``except`` block: the traceback is logged)."""
        log.critical(
            "%s: storage commit failed; stopping the node", self.config.node_id, exc_info=True
        )
        self.failed = True
        self._stopping = True
        for fut in [*self._waiting.values(), *self._forwarded.values()]:
            if not fut.done():
                fut.set_result({"error": "unavailable", "detail": "storage failed"})
        if self.on_fatal is not None:
            self.on_fatal()

    async def _flush_loop(self) -> None:
        try:
            await self._flush_forever()
        except asyncio.CancelledError:
            raise
        except Exception:
            self._fail_stop()

    def _on_thread(self, snapshot: bool) -> bool:
        """Rule 5: a commit goes to the worker thread when it saves a snapshot, or when a
        leader has clients to serve during its fsync."""
        return snapshot or (
            len(self._waiting) > LEADER_INLINE_MAX_WAITING
            and self.protocol.leader() == self.config.node_id
        )

    def _commit_turn(self) -> None:
        """Rule 5: after the turn of the loop whose inputs wrote, commit them on the loop, or
        wake the flusher task when a commit is in flight or the fsync belongs on the thread.
        A plain callback: a commit on the loop no longer costs an Event, a Future and a Task
        step (at C=1, once per write on the leader and on each follower)."""
        self._commit_scheduled = False
        storage = self.storage
        if self._stopping or not (storage.pending_needs_sync or self.protocol.needs_flush):
            return
        if self.committing or self._on_thread(storage.pending_snapshot):
            self._dirty.set()
            return
        try:
            batch, waiting = self._begin_commit()
            t0 = time.perf_counter()
            storage.commit(batch)
            self._end_commit(batch, waiting, time.perf_counter() - t0)
        except Exception:
            self._fail_stop()

    def _begin_commit(self) -> tuple[Batch, list[_Effect]]:
        """Rules 2 and 4: run ``on_flush``, take the pending writes and the effects that
        wait for them, release what waited only for the previous commit."""
        if self.protocol.needs_flush:
            self._input(self._on_flush)
        batch = self.storage.take_batch()
        waiting, self._after_pending = self._after_pending, []
        # taken but not durable yet: nothing may count as durable from here on
        self.committing = bool(batch.ops)
        if self._after_commit:  # made after the previous commit: they wait for nothing
            ready, self._after_commit = self._after_commit, []
            self._release(ready)
        if batch.ops:
            self.transport.flush()  # early sends leave before the fsync starts
        return batch, waiting

    def _end_commit(self, batch: Batch, waiting: list[_Effect], seconds: float) -> None:
        """Rule 2: ``batch`` is durable: release what waited for it."""
        if batch.ops:
            self.metrics.fsync_seconds.observe(seconds)
            self.metrics.batch_inputs.observe(batch.ops)
            # what waited for this batch, then what was made meanwhile (in that order)
            waiting.extend(self._after_commit)
            self._after_commit = []
            self.committing = False
        if waiting:
            self._release(waiting)
            self.transport.flush()  # what waited for the fsync leaves now, not next turn

    async def _flush_forever(self) -> None:
        """The commits that :meth:`_commit_turn` hands over: while one is in flight, and
        those on the worker thread (rule 5)."""
        storage = self.storage
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            batch, waiting = self._begin_commit()
            t0 = time.perf_counter()
            if batch.ops and self._on_thread(batch.snapshot):
                # rule 5: a busy leader serves clients during its fsync
                await self.loop.run_in_executor(self._io, storage.commit, batch)
            else:  # rule 5: nothing to do meanwhile: no thread hand-off
                storage.commit(batch)  # (nothing to write: no transaction)
            self._end_commit(batch, waiting, time.perf_counter() - t0)

    # ------------------------------------------------------------------ clients
    async def execute(self, command: Any, *, forward: bool = True) -> Any:
        """Run a client command (write, or linearizable read) and return its result."""
        t0 = time.perf_counter()
        leader = self.protocol.leader()
        forward = forward and self._forwards
        if forward and leader is not None and leader != self.config.node_id:
            result = await self._forward(leader, command)  # skip the local round trip
            self.metrics.observe_request(result, time.perf_counter() - t0)
            return result
        result = await self._execute_local(command)
        if (
            forward
            and isinstance(result, dict)
            and result.get("error") == "not_leader"
            and isinstance(result.get("leader"), str)
            and result["leader"] != self.config.node_id
        ):
            result = await self._forward(result["leader"], command)
        self.metrics.observe_request(result, time.perf_counter() - t0)
        return result

    async def _execute_local(self, command: Any) -> Any:
        if self._stopping:
            return {"error": "unavailable", "detail": "node stopping"}
        self._next_request += 1
        rid = self._next_request
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._waiting[rid] = fut
        self.metrics.proposals.inc()
        self._input(lambda: self.protocol.on_client(self.ctx, ClientRequest(rid, command)))
        result = await self._result(fut)
        if result is _TIMED_OUT:
            self._waiting.pop(rid, None)
            return {
                "error": "timeout",
                "indeterminate": True,
                "detail": f"no result within {self.config.request_timeout_s:g} s",
            }
        return result

    async def _result(self, fut: asyncio.Future[Any]) -> Any:
        """``fut``'s result, or :data:`_TIMED_OUT` after the request timeout (one timer
        handle: cheaper per request than ``asyncio.wait_for``)."""
        timer = self.loop.call_later(self.config.request_timeout_s, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    async def _forward(self, leader: str, command: Any) -> Any:
        self._next_request += 1
        rid = self._next_request
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._forwarded[rid] = fut
        try:
            self.transport.send(leader, ClientForward(rid, command))
        except ConfigError as exc:  # the command cannot go on the wire
            self._forwarded.pop(rid, None)
            return {"error": "bad_command", "detail": str(exc)}
        result = await self._result(fut)
        if result is _TIMED_OUT:
            self._forwarded.pop(rid, None)
            return {
                "error": "timeout",
                "indeterminate": True,
                "leader": leader,
                "detail": f"leader {leader} did not answer a forwarded request",
            }
        return result

    async def _serve_forward(self, src: str, msg: ClientForward) -> None:
        result = await self.execute(msg.command, forward=False)
        self.transport.send(src, ClientForwardReply(msg.request_id, result))

    def local_read(self, command: Any) -> Any:
        """A stale read from this node's state machine (no consensus round)."""
        reader = getattr(self.protocol, "local_read", None)
        if reader is None:
            return {"error": "unsupported", "detail": "this protocol has no local reads"}
        return reader(command)

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        st = dict(self.protocol.status())
        st["protocol"] = self.config.protocol
        st["peers"] = self.transport.peer_states()
        st["dropped_frames"] = dict(self.transport.dropped)
        st["fsync"] = self.config.fsync
        st["peer_auth"] = self.config.peer_auth
        st["uptime_s"] = round(time.time() - self.started_at, 3)
        if self.config.http:
            st["http"] = f"{self.config.http[0]}:{self.config.http[1]}"
        if self.config.resp:
            st["resp"] = f"{self.config.resp[0]}:{self.config.resp[1]}"
        return st
