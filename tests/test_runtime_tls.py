"""Mutual TLS between peers (issue 5, deliverable 2: "optional mutual TLS").

Two transports on loopback with certificates from ``write_cluster_certs``: frames flow; a peer
with a certificate from another CA, a certificate naming another node, or no TLS at all is
refused and counted, and the refusing side keeps serving.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from quorumkit.errors import ConfigError
from quorumkit.net.framing import make_frame
from quorumkit.net.tls import (
    TlsFiles,
    certificate_names,
    client_context,
    own_identity,
    server_context,
    write_cluster_certs,
)
from quorumkit.net.transport import Transport
from quorumkit.protocols.raft.messages import RequestVote

MEMBERS = ("n1", "n2", "n3")


def files(folder: Path, node: str) -> TlsFiles:
    return TlsFiles(folder / f"{node}.pem", folder / f"{node}.key", folder / "ca.pem")


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    """The node runs on uvloop when it is installed, on asyncio's loop otherwise: test both."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return str(request.param)


def run(main: Callable[[], Awaitable[None]], loop_kind: str) -> None:
    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(main())  # type: ignore[arg-type]
    else:
        asyncio.run(main())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    write_cluster_certs(folder, list(MEMBERS))
    return folder


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("other")
    write_cluster_certs(folder, list(MEMBERS))
    return folder


async def wait_for(cond: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def run_pair(
    receiver_tls: TlsFiles | None,
    sender_tls: TlsFiles | None,
    body: Callable[[Transport, Transport, list[Any]], Awaitable[None]],
    loop_kind: str,
    sender_id: str = "n1",
) -> None:
    """A receiver n2 and a sender; ``body`` drives them; both are stopped afterwards."""

    async def main() -> None:
        got: list[Any] = []
        receiver = Transport(
            "n2",
            {m: ("127.0.0.1", 0) for m in MEMBERS},
            lambda s, m: got.append((s, m)),
            key=None,
            tls=receiver_tls,
        )
        await receiver.start("127.0.0.1", 0)
        assert receiver.server is not None
        port = receiver.server.sockets[0].getsockname()[1]
        peers = {m: ("127.0.0.1", 0) for m in MEMBERS}
        peers["n2"] = ("127.0.0.1", port)
        sender = Transport(sender_id, peers, lambda s, m: None, key=None, tls=sender_tls)
        await sender.start("127.0.0.1", 0)
        try:
            await asyncio.wait_for(body(receiver, sender, got), 60)  # a failure, never a hang
        finally:
            await asyncio.wait_for(sender.stop(), 20)
            await asyncio.wait_for(receiver.stop(), 20)

    run(main, loop_kind)


def test_certificates_name_their_node(certs: Path) -> None:
    for node in MEMBERS:
        assert own_identity(files(certs, node)) == frozenset({node})
    assert (certs / "n1.key").stat().st_mode & 0o077 == 0
    assert (certs / "ca.key").stat().st_mode & 0o077 == 0


def test_frames_flow_over_mutual_tls(certs: Path, loop_kind: str) -> None:
    async def body(receiver: Transport, sender: Transport, got: list[Any]) -> None:
        await wait_for(lambda: sender.peers["n2"].connected, "a TLS connection")
        for term in range(1, 6):
            sender.send("n2", RequestVote(term, "n1", 0, 0))
        await wait_for(lambda: len(got) == 5, "five frames")
        assert [m.term for _, m in got] == [1, 2, 3, 4, 5]
        assert {s for s, _ in got} == {"n1"}
        assert receiver.dropped == {} and sender.dropped == {}

    run_pair(files(certs, "n2"), files(certs, "n1"), body, loop_kind)


def test_a_certificate_from_another_ca_is_refused_and_the_receiver_keeps_serving(
    certs: Path, other_ca: Path, loop_kind: str
) -> None:
    async def body(receiver: Transport, sender: Transport, got: list[Any]) -> None:
        await wait_for(
            lambda: (
                receiver.dropped.get("tls_handshake_failed", 0) >= 1
                and sender.dropped.get("tls_handshake_failed", 0) >= 1
            ),
            "both ends to count the failed handshake",
        )
        sender.send("n2", RequestVote(1, "n1", 0, 0))
        await asyncio.sleep(0.2)
        assert got == [] and not sender.peers["n2"].connected
        # the receiver still serves a peer with the right certificate
        good = Transport(
            "n3",
            {**{m: ("127.0.0.1", 0) for m in MEMBERS}, "n2": sender.addresses["n2"]},
            lambda s, m: None,
            key=None,
            tls=files(certs, "n3"),
        )
        await good.start("127.0.0.1", 0)
        try:
            await wait_for(lambda: good.peers["n2"].connected, "a good peer to connect")
            good.send("n2", RequestVote(7, "n3", 0, 0))
            await wait_for(lambda: len(got) == 1, "the good peer's frame")
            assert got[0][0] == "n3" and got[0][1].term == 7
        finally:
            await good.stop()

    run_pair(files(certs, "n2"), files(other_ca, "n1"), body, loop_kind)


def test_the_dialler_refuses_a_peer_whose_certificate_names_another_node(
    certs: Path, loop_kind: str
) -> None:
    """n1 dials the address of n2, and finds a node holding n3's certificate there."""

    async def body(receiver: Transport, sender: Transport, got: list[Any]) -> None:
        await wait_for(
            lambda: sender.dropped.get("tls_identity_mismatch", 0) >= 1, "the dialler to refuse"
        )
        assert not sender.peers["n2"].connected and got == []

    run_pair(files(certs, "n3"), files(certs, "n1"), body, loop_kind)


def test_frames_must_come_from_the_node_the_certificate_names(certs: Path, loop_kind: str) -> None:
    """A node holding n1's certificate sends frames claiming to be n3: the connection closes."""

    async def body(receiver: Transport, sender: Transport, got: list[Any]) -> None:
        assert receiver.server is not None
        port = receiver.server.sockets[0].getsockname()[1]
        ctx = client_context(files(certs, "n1"))
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        assert certificate_names(writer.get_extra_info("peercert")) == {"n2"}
        me = writer.get_extra_info("sockname")[1]

        def mine_open() -> bool:  # the receiver's end of this connection is still served
            return any(w.get_extra_info("peername")[1] == me for w in receiver._conns)

        await wait_for(mine_open, "the receiver to serve the connection")
        writer.write(make_frame("n3", "n2", RequestVote(9, "n3", 0, 0), None))
        await writer.drain()
        await wait_for(
            lambda: receiver.dropped.get("tls_identity_mismatch", 0) == 1, "the mismatch count"
        )
        await wait_for(lambda: not mine_open(), "the receiver to close the connection")
        writer.transport.abort()
        assert [m.term for s, m in got if s == "n3"] == []

    run_pair(files(certs, "n2"), files(certs, "n1"), body, loop_kind)


def test_a_plaintext_peer_is_refused_by_a_tls_node(certs: Path, loop_kind: str) -> None:
    async def body(receiver: Transport, sender: Transport, got: list[Any]) -> None:
        await wait_for(
            lambda: receiver.dropped.get("tls_handshake_failed", 0) >= 1, "the refused handshake"
        )
        sender.send("n2", RequestVote(1, "n1", 0, 0))
        await asyncio.sleep(0.2)
        assert got == []

    run_pair(files(certs, "n2"), None, body, loop_kind)


def test_tls_files_are_checked_before_the_node_starts(certs: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing --tls-key, --tls-ca"):
        TlsFiles.from_options(str(certs / "n1.pem"), None, None)
    with pytest.raises(ConfigError, match="no such file"):
        TlsFiles.from_options(str(tmp_path / "x.pem"), str(certs / "n1.key"), str(certs / "ca.pem"))
    assert TlsFiles.from_options(None, None, None) is None
    mismatched = TlsFiles(certs / "n1.pem", certs / "n2.key", certs / "ca.pem")
    with pytest.raises(ConfigError, match="cannot load the certificate"):
        server_context(mismatched)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="--tls-ca"):
        client_context(TlsFiles(certs / "n1.pem", certs / "n1.key", garbage))
    ctx = server_context(files(certs, "n1"))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3


# ----------------------------------------------------------------------------- real processes


def test_a_cluster_over_mutual_tls_only_replicates_and_fails_over(tmp_path: Path) -> None:
    """Three node processes authenticated by certificates alone (no cluster key): a write
    through a follower commits, the leader is killed -9, a new one takes over and the write is
    still there; no frame was dropped."""
    from runtime_helpers import running_cluster

    with running_cluster(tmp_path, 3, tls=True, authenticated=False) as cluster:
        leader = cluster.wait_leader()
        follower = next(n for n in cluster.ids if n != leader)
        st = cluster.status(follower)
        assert st is not None and st["peer_auth"] == "tls"
        assert cluster.put_sure(follower, "k", "over-tls").ok
        cluster.kill(leader)
        survivors = [n for n in cluster.ids if n != leader]
        cluster.wait_leader(among=survivors)
        for node in survivors:
            assert cluster.value(node, "k") == "over-tls"
            st = cluster.status(node)
            assert st is not None
            assert not any(r.startswith("tls") for r in st["dropped_frames"]), st


def test_a_node_refuses_to_start_with_a_certificate_of_another_node(tmp_path: Path) -> None:
    from runtime_helpers import free_port, run_cli

    folder = tmp_path / "tls"
    write_cluster_certs(folder, ["n1", "n2"])
    peers = f"n1=127.0.0.1:{free_port()},n2=127.0.0.1:{free_port()}"
    common = ["node", "--id", "n1", "--peers", peers, "--data-dir", str(tmp_path / "d")]
    wrong = run_cli(
        *common,
        "--tls-cert", str(folder / "n2.pem"),
        "--tls-key", str(folder / "n2.key"),
        "--tls-ca", str(folder / "ca.pem"),
        timeout=30,
    )  # fmt: skip
    assert wrong.returncode != 0
    assert "is a certificate for n2, not for this node (n1)" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    half = run_cli(*common, "--tls-cert", str(folder / "n1.pem"), timeout=30)
    assert half.returncode != 0 and "missing --tls-key, --tls-ca" in half.stderr
    assert "Traceback" not in half.stderr
