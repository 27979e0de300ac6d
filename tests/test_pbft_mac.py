"""PBFT with MAC authenticators (``auth="mac"``; Castro & Liskov, OSDI 1999 §5 and TOCS 2002
§3.2): authenticator vectors on the normal case, Ed25519 on what serves as proof, pairwise
session keys from X25519 + HKDF."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pbft_helpers import (
    FOUR,
    SEVEN,
    Wire,
    client_request,
    correct_digests,
    deliver,
    drive,
    keyring,
    new_node,
    signed,
)
from quorumkit.errors import ConfigError
from quorumkit.protocols.pbft import (
    Commit,
    CommitCert,
    PbftConfig,
    PbftNode,
    Prepare,
    PrePrepare,
    batch_digest,
)
from quorumkit.protocols.pbft.auth import MAC_BYTES, Authenticator
from quorumkit.protocols.pbft.crypto import (
    Keyring,
    signing_bytes,
    write_cluster_config,
    write_keypair,
    x25519_public_from_private,
)
from quorumkit.protocols.pbft.messages import Fetch, StateTransfer
from quorumkit.sim.core import Simulation
from runtime_helpers import running_cluster

MAC = {"auth": "mac"}


def authed(msg: object, identity: str | None = None, members: tuple[str, ...] = FOUR) -> object:
    """``msg`` with the authenticator vector its sender (or ``identity``) computes for every
    other replica, with the simulator's keys of that identity."""
    who = identity if identity is not None else msg.sender  # type: ignore[attr-defined]
    vector, _ = Authenticator(keyring(who, members), members).vector(signing_bytes(msg))
    return dataclasses.replace(msg, signature=vector)  # type: ignore[type-var]


def entry(vector: bytes, member: str, members: tuple[str, ...] = FOUR) -> bytes:
    i = members.index(member)
    return vector[i * MAC_BYTES : (i + 1) * MAC_BYTES]


# ------------------------------------------------------------------ normal operation


@pytest.mark.parametrize("members", [4, 7])
def test_normal_operation_with_mac_authenticators(members: int) -> None:
    sim = Simulation("pbft", nodes=members, seed=5, check_invariants=True, **MAC)
    done = drive(sim, 120, clients=6)
    assert sim.run_until(lambda: len(done) == 120, 10)
    assert all(r is None for _, r in done)
    sim.run(0.2)
    assert len(correct_digests(sim)) == 1
    for n in sim.nodes:
        p = sim.protocol(n)
        assert isinstance(p, PbftNode)
        assert p.macs > 0 and p.last_executed > 0
        assert not p.dropped, (n, p.dropped)
        assert p.status()["auth"] == "mac"


def test_which_messages_carry_authenticators_and_which_signatures() -> None:
    w = Wire(**MAC)
    w.client("n2", ("put", "k", "v"))
    w.run()
    assert w.replies("n2") == [None]
    size = MAC_BYTES * len(FOUR)
    (pp,) = w.sent_by("n1", PrePrepare)
    assert len(pp.signature) == size
    assert entry(pp.signature, "n1") == bytes(MAC_BYTES)  # no entry for the sender itself
    assert all(entry(pp.signature, m) != bytes(MAC_BYTES) for m in ("n2", "n3", "n4"))
    for node in ("n2", "n3", "n4"):
        (p,) = w.sent_by(node, Prepare)  # a prepare is proof in view changes: signed
        assert keyring("n1").verify(node, signing_bytes(p), p.signature)
    for node in FOUR:
        (c,) = w.sent_by(node, Commit)
        assert len(c.signature) == size
    # the reply to the proxy replica n2 carries one entry: n2's
    from quorumkit.protocols.pbft import Reply

    for node in ("n1", "n3", "n4"):
        for r in w.sent_by(node, Reply):
            assert [m for m in FOUR if entry(r.signature, m) != bytes(MAC_BYTES)] == ["n2"]


# ------------------------------------------------------------------ forgeries


def test_a_tampered_authenticator_entry_is_dropped_and_counted() -> None:
    node, ctx = new_node("n2", **MAC)
    commit = authed(Commit(0, 1, b"d" * 32, "n3"))
    assert isinstance(commit, Commit)
    vec = bytearray(commit.signature)
    vec[FOUR.index("n2") * MAC_BYTES] ^= 1
    sig_before = node.verifications
    deliver(node, ctx, "n3", dataclasses.replace(commit, signature=bytes(vec)))
    assert node.dropped == {"bad-mac": 1}
    assert node.macs == 1 and node.verifications == sig_before
    assert "n3" not in node.log[1].commits
    # an entry for another replica does not concern n2: only its own entry is checked
    other = bytearray(commit.signature)
    other[FOUR.index("n4") * MAC_BYTES] ^= 1
    deliver(node, ctx, "n3", dataclasses.replace(commit, signature=bytes(other)))
    assert node.dropped == {"bad-mac": 1} and "n3" in node.log[1].commits
    # a truncated vector and a signature in place of the vector fail as well
    for bad in (commit.signature[:-1], signed(Commit(0, 2, b"d" * 32, "n3")).signature):
        deliver(node, ctx, "n3", dataclasses.replace(commit, seq=2, signature=bad))
    assert node.dropped == {"bad-mac": 3}


def test_session_keys_are_pairwise() -> None:
    rings = {m: keyring(m) for m in FOUR}
    k12 = rings["n1"].mac_key("n2")
    assert k12 is not None and k12 == rings["n2"].mac_key("n1")
    assert len({rings[a].mac_key(b) for a in FOUR for b in FOUR if a < b}) == 6
    assert rings["n1"].mac_key("n1") is None and rings["n1"].mac_key("c1") is None


def test_a_byzantine_replica_cannot_forge_a_mac_between_two_other_replicas() -> None:
    """n4 is byzantine: its keys give it the session keys (n4, x) only, so whatever it puts in
    the entry of n2 of a message claiming n1 or n3 fails at n2."""
    node, ctx = new_node("n2", **MAC)
    req = client_request("c1", 1, ("put", "k", "v"))
    pp = PrePrepare(0, 1, batch_digest((req,)), (req,), "n1")
    forged_pp = authed(pp, identity="n4")  # n4's keys, n1's name
    deliver(node, ctx, "n1", forged_pp)  # even over a spoofed network source
    assert node.dropped == {"bad-mac": 1} and 1 not in node.log
    forged_commit = authed(Commit(0, 1, pp.digest, "n3"), identity="n4")
    deliver(node, ctx, "n3", forged_commit)
    assert node.dropped == {"bad-mac": 2} and not node.log[1].commits
    # the real primary's pre-prepare is accepted (and n2 prepares it)
    deliver(node, ctx, "n1", authed(pp))
    assert node.log[1].pre_prepare is not None and ctx.take(Prepare)


def test_a_forged_committed_certificate_in_state_transfer_is_dropped() -> None:
    """A byzantine n4 hands n2 a committed certificate whose commits claim n1 and n3: n2
    checks its own entry of each commit and drops it."""
    node, ctx = new_node("n2", **MAC)
    req = client_request("c1", 1, ("put", "k", "v"))
    pp = authed(PrePrepare(0, 1, batch_digest((req,)), (req,), "n1"), identity="n4")
    assert isinstance(pp, PrePrepare)
    commits = tuple(
        authed(Commit(0, 1, pp.digest, who), identity="n4") for who in ("n1", "n3", "n4")
    )
    cert = CommitCert(pp, commits)  # type: ignore[arg-type]
    st = signed(StateTransfer(0, b"", (), None, (cert,), "n4"))
    deliver(node, ctx, "n4", st)
    assert node.dropped == {"bad-mac": 1}
    assert node.last_executed == 0 and (1 not in node.log or node.log[1].committed is None)


# ------------------------------------------------------------------ view change and state transfer


def test_a_view_change_completes_in_mac_mode() -> None:
    sim = Simulation("pbft", nodes=4, seed=31, check_invariants=True, **MAC)
    done = drive(sim, 10, clients=2, nodes=["n2", "n3", "n4"])
    assert sim.run_until(lambda: len(done) == 10, 2)
    sim.crash("n1")
    more = drive(sim, 20, clients=2, nodes=["n2", "n3", "n4"])
    assert sim.run_until(lambda: len(more) == 20, 5)
    assert sim.leader() == "n2"
    assert {sim.status(n)["view"] for n in ("n2", "n3", "n4")} == {1}
    sim.restart("n1")  # the old primary learns the new view (signed NEW-VIEW) and catches up
    sim.run(1.5)
    assert sim.status("n1")["view"] == 1
    assert len(correct_digests(sim)) == 1
    for n in sim.nodes:
        p = sim.protocol(n)
        assert isinstance(p, PbftNode)
        assert "bad-mac" not in p.dropped and "bad_new_view" not in p.dropped, p.dropped


def test_a_view_change_with_prepared_requests_keeps_them_in_mac_mode() -> None:
    """Prepared but not committed in view 0 (commits lost): the NEW-VIEW of view 1 re-issues
    the batch from the signed prepares of the view changes, and it executes."""
    w = Wire(**MAC)
    w.client("n2", ("put", "k", "v"))
    w.run(drop=lambda src, dst, msg: isinstance(msg, Commit))
    assert all(w.nodes[m].last_executed == 0 for m in FOUR)
    assert all(1 in w.nodes[m].pset for m in FOUR)
    w.down.add("n1")
    for m in ("n2", "n3", "n4"):
        w.fire(m, "view_change")
    w.run()
    assert [w.nodes[m].view for m in ("n2", "n3", "n4")] == [1, 1, 1]
    assert all(w.nodes[m].active and w.nodes[m].last_executed == 1 for m in ("n2", "n3", "n4"))
    assert w.replies("n2") == [None]
    assert all(not w.nodes[m].dropped for m in ("n2", "n3", "n4"))


def test_a_lagging_replica_catches_up_by_state_transfer_in_mac_mode() -> None:
    sim = Simulation(
        "pbft", nodes=4, seed=22, trace="off", check_invariants=True, checkpoint_interval=8, **MAC
    )
    sim.disconnect("n4")
    done = drive(sim, 150, clients=4, nodes=["n1", "n2", "n3"])
    assert sim.run_until(lambda: len(done) == 150, 20)
    lagging, leader = sim.protocol("n4"), sim.protocol("n1")
    assert isinstance(lagging, PbftNode) and isinstance(leader, PbftNode)
    assert lagging.last_executed == 0
    sim.reconnect("n4")
    assert sim.run_until(lambda: lagging.last_executed == leader.last_executed, 5)
    assert any(e.requests is None for e in lagging.executed)  # a stable checkpoint's state
    more = drive(sim, 10, clients=2)
    assert sim.run_until(lambda: len(more) == 10, 5)
    sim.run(0.2)
    assert lagging.last_executed == leader.last_executed
    assert len(correct_digests(sim)) == 1


def test_committed_certificates_with_authenticators_are_checked_by_the_lagging_replica() -> None:
    """n4 misses every commit; a Fetch brings it committed certificates whose commits carry
    their whole authenticator vectors: it checks its own entries and executes. Its own commit
    (which it cannot check by MAC) counts only because its records show that it sent it."""
    w = Wire(**MAC)
    w.client("n2", ("put", "k", "v"))
    w.run(drop=lambda src, dst, msg: dst == "n4" and isinstance(msg, Commit))
    n4 = w.nodes["n4"]
    assert n4.last_executed == 0 and w.nodes["n1"].last_executed == 1
    w.ctxs["n4"].send("n1", n4.sign(Fetch(0, 0, True, "n4")))
    w.run()
    assert n4.last_executed == 1 and not n4.dropped
    (st,) = w.sent_by("n1", StateTransfer)
    assert all(c.sender != "n4" for c in st.certs[0].commits)  # the responder avoided n4's
    # a certificate holding n4's own commit: accepted from n4's records (it is prepared)
    fresh = Wire(**MAC)
    fresh.client("n2", ("put", "k", "v"))
    fresh.run(drop=lambda src, dst, msg: dst == "n4" and isinstance(msg, Commit))
    slot = fresh.nodes["n1"].log[1]
    own = slot.commits["n4"]
    cert = CommitCert(slot.pre_prepare, (slot.commits["n1"], slot.commits["n2"], own))  # type: ignore[arg-type]
    lag = fresh.nodes["n4"]
    deliver(lag, fresh.ctxs["n4"], "n1", signed(StateTransfer(0, b"", (), None, (cert,), "n1")))
    assert lag.last_executed == 1 and not lag.dropped
    # ... but not by a replica that never sent it: n4 missed the prepares, so it never
    # prepared nor committed, and a byzantine n3 claims a commit of n4 in a certificate
    other = Wire(**MAC)
    other.client("n2", ("put", "k", "v"))
    other.run(drop=lambda src, dst, msg: dst == "n4" and isinstance(msg, (Prepare, Commit)))
    n4b = other.nodes["n4"]
    assert 1 not in n4b.pset and "n4" not in other.nodes["n1"].log[1].commits
    good = other.nodes["n1"].log[1]
    claimed = authed(Commit(0, 1, good.pre_prepare.digest, "n4"), identity="n3")  # type: ignore[union-attr]
    bogus = CommitCert(good.pre_prepare, (good.commits["n1"], good.commits["n2"], claimed))  # type: ignore[arg-type]
    deliver(n4b, other.ctxs["n4"], "n3", signed(StateTransfer(0, b"", (), None, (bogus,), "n3")))
    assert n4b.last_executed == 0 and n4b.dropped == {"bad-mac": 1}


# ------------------------------------------------------------------ costs


def _costs(auth: str) -> tuple[float, float, int]:
    sim = Simulation("pbft", nodes=4, seed=9, trace="off", auth=auth)
    done = drive(sim, 200, clients=1)
    assert sim.run_until(lambda: len(done) == 200, 20)
    nodes = [sim.protocol(n) for n in sim.nodes]
    assert all(isinstance(p, PbftNode) for p in nodes)
    verif = sum(p.verifications for p in nodes)  # type: ignore[union-attr]
    sigs = sum(p.signatures for p in nodes)  # type: ignore[union-attr]
    macs = sum(p.macs for p in nodes)  # type: ignore[union-attr]
    return verif / len(done), sigs / len(done), macs


def test_signature_verifications_per_request_drop_substantially_with_macs() -> None:
    verif_sig, signs_sig, macs_sig = _costs("signatures")
    verif_mac, signs_mac, macs_mac = _costs("mac")
    assert macs_sig == 0 and macs_mac > 0
    # pre-prepares, commits and replies no longer cost signature verifications
    assert verif_mac / verif_sig < 0.6, (verif_mac, verif_sig)
    assert signs_mac / signs_sig < 0.6, (signs_mac, signs_sig)


# ------------------------------------------------------------------ keys and configuration


def _key_folder(tmp_path: Path, members: tuple[str, ...] = FOUR, *, x25519: bool = True) -> Path:
    from quorumkit.protocols.pbft.crypto import read_key_file

    public = {m: write_keypair(tmp_path, m)[2] for m in members}
    xs = {
        m: x25519_public_from_private(read_key_file(tmp_path / f"{m}.x25519.key")) for m in members
    }
    config = tmp_path / "cluster-keys.json"
    write_cluster_config(config, public, x25519=xs if x25519 else None)
    return config


def test_key_files_give_pairwise_session_keys(tmp_path: Path) -> None:
    config = _key_folder(tmp_path)
    assert (tmp_path / "n1.x25519.key").stat().st_mode & 0o077 == 0
    assert "x25519" in json.loads(config.read_text())
    rings = {m: Keyring.from_cluster_config(config, m) for m in FOUR}
    assert rings["n1"].mac_key("n2") == rings["n2"].mac_key("n1") is not None
    assert rings["n1"].mac_key("n2") != rings["n3"].mac_key("n2")
    assert rings["n1"].mac_key("n2") != keyring("n1").mac_key("n2")  # not the simulator's
    nodes = {m: PbftNode(m, FOUR, PbftConfig(auth="mac", keys=str(config))) for m in FOUR}
    assert nodes["n1"].keyring.mac_problem(FOUR) is None


def test_mac_mode_without_x25519_keys_is_a_clear_config_error(tmp_path: Path) -> None:
    config = _key_folder(tmp_path, x25519=False)
    assert "x25519" not in json.loads(config.read_text())
    # backward compatible: signatures mode runs on such a configuration
    PbftNode("n1", FOUR, PbftConfig(keys=str(config)))
    with pytest.raises(ConfigError, match=r"auth='mac' needs X25519 keys.*'x25519' section"):
        PbftNode("n1", FOUR, PbftConfig(auth="mac", keys=str(config)))


def test_missing_or_mismatched_x25519_keys_are_clear_config_errors(tmp_path: Path) -> None:
    config = _key_folder(tmp_path)
    (tmp_path / "n1.x25519.key").unlink()
    with pytest.raises(ConfigError, match="no X25519 private key for 'n1'"):
        PbftNode("n1", FOUR, PbftConfig(auth="mac", keys=str(config)))
    doc = json.loads(config.read_text())
    del doc["x25519"]["n4"]
    config.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"no X25519 public keys of \['n4'\]"):
        PbftNode("n2", FOUR, PbftConfig(auth="mac", keys=str(config)))
    doc["x25519"]["n2"] = doc["x25519"]["n3"]
    config.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="X25519 private key of 'n2' does not match"):
        PbftNode("n2", FOUR, PbftConfig(auth="mac", keys=str(config)))
    doc["x25519"] = ["not", "an", "object"]
    config.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="'x25519' of the cluster configuration"):
        PbftNode("n2", FOUR, PbftConfig(keys=str(config)))
    with pytest.raises(ConfigError, match="auth must be one of signatures, mac"):
        PbftConfig.from_options(auth="macs")


def test_keygen_writes_x25519_keys_and_the_config_section(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from quorumkit.cli import app

    out = tmp_path / "keys"
    result = CliRunner().invoke(
        app, ["keygen", "--ed25519", "--ids", "n1,n2,n3,n4", "--clients", "c1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "cluster-keys.json").read_text())
    assert sorted(doc["x25519"]) == list(FOUR)
    node = PbftNode("n3", FOUR, PbftConfig(auth="mac", keys=str(out / "cluster-keys.json")))
    assert node.keyring.mac_key("n1") is not None


def test_seven_replicas_use_seven_entry_vectors() -> None:
    node, ctx = new_node("n5", SEVEN, **MAC)
    c = authed(Commit(0, 1, b"d" * 32, "n6"), members=SEVEN)
    assert isinstance(c, Commit) and len(c.signature) == 7 * MAC_BYTES
    deliver(node, ctx, "n6", c)
    assert "n6" in node.log[1].commits and not node.dropped


# ------------------------------------------------------------------ runtime


def test_a_runtime_cluster_in_mac_mode_serves_a_write(tmp_path: Path) -> None:
    with running_cluster(tmp_path, 4, protocol="pbft", protocol_options={"auth": "mac"}) as c:
        assert "x25519" in json.loads((c.data_dir / "keys" / "cluster-keys.json").read_text())
        c.put_sure(c.ids[1], "mac-key", "mac-value")
        for n in c.ids:
            assert c.value(n, "mac-key") == "mac-value"
        st = c.status(c.ids[0])
        assert st is not None and st.get("auth") == "mac" and st.get("macs", 0) > 0, st
    assert not any(c.alive(n) for n in c.ids)
