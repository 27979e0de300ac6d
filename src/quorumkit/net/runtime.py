"""The asyncio runtime: one protocol instance driven by real time, TCP and LMDB.

Rules of this module:

1. One event loop per node. Protocol handlers run on the loop, one at a time, as they arrive.
2. **Group commit** (DESIGN.md, durability ordering): storage writes and effects (sends,
   replies) of the inputs handled since the last commit are taken together; the writes go to
   LMDB in one write transaction (one fsync) on a dedicated thread while the loop keeps
   handling inputs; only then are the effects released. Nothing is sent or acknowledged before
   the writes it depends on are durable.
3. Timers are the loop's timers; ``now()`` is the loop's monotonic clock; ``rng`` is a
   ``random.Random`` seeded from the OS.
4. Client requests reach the protocol through :meth:`NodeRuntime.execute`; a follower forwards
   to the leader over the peer connection; every request ends with a result or an error
   value, never an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quorumkit.errors import ConfigError
from quorumkit.net.messages import ClientForward, ClientForwardReply
from quorumkit.net.metrics import Metrics
from quorumkit.net.transport import Transport
from quorumkit.protocol import ClientRequest, Context, Protocol
from quorumkit.protocols import resolve_protocol

log = logging.getLogger("quorumkit.node")


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


class RuntimeContext(Context):
    """Collects a node's effects until the storage writes they depend on are durable."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self._rt = runtime
        self.node_id = runtime.config.node_id
        self.members = tuple(sorted(runtime.config.peers))
        self.storage = runtime.storage
        self.rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        self.sends: list[tuple[str, Any]] = []
        self.replies: list[tuple[ClientRequest, Any]] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def now(self) -> float:
        return self._rt.loop.time()

    def send(self, dst: str, msg: Any) -> None:
        self.sends.append((dst, msg))

    def set_timer(self, name: str, delay_s: float) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        self._timers[name] = self._rt.loop.call_later(delay_s, self._rt.on_timer, name)

    def cancel_timer(self, name: str) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()

    def reply(self, request: ClientRequest, result: Any) -> None:
        self.replies.append((request, result))

    def trace(self, event: str, **fields: Any) -> None:
        self._rt.metrics.on_trace(event, fields)

    def cancel_all(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()


class NodeRuntime:
    """One quorumkit node: protocol + LMDB + peer transport (+ front ends, attached)."""

    def __init__(self, config: NodeConfig) -> None:
        from quorumkit.net.storage_lmdb import LMDBStorage

        self.config = config
        self.loop = asyncio.get_running_loop()
        self.protocol_cls = resolve_protocol(config.protocol)
        self.metrics = Metrics(config.node_id)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = LMDBStorage(config.data_dir / "state", fsync=config.fsync)
        self.ctx = RuntimeContext(self)
        self.protocol: Protocol = self.protocol_cls(
            config.node_id,
            tuple(sorted(config.peers)),
            self.protocol_cls.make_config(**config.protocol_options),
        )
        self.transport = Transport(
            config.node_id, config.peers, self.on_peer_message, key=config.key
        )
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmdb")
        self._dirty = asyncio.Event()
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
        self._dirty.set()
        return out

    def on_timer(self, name: str) -> None:
        self.ctx._timers.pop(name, None)
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

    async def _flush_loop(self) -> None:
        try:
            await self._flush_forever()
        except asyncio.CancelledError:
            raise
        except Exception:
            # fail-stop: a node that cannot make its writes durable must not go on
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

    async def _flush_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self.protocol.needs_flush:
                self.protocol.on_flush(self.ctx)
            batch = self.storage.take_batch()
            sends, self.ctx.sends = self.ctx.sends, []
            replies, self.ctx.replies = self.ctx.replies, []
            if batch.ops:
                t0 = time.perf_counter()
                await self.loop.run_in_executor(self._io, self.storage.commit, batch)
                self.metrics.fsync_seconds.observe(time.perf_counter() - t0)
                self.metrics.batch_inputs.observe(batch.ops)
            else:
                self.storage.commit(batch)  # nothing to write: no transaction
            for dst, msg in sends:
                self.transport.send(dst, msg)
            self.metrics.messages_sent.inc(len(sends))
            for request, result in replies:
                fut = self._waiting.pop(request.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(result)

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
        try:
            return await asyncio.wait_for(fut, self.config.request_timeout_s)
        except TimeoutError:
            self._waiting.pop(rid, None)
            return {
                "error": "timeout",
                "indeterminate": True,
                "detail": f"no result within {self.config.request_timeout_s:g} s",
            }

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
        try:
            return await asyncio.wait_for(fut, self.config.request_timeout_s)
        except TimeoutError:
            self._forwarded.pop(rid, None)
            return {
                "error": "timeout",
                "indeterminate": True,
                "leader": leader,
                "detail": f"leader {leader} did not answer a forwarded request",
            }

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
        st["uptime_s"] = round(time.time() - self.started_at, 3)
        if self.config.http:
            st["http"] = f"{self.config.http[0]}:{self.config.http[1]}"
        if self.config.resp:
            st["resp"] = f"{self.config.resp[0]}:{self.config.resp[1]}"
        return st
