"""Checkpoints, garbage collection and state transfer of PBFT (Castro & Liskov 1999, §4.3;
TOCS 2002 §5.2 status and retransmission, §5.3 state transfer).

Rules of this module:

1. Every K sequence numbers a replica digests its state (the kv machine and the clients' last
   replies) and multicasts <CHECKPOINT, n, d, i>_i. 2f + 1 matching checkpoints from distinct
   replicas make checkpoint n *stable*: they are its proof; the low watermark h moves to n, the
   high watermark to h + L, and every message at or below n is discarded (the log stays
   bounded by 2L sequence numbers).
2. A replica that learns it is behind - a stable checkpoint above what it executed, f + 1
   replicas reporting (in checkpoints or status messages) sequence numbers above its own, or
   one replica reporting an installed view above its own (a NEW-VIEW proves itself) - waits ``fetch_delay_ms`` (it may simply be slower) and then asks one of them with
   :class:`Fetch`. The answer carries a stable checkpoint's state with its 2f + 1 proof, the
   NEW-VIEW of the responder's view, and committed certificates (a pre-prepare and 2f + 1
   commits) for what follows: each part proves itself, so any replica, even a faulty one, can
   be asked.
3. MAC mode (auth.py, rule 4): checkpoint proofs stay signed; the commits of a committed
   certificate carry authenticators, and the lagging replica checks its own entry of each (a
   commit is multicast, so every replica has one). Its own commit it cannot check that way: it
   counts only if the replica's own records show that it sent it, so the responder prefers
   commits of other replicas when it holds enough. The pre-prepare of such a certificate is
   vouched for by the 2f + 1 commits naming its digest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quorumkit.codec import decode, encode
from quorumkit.errors import DecodeError
from quorumkit.protocol import Context
from quorumkit.protocols.pbft.crypto import digest
from quorumkit.protocols.pbft.messages import (
    Checkpoint,
    Commit,
    CommitCert,
    Fetch,
    StableCheckpoint,
    StateTransfer,
    Status,
    batch_digest,
)

if TYPE_CHECKING:
    from quorumkit.protocols.pbft.node import PbftNode


# --------------------------------------------------------------------------- the state


def encode_state(node: PbftNode) -> bytes:
    """The checkpointed state: the kv machine and, per client, the last timestamp executed and
    its reply (§4.1 keeps the last reply as part of the state)."""
    table = tuple((c, t, r) for c, (t, r) in sorted(node.client_table.items()))
    return encode((node.sm.snapshot(), table))


def restore_state(node: PbftNode, state: bytes) -> bool:
    """Replace the state with ``state`` (from :func:`encode_state`); False if malformed."""
    try:
        snap, table = decode(state)
        node.sm.restore(snap)
        node.client_table = {c: (t, r) for c, t, r in table}
    except (DecodeError, ValueError, TypeError, KeyError):
        return False
    return True


def take_checkpoint(node: PbftNode, ctx: Context, seq: int) -> None:
    """§4.3: after executing ``seq`` (a multiple of K), digest the state and multicast it."""
    state = encode_state(node)
    d = digest(state)
    node.own_checkpoints[seq] = (d, state)
    node.state_digests.append((seq, d))
    if seq <= node.h:
        if seq == node.h:
            _own_state_is_stable(node, ctx, seq)
        garbage_collect(node)
        return
    msg = node.sign(Checkpoint(seq, d, node.node_id))
    ctx.broadcast(msg)
    node.ckpt_votes.setdefault(seq, {})[node.node_id] = msg
    check_stable(node, ctx, seq)


def on_checkpoint(node: PbftNode, ctx: Context, m: Checkpoint) -> None:
    if m.seq % node.K != 0 or m.seq <= 0:
        node.drop("bad_checkpoint")
        return
    if m.seq <= node.h:
        return
    if m.seq > node.h + node.L:
        if m.seq > node.seq_evidence.get(m.sender, 0) and node.verify(m):
            node.seq_evidence[m.sender] = m.seq
            check_lag(node, ctx)
        return
    votes = node.ckpt_votes.setdefault(m.seq, {})
    if m.sender in votes:
        return
    if not node.verify(m):
        node.drop("bad_signature")
        return
    votes[m.sender] = m
    if m.seq > node.seq_evidence.get(m.sender, 0):
        node.seq_evidence[m.sender] = m.seq
    check_stable(node, ctx, m.seq)
    check_lag(node, ctx)


def check_stable(node: PbftNode, ctx: Context, seq: int) -> None:
    votes = node.ckpt_votes.get(seq)
    if not votes or len(votes) < node.quorum:
        return
    by_digest: dict[bytes, list[Checkpoint]] = {}
    for msg in votes.values():
        by_digest.setdefault(msg.state_digest, []).append(msg)
    for d, msgs in by_digest.items():
        if len(msgs) >= node.quorum:
            msgs.sort(key=lambda c: c.sender)
            make_stable(node, ctx, seq, d, tuple(msgs[: node.quorum]))
            return


def make_stable(
    node: PbftNode, ctx: Context, seq: int, d: bytes, proof: tuple[Checkpoint, ...]
) -> None:
    """Checkpoint ``seq`` with digest ``d`` is stable (``proof``: 2f + 1 checkpoints)."""
    if seq <= node.h:
        return
    node.h, node.h_digest, node.h_proof = seq, d, proof
    ctx.trace("checkpoint", seq=seq)
    if seq in node.own_checkpoints:
        _own_state_is_stable(node, ctx, seq)
    garbage_collect(node)
    if node.last_executed < seq:
        arm_fetch(node, ctx, seq)
    node.needs_flush = True  # the window moved: the primary may order more


def _own_state_is_stable(node: PbftNode, ctx: Context, seq: int) -> None:
    own_digest, state = node.own_checkpoints[seq]
    if own_digest != node.h_digest:
        # 2f + 1 replicas (f + 1 correct) vouch for another state: ours is wrong
        node.drop("state_diverged")
        arm_fetch(node, ctx, seq)
        return
    node.stable_state = (seq, state, node.h_proof)
    ctx.storage.save_snapshot(StableCheckpoint(seq, state, node.h_proof), seq)


def garbage_collect(node: PbftNode) -> None:
    """§4.3: discard messages at or below the stable checkpoint (and below what this replica
    still has to execute itself)."""
    cut = min(node.h, node.last_executed)
    log = node.log
    if log and min(log) <= cut:
        for seq in [s for s in log if s <= cut]:
            del log[seq]
    h = node.h
    for table in (node.pset, node.ckpt_votes):
        if table and min(table) <= h:
            for seq in [s for s in table if s <= h]:
                del table[seq]
    own = node.own_checkpoints
    if own:
        kept = node.stable_state[0]  # the stable state holds checkpoint h once it is ours
        for seq in [s for s in own if s < h or s == kept]:
            del own[seq]


# --------------------------------------------------------------------------- lagging


def arm_fetch(node: PbftNode, ctx: Context, goal: int) -> None:
    """Fetch state up to ``goal`` if this replica is still behind after a short delay."""
    if goal > node.fetch_goal:
        node.fetch_goal = goal
    if not node.fetch_armed:
        node.fetch_armed = True
        node.fetch_tries = 0
        ctx.set_timer("fetch", node.cfg.fetch_delay_ms / 1000)


def _view_behind(node: PbftNode) -> bool:
    goal = node.fetch_view_goal
    return goal > node.view or (goal == node.view and not node.active)


def check_lag(node: PbftNode, ctx: Context) -> None:
    """Rule 2: f + 1 replicas are ahead (at least one of them is correct)."""
    f = node.f
    seqs = sorted(node.seq_evidence.values(), reverse=True)
    if len(seqs) > f and seqs[f] > node.last_executed:
        arm_fetch(node, ctx, seqs[f])
    if node.h > node.last_executed:
        arm_fetch(node, ctx, node.h)
    # a NEW-VIEW proves itself: one replica that installed a view ahead of ours is enough
    ahead = [
        v
        for v, active in node.view_evidence.values()
        if active and (v > node.view or (v == node.view and not node.active))
    ]
    if ahead:
        node.fetch_view_goal = min(ahead)
        arm_fetch(node, ctx, node.last_executed)


def on_fetch_timer(node: PbftNode, ctx: Context) -> None:
    node.fetch_armed = False
    behind_seq = node.last_executed < node.fetch_goal
    behind_view = _view_behind(node)
    if not (behind_seq or behind_view):
        node.fetch_goal = 0
        return
    peers = [m for m in node.members if m != node.node_id]
    ahead = [
        m
        for m in peers
        if (behind_seq and node.seq_evidence.get(m, 0) >= node.fetch_goal)
        or (behind_view and node.view_evidence.get(m, (-1, False))[0] >= node.fetch_view_goal)
    ]
    candidates = ahead or peers
    if not candidates:
        return
    target = candidates[node.fetch_tries % len(candidates)]
    node.fetch_tries += 1
    ctx.send(target, node.sign(Fetch(node.last_executed, node.view, node.active, node.node_id)))
    if node.fetch_tries < 2 * node.n:
        node.fetch_armed = True
        ctx.set_timer("fetch", node.cfg.fetch_delay_ms / 1000 * 2)


def on_status_timer(node: PbftNode, ctx: Context) -> None:
    """TOCS 2002 §5.2: periodic status, and retransmission of our view-change message while a
    view change is in progress."""
    ctx.broadcast(
        node.sign(Status(node.view, node.active, node.last_executed, node.h, node.node_id))
    )
    if not node.active:
        own = node.vc_latest.get(node.node_id)
        if own is not None and own.new_view == node.view:
            ctx.broadcast(own)
    ctx.set_timer("status", node.cfg.status_interval_ms / 1000)


def on_status(node: PbftNode, ctx: Context, m: Status) -> None:
    known_seq = node.seq_evidence.get(m.sender, 0)
    known_view = node.view_evidence.get(m.sender)
    if m.last_executed <= known_seq and known_view == (m.view, m.active):
        return
    if not node.verify(m):
        node.reject(m)
        return
    node.seq_evidence[m.sender] = max(known_seq, m.last_executed)
    node.view_evidence[m.sender] = (m.view, m.active)
    check_lag(node, ctx)


def on_fetch(node: PbftNode, ctx: Context, m: Fetch) -> None:
    """Answer a lagging replica with what it misses (rule 2)."""
    if not node.verify(m):
        node.reject(m)
        return
    seq, state = 0, b""
    proof: tuple[Checkpoint, ...] = ()
    stable_seq = node.stable_state[0]
    if stable_seq >= m.last_executed and stable_seq > 0:
        seq, state, proof = node.stable_state
        if stable_seq == m.last_executed:
            # it has executed this far but may lack the proof (its 2f + 1 CHECKPOINT messages
            # were lost): without it its low watermark, hence its window, stays behind
            state = b""
    new_view = None
    if node.active and node.new_view_msg is not None and node.new_view_msg.view == node.view:
        if node.view > m.view or (node.view == m.view and not m.active):
            new_view = node.new_view_msg
    certs: list[CommitCert] = []
    for s in range(max(m.last_executed, seq) + 1, node.last_executed + 1):
        slot = node.log.get(s)
        if slot is None or slot.committed is None or len(certs) >= node.L:
            break
        certs.append(_cert_for(node, slot.committed, slot.commits, m.sender))
    if not seq and new_view is None and not certs:
        return
    ctx.send(
        m.sender,
        node.sign(StateTransfer(seq, state, proof, new_view, tuple(certs), node.node_id)),
    )


def _cert_for(node: PbftNode, cert: CommitCert, commits: dict[str, Commit], to: str) -> CommitCert:
    """MAC mode (rule 3): ``cert`` with commits of replicas other than ``to`` where this
    replica holds enough of them (``to`` cannot check its own commit's authenticator)."""
    if not node.mac_mode or all(c.sender != to for c in cert.commits):
        return cert
    pp = cert.pre_prepare
    others = sorted(
        (
            c
            for who, c in commits.items()
            if who != to and (c.view, c.seq, c.digest) == (pp.view, pp.seq, pp.digest)
        ),
        key=lambda c: c.sender,
    )
    if len(others) < node.quorum:
        return cert
    return CommitCert(pp, tuple(others[: node.quorum]))


def _own_commit_known(node: PbftNode, c: Commit) -> bool:
    """True when this replica's records show that it sent commit ``c`` (rule 3)."""
    slot = node.log.get(c.seq)
    if slot is not None and slot.commits.get(node.node_id) == c:
        return True
    cert = node.pset.get(c.seq)
    return cert is not None and (cert.pre_prepare.view, cert.pre_prepare.digest) == (
        c.view,
        c.digest,
    )


def checkpoint_proof_problem(
    node: PbftNode, seq: int, proof: tuple[Checkpoint, ...], want: bytes | None = None
) -> str | None:
    """Why ``proof`` does not prove checkpoint ``seq`` stable (None: it does): 2f + 1 valid
    checkpoint messages from distinct replicas with one digest (``want`` if given)."""
    senders: set[str] = set()
    d = want
    for c in proof:
        if c.seq != seq or c.sender not in node.member_set:
            return "bad_checkpoint_proof"
        if c.sender in senders:
            return "duplicate_sender"
        if d is None:
            d = c.state_digest
        elif c.state_digest != d:
            return "bad_checkpoint_proof"
        senders.add(c.sender)
    if len(senders) < node.quorum:
        return "bad_checkpoint_proof"
    for c in proof:
        if not node.verify(c):
            return "bad_signature"
    return None


def commit_cert_problem(node: PbftNode, cert: CommitCert) -> str | None:
    """Why ``cert`` does not prove its batch committed (None: it does)."""
    pp = cert.pre_prepare
    if pp.sender != node.primary_of(pp.view):
        return "bad_commit_cert"
    senders: set[str] = set()
    for c in cert.commits:
        if c.view != pp.view or c.seq != pp.seq or c.digest != pp.digest:
            return "bad_commit_cert"
        if c.sender not in node.member_set:
            return "bad_commit_cert"
        if c.sender in senders:
            return "duplicate_sender"
        senders.add(c.sender)
    if len(senders) < node.quorum:
        return "bad_commit_cert"
    if batch_digest(pp.requests) != pp.digest:
        return "bad_digest"
    if not node.mac_mode and not node.verify(pp):  # MAC mode: the commits vouch (rule 3)
        return "bad_signature"
    for r in pp.requests:
        if node.request_problem(r) is not None:
            return "bad_request"
    for c in cert.commits:
        if node.mac_mode and c.sender == node.node_id:
            if not _own_commit_known(node, c):
                return "bad-mac"
        elif not node.verify(c):
            return "bad-mac" if node.uses_mac(c) else "bad_signature"
    return None


def on_state_transfer(node: PbftNode, ctx: Context, m: StateTransfer) -> None:
    if not node.verify(m):
        node.drop("bad_signature")
        return
    if m.seq > node.last_executed and m.state:
        problem = checkpoint_proof_problem(node, m.seq, m.proof, digest(m.state))
        if problem is not None:
            node.drop(problem)
            return
        install_state(node, ctx, m.seq, m.state, m.proof)
    elif m.proof and node.h < m.seq <= node.last_executed:
        # a proof for a checkpoint we reached ourselves: it becomes stable here too (make_stable
        # checks it against our own checkpoint of that state when we took one)
        problem = checkpoint_proof_problem(node, m.seq, m.proof)
        if problem is not None:
            node.drop(problem)
        else:
            make_stable(node, ctx, m.seq, m.proof[0].state_digest, m.proof)
    if m.new_view is not None:
        from quorumkit.protocols.pbft import viewchange

        viewchange.on_new_view(node, ctx, m.new_view)
    for cert in m.certs:
        apply_commit_cert(node, ctx, cert)
    node.execute_ready(ctx)
    check_lag(node, ctx)


def apply_commit_cert(node: PbftNode, ctx: Context, cert: CommitCert) -> None:
    s = cert.pre_prepare.seq
    if s <= node.last_executed or not node.in_window(s):
        return
    slot = node.log.get(s)
    if slot is not None and slot.committed is not None:
        return
    problem = commit_cert_problem(node, cert)
    if problem is not None:
        node.drop(problem)
        return
    slot = node.slot(s)
    slot.committed = cert
    pp = cert.pre_prepare
    node.committed_log.append((pp.view, s, pp.digest))
    node.persist_slot(ctx, slot)


def install_state(
    node: PbftNode, ctx: Context, seq: int, state: bytes, proof: tuple[Checkpoint, ...]
) -> None:
    """Install the state of stable checkpoint ``seq`` (TOCS 2002 §5.3.2)."""
    from quorumkit.protocols.pbft.node import Executed

    if not restore_state(node, state):
        node.drop("bad_state")
        return
    d = digest(state)
    node.last_executed = seq
    node.stable_state = (seq, state, proof)
    if seq > node.h:
        node.h, node.h_digest, node.h_proof = seq, d, proof
    ctx.storage.save_snapshot(StableCheckpoint(seq, state, proof), seq)
    if node.keep_history:
        node.executed.append(Executed(seq, d, None))
    node.state_digests.append((seq, d))
    for s in [s for s in node.own_checkpoints if s <= seq]:
        del node.own_checkpoints[s]
    if node.seq_next <= seq:
        node.seq_next = seq + 1
    garbage_collect(node)
    ctx.trace("state_transfer", seq=seq)
    # requests executed within the transferred range: answer what waits for them
    table = node.client_table
    for client in [c for c, r in node.pending.items() if r.timestamp <= table.get(c, (0,))[0]]:
        del node.pending[client]
    for client in list(node.waiting):
        last = table.get(client)
        if last is not None:
            node.deliver_result(ctx, client, last[0], last[1])
    for lane in list(node.lanes):
        if lane is None:
            continue
        last = table.get(lane.request.client)
        if last is not None and last[0] == lane.request.timestamp:
            node.proxy_result(ctx, node.node_id, lane.request.client, last[0], last[1])
    node.needs_flush = True
