"""Run one node process: runtime + HTTP + RESP, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from quorumkit.errors import ConfigError, QuorumkitError
from quorumkit.net.runtime import NodeConfig, NodeRuntime

log = logging.getLogger("quorumkit.node")


class NodeStartError(QuorumkitError):
    """The node cannot start (corrupt or busy storage); not a usage error."""


def parse_address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"{what}: port {port!r} is not a number") from None
    if not 0 <= p <= 65535:
        raise ConfigError(f"{what}: port {p} out of range")
    return host, p


def parse_peers(text: str) -> dict[str, tuple[str, int]]:
    """``n1=127.0.0.1:7001,n2=...`` -> {id: (host, port)} (etcd's --initial-cluster style)."""
    peers: dict[str, tuple[str, int]] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        node_id, sep, addr = item.partition("=")
        if not sep or not node_id:
            raise ConfigError(f"--peers: expected ID=HOST:PORT, got {item!r}")
        if node_id in peers:
            raise ConfigError(f"--peers names {node_id} twice")
        peers[node_id] = parse_address(addr, f"--peers {node_id}")
    if not peers:
        raise ConfigError("--peers is empty")
    return peers


async def serve(config: NodeConfig, ready: Any = None) -> None:
    from quorumkit.net.http import HttpFrontEnd
    from quorumkit.net.resp import RespServer

    if config.key is None and config.tls is None:
        log.warning(
            "cluster is UNAUTHENTICATED (no --cluster-key, no --tls-cert): peers are accepted "
            "from loopback addresses only"
        )

    if not config.fsync:
        log.warning(
            "--no-fsync: acknowledged writes can be LOST on power failure or OS crash; "
            "use only for benchmarks"
        )
    rt = NodeRuntime(config)
    stop = asyncio.Event()
    rt.on_fatal = stop.set
    await rt.start()
    http = HttpFrontEnd(rt)
    resp = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if config.http:
            await http.start(*config.http)
        if config.resp:
            resp = RespServer(rt.execute, info=rt.status)
            await resp.start(*config.resp)
        log.info(
            "%s serving: peers %s (authenticated by %s), http %s, resp %s",
            config.node_id,
            config.peers[config.node_id],
            config.peer_auth,
            config.http,
            config.resp,
        )
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        log.info("%s stopping", config.node_id)
        if resp is not None:
            await resp.stop()
        await http.stop()
        await rt.stop()
    if rt.failed:
        raise SystemExit(3)


def run_node(config: NodeConfig) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - optional speed-up
            asyncio.run(serve(config))
        else:
            uvloop.run(serve(config))
    except OSError as exc:
        raise ConfigError(f"cannot start node {config.node_id}: {exc}") from None
    except QuorumkitError as exc:  # corrupt or busy storage: refuse to start, say why
        raise NodeStartError(f"node {config.node_id} refused to start: {exc}") from None
