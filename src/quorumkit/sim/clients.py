"""Simulated clients: a key-value workload with sessions, retries and redirects, recorded as a
history for the linearizability checker.

Rules of this module:

1. Each client is closed-loop: one operation at a time, then think time drawn from the
   simulation's driver stream (so the workload is part of the seed).
2. Writes run in a client session (``("session", client, seq, op)``): a retry reuses ``seq``, so
   the state machine executes a write at most once however often it is retried.
3. A protocol whose clients need several matching replies (PBFT: f + 1, see
   :meth:`~quorumkit.protocol.Protocol.client_replies_needed`) gets every request sent to every
   node; the client accepts a result once that many distinct nodes returned it.
4. An operation ends ``ok`` (its result is known), ``fail`` (it certainly had no effect: a read
   that got no answer, a write refused before it was proposed) or ``info`` (it may or may not
   have taken effect: a write whose outcome never became known). ``info`` operations enter the
   history with ``ret=None`` (Jepsen's ``:info``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quorumkit.errors import ConfigError
from quorumkit.kv import session_command

if TYPE_CHECKING:
    from quorumkit.sim.core import Simulation


@dataclass(frozen=True, slots=True)
class Workload:
    """What the simulated clients do."""

    clients: int = 5
    #: operations per second offered by all clients together
    rate_per_s: float = 50.0
    keys: int = 5
    read_ratio: float = 0.5
    value_size: int = 4
    #: a single attempt waits this long for a reply before retrying elsewhere
    attempt_timeout_s: float = 0.5
    #: an operation gives up (ok/fail/info decided) after this long
    op_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        if self.clients < 0:
            raise ConfigError(f"clients must be >= 0, got {self.clients}")
        if not self.rate_per_s > 0:
            raise ConfigError(f"rate must be > 0 operations per second, got {self.rate_per_s}")
        if self.keys < 1:
            raise ConfigError(f"keys must be >= 1, got {self.keys}")
        if not 0 <= self.read_ratio <= 1:
            raise ConfigError(f"read ratio must be in [0, 1], got {self.read_ratio}")
        if self.value_size < 1:
            raise ConfigError("value size must be >= 1")
        if not 0 < self.attempt_timeout_s <= self.op_timeout_s:
            raise ConfigError("need 0 < attempt_timeout_s <= op_timeout_s")


@dataclass(slots=True)
class OpRecord:
    """One client operation as recorded: invoke, then ok / fail / info."""

    client: int
    call: float
    input: tuple[Any, ...]
    ret: float | None = None
    output: Any = None
    status: str = "pending"  # pending | ok | fail | info
    attempts: int = 0


_INDETERMINATE = ("leader_changed", "timeout", "down_after_send")


class _Client:
    def __init__(self, sim: Simulation, cid: int, workload: Workload, pool: ClientPool) -> None:
        self.sim = sim
        self.cid = cid
        self.w = workload
        self.pool = pool
        self.seq = 0
        self.leader_hint: str | None = None
        self.current: OpRecord | None = None
        self.command: Any = None
        self.attempt = 0
        self.maybe_applied = False
        self.stopped = False
        #: matching replies from distinct nodes needed to accept a result (rule 4)
        self.quorum = sim.protocol_cls.client_replies_needed(len(sim.node_ids), sim.config)
        self.answers: dict[str, Any] = {}

    # -- scheduling ------------------------------------------------------------------------
    def think(self) -> None:
        if self.stopped:
            return
        mean = self.w.clients / self.w.rate_per_s
        self.sim.call_after(self.sim.rng.expovariate(1.0 / mean), self.start_op)

    def start_op(self) -> None:
        if self.stopped:
            return
        rng = self.sim.rng
        key = f"k{rng.randrange(self.w.keys)}"
        if rng.random() < self.w.read_ratio:
            op: tuple[Any, ...] = ("get", key)
            self.command = op
        else:
            kind = rng.choice(("put", "append", "append", "cas"))
            value = f"{self.cid}.{self.pool.next_value()}".ljust(self.w.value_size, "_")
            if kind == "cas":
                old = self.pool.last_written.get(key)
                op = ("cas", key, old, value)
            else:
                op = (kind, key, value)
            if kind in ("put", "append"):
                self.pool.last_written[key] = value
            self.seq += 1
            self.command = session_command(self.cid, self.seq, op)
        if self.quorum > 1:
            if op[0] == "get":
                self.seq += 1
            make = getattr(self.sim.protocol_cls, "client_command", None)
            if make is not None:
                self.command = make(self.sim.config, self.cid, self.seq, op)
        self.answers = {}
        self.current = OpRecord(self.cid, self.sim.now, op)
        self.pool.records.append(self.current)
        self.maybe_applied = False
        self.send()

    def target(self) -> str:
        if self.leader_hint is not None and self.leader_hint in self.sim.node_ids:
            return self.leader_hint
        return self.sim.rng.choice(self.sim.node_ids)

    def send(self) -> None:
        rec = self.current
        if rec is None:
            return
        if self.sim.now - rec.call >= self.w.op_timeout_s:
            self.finish_unknown()
            return
        rec.attempts += 1
        self.attempt += 1
        attempt = self.attempt
        self.sim.call_after(self.w.attempt_timeout_s, lambda: self.on_timeout(attempt))
        if self.quorum > 1:
            for node in self.sim.node_ids:
                self.sim.client_request(node, self.command, lambda n, r: self.on_answer(rec, n, r))
            return
        node = self.target()
        self.sim.client_request(node, self.command, lambda n, r: self.on_reply(attempt, n, r))

    # -- outcomes --------------------------------------------------------------------------
    def on_timeout(self, attempt: int) -> None:
        if self.current is None or attempt != self.attempt:
            return
        self.maybe_applied = True  # the request may be in some log
        self.leader_hint = None
        self.attempt += 1  # a late reply to this attempt is ignored
        self.retry()

    def on_reply(self, attempt: int, node: str, result: Any) -> None:
        if self.current is None or attempt != self.attempt:
            return
        self.attempt += 1
        if isinstance(result, dict) and "error" in result:
            err = result["error"]
            if err in ("not_leader", "down", "overloaded"):
                leader = result.get("leader")
                self.leader_hint = leader if isinstance(leader, str) else None
                self.retry()
                return
            if err in _INDETERMINATE or result.get("indeterminate"):
                self.maybe_applied = True
                self.leader_hint = None
                self.retry()
                return
            self.finish("fail", result)  # e.g. bad_command: executed as a no-op
            return
        self.leader_hint = node
        self.finish("ok", result)

    def on_answer(self, rec: OpRecord, node: str, result: Any) -> None:
        """Quorum mode: any attempt's answer counts; accept a result once ``quorum`` distinct
        nodes returned it (with at most quorum - 1 liars, one of them is correct)."""
        if self.current is not rec:
            return
        if isinstance(result, dict) and "error" in result:
            if result["error"] in _INDETERMINATE or result.get("indeterminate"):
                self.maybe_applied = True
            return
        self.maybe_applied = True
        self.answers[node] = result
        same = sum(1 for other in self.answers.values() if other == result)
        if same >= self.quorum:
            self.attempt += 1  # cancels the pending attempt timeout
            self.finish("ok", result)

    def retry(self) -> None:
        self.sim.call_after(0.02 + 0.03 * self.sim.rng.random(), self.send)

    def finish(self, status: str, output: Any) -> None:
        rec = self.current
        if rec is None:
            return
        rec.status = status
        rec.ret = self.sim.now
        rec.output = output
        self.current = None
        self.pool.completed += 1
        self.think()

    def finish_unknown(self) -> None:
        rec = self.current
        if rec is None:
            return
        if rec.input[0] == "get" or not self.maybe_applied:
            self.finish("fail", {"error": "timeout"})
            return
        rec.status = "info"
        rec.ret = None
        self.current = None
        self.think()


class ClientPool:
    """All simulated clients of one run and the history they record."""

    def __init__(self, sim: Simulation, workload: Workload) -> None:
        self.sim = sim
        self.workload = workload
        self.records: list[OpRecord] = []
        self.last_written: dict[str, str] = {}
        self.completed = 0
        self._values = 0
        self.clients = [_Client(sim, i + 1, workload, self) for i in range(workload.clients)]

    def next_value(self) -> int:
        self._values += 1
        return self._values

    def start(self) -> None:
        for c in self.clients:
            c.think()

    def stop(self) -> None:
        """Stop issuing new operations; pending ones stay pending (they end as info)."""
        for c in self.clients:
            c.stopped = True

    def ok_since(self, t: float) -> int:
        return sum(1 for r in self.records if r.status == "ok" and r.ret is not None and r.ret >= t)

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "fail": 0, "info": 0}
        for r in self.records:
            out["info" if r.status == "pending" else r.status] += 1
        return out

    def history(self) -> list[OpRecord]:
        """Operations for the checker: ok and info ones (fail ones had no effect)."""
        out = []
        for r in self.records:
            if r.status == "ok":
                out.append(r)
            elif r.status in ("info", "pending") and r.input[0] != "get":
                out.append(OpRecord(r.client, r.call, r.input, None, None, "info", r.attempts))
        return out
