"""PBFT's view change (Castro & Liskov 1999, §4.4; liveness, §4.5.2).

Rules of this module:

1. A backup whose request timer expires in view v stops accepting messages of v (other than
   checkpoints, view changes and new views) and multicasts <VIEW-CHANGE, v+1, n, C, P, i>_i:
   its stable checkpoint n with proof C and, for every sequence number above n that prepared,
   the prepared certificate of the highest view (P).
2. The primary of v+1 collects 2f + 1 valid view-change messages for v+1 (its own included)
   and multicasts <NEW-VIEW, v+1, V, O>_p. O re-issues, in view v+1, a pre-prepare for every
   sequence number between min-s (the latest stable checkpoint in V) and max-s (the highest
   prepared sequence number in V): the batch of the certificate with the highest view, or the
   null request where V has none.
3. Backups accept a NEW-VIEW when it is signed by the primary of its view, V holds 2f + 1 valid
   view-change messages from distinct replicas for that view, and O is exactly what they
   compute from V themselves. They then enter the view and send prepares for O.
4. Liveness (§4.5.2): a replica that has collected 2f + 1 view-change messages for its view
   waits T * 2^k for the NEW-VIEW (k: view changes since a request last executed), then moves
   on to the next view; a replica joins a view change once f + 1 replicas ask for views above
   its own (the smallest of them); its own view-change message is retransmitted with each
   status message until the view is installed.
5. Retransmission the other way (the paper assumes the view-change messages of correct
   replicas are eventually delivered): a replica that receives a view-change message for a view
   it has already left answers with the NEW-VIEW of that view or a later one, if it installed
   one, else with its own view-change message for that view (kept for a few views; safe to
   re-send: it never prepared anything in a view it did not install) and its current one. A
   replica stuck with 2f view-change messages (no timer runs below 2f + 1) is so unstuck.
6. MAC mode (auth.py): VIEW-CHANGE and NEW-VIEW stay signed, and so do the prepares and
   checkpoints they carry as proof. The pre-prepare of a prepared certificate is vouched for by
   its 2f signed prepares (auth.py, rule 3), not checked itself; the pre-prepares O of a
   NEW-VIEW carry no authentication of their own: the NEW-VIEW's signature covers them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quorumkit.protocol import Context
from quorumkit.protocols.pbft import checkpoint as _ckpt
from quorumkit.protocols.pbft.messages import (
    NULL_DIGEST,
    NewView,
    PreparedCert,
    PrePrepare,
    Request,
    ViewChange,
    batch_digest,
)

if TYPE_CHECKING:
    from quorumkit.protocols.pbft.node import PbftNode

#: views back for which a replica keeps its own view-change message (rule 5)
_KEEP_OWN_VIEW_CHANGES = 4
#: views for which a replica keeps the view-change messages of one sender
_KEEP_VIEW_CHANGES_PER_SENDER = 4

#: a re-issued pre-prepare of O before signing: (sequence number, digest, batch)
Issued = tuple[int, bytes, tuple[Request, ...]]


def on_timeout(node: PbftNode, ctx: Context) -> None:
    """The request timer (active) or the new-view timer (view change) expired (rule 1, 4)."""
    start_view_change(node, ctx, node.view + 1)


def start_view_change(node: PbftNode, ctx: Context, new_view: int) -> None:
    """Move to ``new_view`` and multicast our VIEW-CHANGE (rule 1)."""
    if new_view <= node.view:
        return
    node.view = new_view
    node.active = False
    node.vc_backoff += 1
    ctx.storage.put("view", (new_view, False))
    ctx.cancel_timer("view_change")
    node.vc_timer_armed = False
    node.queue.clear()
    node.queued.clear()
    node.ordered.clear()
    node.vc_by_view = {v: by for v, by in node.vc_by_view.items() if v >= new_view}
    ctx.trace("role", role="view-change", view=new_view)
    broadcast_view_change(node, ctx)


def broadcast_view_change(node: PbftNode, ctx: Context) -> None:
    """Build, sign and multicast this replica's view-change message for its current view."""
    prepared = tuple(cert for seq, cert in sorted(node.pset.items()) if seq > node.h)
    vc = node.sign(ViewChange(node.view, node.h, node.h_proof, prepared, node.node_id))
    _store(node, vc)
    node.own_vcs[node.view] = vc
    for old in [v for v in node.own_vcs if v < node.view - _KEEP_OWN_VIEW_CHANGES]:
        del node.own_vcs[old]
    # durable: after a restart we can still help a replica left behind in one of these views
    # (rule 5); otherwise the correct replicas could stay split across two views for ever
    ctx.storage.put("own_vcs", tuple(sorted(node.own_vcs.items())))
    ctx.broadcast(vc)
    _progress(node, ctx)


def on_view_change(node: PbftNode, ctx: Context, m: ViewChange) -> None:
    if m.new_view < node.view or (m.new_view == node.view and node.active):
        _help_behind(node, ctx, m)  # for a view already installed or left behind
        return
    stored = node.vc_by_view.get(m.new_view)
    if stored is not None and m.sender in stored:
        return
    problem = view_change_problem(node, m)
    if problem is not None:
        node.drop(problem if problem == "duplicate_sender" else "bad_view_change")
        return
    _store(node, m)
    higher = sorted(
        vc.new_view
        for who, vc in node.vc_latest.items()
        if who != node.node_id and vc.new_view > node.view
    )
    if len(higher) >= node.f + 1:
        start_view_change(node, ctx, higher[0])  # rule 4: join the smallest
        return
    _progress(node, ctx)


def _store(node: PbftNode, m: ViewChange) -> None:
    """Keep ``m`` by view (a NEW-VIEW needs 2f + 1 for one view) and as its sender's latest
    (the join rule); a sender keeps at most a few views, so the table stays bounded."""
    node.vc_by_view.setdefault(m.new_view, {})[m.sender] = m
    prev = node.vc_latest.get(m.sender)
    if prev is None or prev.new_view < m.new_view:
        node.vc_latest[m.sender] = m
    views = sorted(v for v, by in node.vc_by_view.items() if m.sender in by)
    for v in views[:-_KEEP_VIEW_CHANGES_PER_SENDER]:
        del node.vc_by_view[v][m.sender]
        if not node.vc_by_view[v]:
            del node.vc_by_view[v]


def _help_behind(node: PbftNode, ctx: Context, m: ViewChange) -> None:
    """Rule 5: a replica still changing to a view we have left gets what it lacks: the
    NEW-VIEW of that view or a later one if we installed it, else our own view-change message
    for its view and our current one. Each proves itself; the sender verifies them."""
    nv = node.new_view_msg
    if nv is not None and nv.view >= m.new_view:
        ctx.send(m.sender, nv)
        return
    own = node.own_vcs.get(m.new_view)
    if own is not None:
        ctx.send(m.sender, own)
    current = node.own_vcs.get(node.view)
    if not node.active and current is not None and current is not own:
        ctx.send(m.sender, current)


def _progress(node: PbftNode, ctx: Context) -> None:
    """With 2f + 1 view changes for our view: the primary sends NEW-VIEW, a backup starts its
    new-view timer (rule 2, 4)."""
    if node.active:
        return
    w = node.view
    vcs = node.vc_by_view.get(w, {})
    if len(vcs) < node.quorum:
        return
    if node.primary_of(w) == node.node_id:
        if node.node_id in vcs:
            send_new_view(node, ctx, vcs)
    elif not node.vc_timer_armed:
        ctx.set_timer("view_change", node.request_timeout())
        node.vc_timer_armed = True


def view_change_problem(node: PbftNode, m: ViewChange) -> str | None:
    """Why ``m`` is not a valid view-change message (None: it is)."""
    if m.new_view < 1 or m.stable_seq < 0 or m.stable_seq % node.K != 0:
        return "bad_view_change"
    if not node.verify(m):
        return "bad_signature"
    if m.stable_seq > 0:
        problem = _ckpt.checkpoint_proof_problem(node, m.stable_seq, m.checkpoint_proof)
        if problem is not None:
            return problem
    elif m.checkpoint_proof:
        return "bad_view_change"
    seqs: set[int] = set()
    for cert in m.prepared:
        pp = cert.pre_prepare
        if pp.seq in seqs or not m.stable_seq < pp.seq <= m.stable_seq + node.L:
            return "bad_view_change"
        if pp.view >= m.new_view:
            return "bad_view_change"
        seqs.add(pp.seq)
        problem = prepared_cert_problem(node, cert)
        if problem is not None:
            return problem
    return None


def prepared_cert_problem(node: PbftNode, cert: PreparedCert) -> str | None:
    """Why ``cert`` is not a prepared certificate: the pre-prepare signed by the primary of its
    view and 2f matching prepares from distinct backups (None: it is one)."""
    pp = cert.pre_prepare
    if pp.sender != node.primary_of(pp.view):
        return "bad_prepared_cert"
    senders: set[str] = set()
    for p in cert.prepares:
        if p.view != pp.view or p.seq != pp.seq or p.digest != pp.digest:
            return "bad_prepared_cert"
        if p.sender == pp.sender or p.sender not in node.member_set:
            return "bad_prepared_cert"
        if p.sender in senders:
            return "duplicate_sender"
        senders.add(p.sender)
    if len(senders) < node.quorum - 1:
        return "bad_prepared_cert"
    if batch_digest(pp.requests) != pp.digest:
        return "bad_digest"
    if not node.mac_mode and not node.verify(pp):  # MAC mode: the prepares vouch (rule 6)
        return "bad_signature"
    for r in pp.requests:
        if node.request_problem(r) is not None:
            return "bad_request"
    for p in cert.prepares:
        if not node.verify(p):
            return "bad_signature"
    return None


def compute_o(vcs: tuple[ViewChange, ...]) -> tuple[ViewChange, int, list[Issued]]:
    """Rule 2: the view change with the latest stable checkpoint (min-s), max-s, and O."""
    best = max(vcs, key=lambda vc: (vc.stable_seq, vc.sender))
    min_s = best.stable_seq
    chosen: dict[int, PrePrepare] = {}
    for vc in vcs:
        for cert in vc.prepared:
            pp = cert.pre_prepare
            if pp.seq <= min_s:
                continue
            cur = chosen.get(pp.seq)
            if cur is None or (pp.view, pp.digest) > (cur.view, cur.digest):
                chosen[pp.seq] = pp
    max_s = max(chosen, default=min_s)
    issued: list[Issued] = []
    for seq in range(min_s + 1, max_s + 1):
        pp_or_none = chosen.get(seq)
        if pp_or_none is None:
            issued.append((seq, NULL_DIGEST, ()))
        else:
            issued.append((seq, pp_or_none.digest, pp_or_none.requests))
    return best, max_s, issued


def send_new_view(node: PbftNode, ctx: Context, vcs: dict[str, ViewChange]) -> None:
    """Rule 2, at the new primary: V (its own view change and 2f others) and O."""
    order = {m: i for i, m in enumerate(node.members)}
    others = sorted((who for who in vcs if who != node.node_id), key=order.__getitem__)
    chosen = [node.node_id, *others[: node.quorum - 1]]
    chosen.sort(key=order.__getitem__)
    v = tuple(vcs[who] for who in chosen)
    best, max_s, issued = compute_o(v)
    w = node.view
    o = tuple(PrePrepare(w, seq, d, reqs, node.node_id) for seq, d, reqs in issued)
    if not node.mac_mode:
        o = tuple(node.sign(pp) for pp in o)  # MAC mode: the NEW-VIEW's signature covers O
    nv = node.sign(NewView(w, v, o, node.node_id))
    ctx.broadcast(nv)
    install_new_view(node, ctx, nv, best, max_s)


def on_new_view(node: PbftNode, ctx: Context, m: NewView) -> None:
    """Rule 3 (a NEW-VIEW multicast by its primary, or fetched by a lagging replica)."""
    w = m.view
    if w < node.view or (w == node.view and node.active):
        return
    if m.sender != node.primary_of(w):
        node.drop("not_primary")
        return
    if not node.verify(m):
        node.drop("bad_signature")
        return
    senders: set[str] = set()
    for vc in m.view_changes:
        if vc.sender in senders:
            node.drop("duplicate_sender")
            return
        if vc.new_view != w or vc.sender not in node.member_set:
            node.drop("bad_new_view")
            return
        senders.add(vc.sender)
    if len(senders) < node.quorum:
        node.drop("bad_new_view")
        return
    for vc in m.view_changes:
        problem = view_change_problem(node, vc)
        if problem is not None:
            node.drop(problem if problem == "duplicate_sender" else "bad_new_view")
            return
    best, max_s, issued = compute_o(m.view_changes)
    if len(issued) != len(m.pre_prepares):
        node.drop("bad_new_view")
        return
    for (seq, d, reqs), pp in zip(issued, m.pre_prepares, strict=True):
        if pp.view != w or pp.seq != seq or pp.digest != d or pp.sender != m.sender:
            node.drop("bad_new_view")
            return
        if pp.requests != reqs or not (node.mac_mode or node.verify(pp)):
            node.drop("bad_new_view")
            return
    install_new_view(node, ctx, m, best, max_s)


def install_new_view(
    node: PbftNode, ctx: Context, nv: NewView, best: ViewChange, max_s: int
) -> None:
    """Enter view ``nv.view``: adopt its stable checkpoint, accept O, prepare it (backups),
    and resume ordering (primary) with what clients are still waiting for."""
    from quorumkit.protocols.pbft.node import reset_slot

    w = nv.view
    node.view = w
    node.active = True
    node.new_view_msg = nv
    ctx.storage.put("view", (w, True))
    ctx.storage.put("nv", nv)
    ctx.cancel_timer("view_change")
    node.vc_timer_armed = False
    node.vc_latest = {who: vc for who, vc in node.vc_latest.items() if vc.new_view > w}
    node.vc_by_view = {v: by for v, by in node.vc_by_view.items() if v > w}
    node.queue.clear()
    node.queued.clear()
    node.ordered.clear()
    if best.stable_seq > node.h:
        d = best.checkpoint_proof[0].state_digest
        _ckpt.make_stable(node, ctx, best.stable_seq, d, best.checkpoint_proof)
    for s in node.log.values():
        if s.view != w:
            reset_slot(s, w)
    primary = node.is_primary()
    lo, hi = node.low(), node.h + node.L
    for pp in nv.pre_prepares:
        if not lo < pp.seq <= hi:
            continue
        s = node.slot(pp.seq)
        s.pre_prepare = pp
        node.persist_slot(ctx, s)
        for r in pp.requests:
            node.ordered[r.client] = max(node.ordered.get(r.client, -1), r.timestamp)
    top = max_s
    for s in sorted(node.log.values(), key=lambda s: s.seq):
        if s.pre_prepare is not None:
            top = max(top, s.seq)
            if not primary:
                node.send_prepare(ctx, s)
    ctx.trace("role", role="leader" if primary else "backup", view=w)
    if primary:
        node.seq_next = max(top, node.h, node.last_executed) + 1
        for req in sorted(node.pending.values(), key=lambda r: (r.client, r.timestamp)):
            node.enqueue(req)
    else:
        target = node.primary_of(w)
        for req in sorted(node.pending.values(), key=lambda r: (r.client, r.timestamp)):
            if node.ordered.get(req.client, -1) < req.timestamp:
                ctx.send(target, req)  # not re-issued in O: the new primary must learn it
        node.arm_request_timer(ctx)
    for s in sorted(node.log.values(), key=lambda s: s.seq):
        node.advance(ctx, s)
    node.execute_ready(ctx)
    _ckpt.check_lag(node, ctx)
