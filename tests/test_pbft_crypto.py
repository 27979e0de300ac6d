"""PBFT authentication (Castro & Liskov 1999, §3: signed messages; TOCS 2002 §2.1): Ed25519
keys, what a signature covers, and how replicas treat forged, misattributed and duplicated
messages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pbft_helpers import (
    FOUR,
    client_request,
    deliver,
    drive,
    keyring,
    new_node,
    pre_prepare,
    signed,
)
from quorumkit.codec import decode_message, encode
from quorumkit.errors import ConfigError, InvariantViolation
from quorumkit.protocols.pbft import (
    Executed,
    PbftChecker,
    PbftConfig,
    PbftNode,
    Prepare,
    Request,
    batch_digest,
)
from quorumkit.protocols.pbft.crypto import (
    Keyring,
    generate_keypair,
    key_owner,
    public_from_private,
    signing_bytes,
    sim_private_bytes,
    write_keypair,
)
from quorumkit.sim.core import Simulation


def test_signature_covers_the_encoding_without_the_signature_field() -> None:
    msg = Prepare(0, 1, b"d" * 32, "n2")
    body = signing_bytes(msg)
    assert body == signing_bytes(dataclasses.replace(msg, signature=b"x" * 64))
    good = signed(msg)
    assert keyring("n1").verify("n2", body, good.signature)
    for field, value in (("view", 1), ("seq", 2), ("digest", b"e" * 32), ("sender", "n3")):
        tampered = dataclasses.replace(good, **{field: value})
        assert not keyring("n1").verify(tampered.sender, signing_bytes(tampered), good.signature)


def test_signed_messages_survive_the_wire_encoding() -> None:
    msg = signed(Prepare(3, 7, b"d" * 32, "n4"))
    back = decode_message(encode(msg))
    assert back == msg
    assert keyring("n1").verify("n4", signing_bytes(back), back.signature)


def test_nested_messages_verify_after_a_wire_round_trip() -> None:
    """The runtime decodes (lists become tuples) and re-encodes to verify: the encoding of a
    decoded message must be the bytes that were signed."""
    op = ("session", "alice", 3, ("put", "k", {"a": [1, 2.5, b"x", None]}))
    req = client_request("c1", 1, op)
    pp = pre_prepare(0, 1, [req], "n1")
    back = decode_message(encode(pp))
    assert signing_bytes(back) == signing_bytes(pp)
    ring = keyring("n2")
    assert ring.verify("n1", signing_bytes(back), back.signature)
    inner = back.requests[0]
    assert ring.verify("c1", signing_bytes(inner), inner.signature)
    assert batch_digest(back.requests) == pp.digest


def test_simulator_keys_are_deterministic_and_distinct() -> None:
    assert sim_private_bytes("n1") == sim_private_bytes("n1")
    assert sim_private_bytes("n1") != sim_private_bytes("n2")
    a = Keyring.simulated_for("n1", FOUR).sign(b"m")
    b = Keyring.simulated_for("n1", FOUR).sign(b"m")
    assert a == b  # Ed25519 is deterministic: runs replay byte for byte
    assert not keyring("n3").verify("n2", b"m", a)


def test_proxy_lanes_sign_with_their_replica_key_and_strangers_are_unknown() -> None:
    ring = keyring("n1")
    assert key_owner("n2/7") == "n2"
    assert key_owner("n2/x") == ""
    sig = keyring("n2").sign(b"m")
    assert ring.verify("n2/7", b"m", sig)
    assert ring.knows("c12")
    for stranger in ("x9", "n9", "n2/abc", "c12/3", ""):
        assert not ring.knows(stranger)
        assert not ring.verify(stranger, b"m", sig)


def test_client_command_is_signed_by_its_client_and_repeatable() -> None:
    req = PbftNode.client_command(None, 5, 3, ("put", "k", "v"))
    assert req.client == "c5" and req.timestamp == 3
    assert keyring("n1").verify("c5", signing_bytes(req), req.signature)
    assert PbftNode.client_command(None, 5, 3, ("put", "k", "v")) == req  # a retry: same bytes
    with pytest.raises(ConfigError):
        PbftNode.client_command(None, 5, 0, ("put", "k", "v"))


def test_key_files_and_cluster_configuration(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    publics = {}
    for who in (*FOUR, "c1"):
        priv, _pub, raw = write_keypair(folder, who)
        assert oct(priv.stat().st_mode & 0o777) == "0o600"
        publics[who] = raw
    with pytest.raises(ConfigError):
        write_keypair(folder, "n1")  # never overwrite a key by accident
    conf = tmp_path / "cluster.json"
    conf.write_text(
        json.dumps(
            {
                "replicas": {w: publics[w].hex() for w in FOUR},
                "clients": {"c1": "keys/c1.pub"},
                "keys_dir": "keys",
            }
        )
    )
    ring = Keyring.from_cluster_config(conf, "n2")
    sig = ring.sign(b"m")
    other = Keyring.from_cluster_config(conf, "n3")
    assert other.verify("n2", b"m", sig)
    assert other.knows("c1") and not other.knows("c2")
    assert other.verify("n2/4", b"m", sig)  # a proxy lane of replica n2

    # the whole cluster runs on file keys, and a client signs with its own file key
    sim = Simulation("pbft", nodes=4, seed=1, keys=str(conf), check_invariants=True)
    done = drive(sim, 5, clients=1)
    assert sim.run_until(lambda: len(done) == 5, 5)
    req = PbftNode.client_command(sim.config, 1, 1, ("put", "x", 1))
    assert other.verify("c1", signing_bytes(req), req.signature)


def test_bad_key_material_is_a_config_error(tmp_path: Path) -> None:
    folder = tmp_path
    priv, pub = generate_keypair()
    assert public_from_private(priv) == pub
    (folder / "n1.key").write_text(priv.hex())
    _, wrong = generate_keypair()
    with pytest.raises(ConfigError, match="does not match"):
        Keyring.from_files("n1", folder / "n1.key", {"n1": wrong})
    (folder / "bad.key").write_text("not hex")
    with pytest.raises(ConfigError, match="not hex"):
        Keyring.from_files("n1", folder / "bad.key", {})
    with pytest.raises(ConfigError, match="cannot read"):
        Keyring.from_files("n1", folder / "missing.key", {})
    (folder / "c.json").write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        Keyring.from_cluster_config(folder / "c.json", "n1")


def test_unknown_authentication_modes_are_refused_with_a_clear_error() -> None:
    assert PbftConfig.from_options(auth="mac").auth == "mac"  # tests/test_pbft_mac.py
    with pytest.raises(ConfigError, match="auth must be one of signatures, mac"):
        PbftConfig.from_options(auth="hmac")


# ------------------------------------------------------------------ replicas drop forgeries


def test_a_bad_signature_is_dropped_and_counted() -> None:
    node, ctx = new_node("n2")
    forged = dataclasses.replace(signed(Prepare(0, 1, b"d" * 32, "n3")), signature=b"\0" * 64)
    deliver(node, ctx, "n3", forged)
    assert node.log[1].prepares == {}
    assert node.status()["dropped"] == {"bad_signature": 1}


def test_a_message_whose_sender_is_not_its_network_source_is_dropped() -> None:
    node, ctx = new_node("n2")
    msg = signed(Prepare(0, 1, b"d" * 32, "n3"))
    deliver(node, ctx, "n4", msg)  # n4 relays n3's prepare as its own
    assert 1 not in node.log
    assert node.dropped == {"wrong_sender": 1}
    deliver(node, ctx, "n9", signed(Prepare(0, 1, b"d" * 32, "n9"), "n1"))
    assert node.dropped == {"wrong_sender": 1, "unknown_sender": 1}


def test_a_signature_by_another_replica_is_not_the_senders() -> None:
    node, ctx = new_node("n2")
    deliver(node, ctx, "n3", signed(Prepare(0, 1, b"d" * 32, "n3"), identity="n4"))
    assert node.dropped == {"bad_signature": 1}


def test_each_message_is_verified_once() -> None:
    node, ctx = new_node("n2")
    req = client_request("c1", 1, ("put", "k", "v"))
    deliver(node, ctx, "n3", req)  # relayed by a backup
    first = node.verifications
    assert first == 1
    deliver(node, ctx, "n4", req)
    deliver(node, ctx, "n1", pre_prepare(0, 1, [req], "n1"))
    assert node.verifications == first + 1  # only the pre-prepare is new


def test_a_pre_prepare_with_a_request_its_client_did_not_sign_is_dropped() -> None:
    node, ctx = new_node("n2")
    honest = client_request("c1", 1, ("put", "k", "v"))
    forged = dataclasses.replace(honest, op=("put", "k", "evil"))
    deliver(node, ctx, "n1", pre_prepare(0, 1, [forged], "n1"))
    assert node.dropped == {"bad_request": 1}
    assert node.log.get(1) is None or node.log[1].pre_prepare is None
    assert not ctx.sent_of(Prepare)


def test_a_client_command_with_a_bad_signature_is_refused() -> None:
    node, ctx = new_node("n2")
    req = dataclasses.replace(client_request("c1", 1, ("put", "k", "v")), timestamp=2)
    from quorumkit.protocol import ClientRequest

    node.on_client(ctx, ClientRequest(1, req))
    assert ctx.replies[0][1]["error"] == "bad_signature"
    node.on_client(ctx, ClientRequest(2, signed(Request(("get", "k"), 1, "x1"), "n1")))
    assert ctx.replies[1][1]["error"] == "unknown_client"


def test_checker_validity_catches_an_executed_request_nobody_signed() -> None:
    node, _ = new_node("n2")
    forged = Request(("put", "k", "v"), 1, "c1", b"\1" * 64)
    node.executed.append(Executed(1, batch_digest((forged,)), (forged,)))
    with pytest.raises(InvariantViolation, match="validity"):
        PbftChecker().check({"n2": node})
