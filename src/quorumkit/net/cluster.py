"""``quorumkit cluster up``: a local cluster of node processes, for development.

Node ``i`` (1-based) of a cluster with base port ``P`` listens on ``P + 10*i`` (peers),
``P + 10*i + 1`` (HTTP) and ``P + 10*i + 2`` (RESP). The cluster's data directory holds one
directory per node, the cluster key, with ``--tls`` the CA and node certificates (``tls/``),
and ``cluster.json`` describing the endpoints (which
``quorumkit cluster status`` and ``quorumkit kv`` read).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quorumkit.errors import ConfigError
from quorumkit.net.framing import write_key
from quorumkit.net.tls import write_cluster_certs

CLUSTER_FILE = "cluster.json"
#: where ``cluster up --tls`` keeps the cluster's CA and the nodes' certificates
TLS_DIR = "tls"


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    host: str
    peer_port: int
    http_port: int
    resp_port: int

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.peer_port}"

    @property
    def http(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def resp(self) -> str:
        return f"{self.host}:{self.resp_port}"


def plan(nodes: int, base_port: int, host: str = "127.0.0.1") -> list[NodeSpec]:
    if not 1 <= nodes <= 99:
        raise ConfigError(f"--nodes must be between 1 and 99, got {nodes}")
    if not 1024 <= base_port <= 65535 - 10 * nodes - 2:
        raise ConfigError(f"--base-port {base_port} leaves no room for {nodes} nodes")
    return [
        NodeSpec(f"n{i}", host, base_port + 10 * i, base_port + 10 * i + 1, base_port + 10 * i + 2)
        for i in range(1, nodes + 1)
    ]


def node_command(
    spec: NodeSpec,
    specs: list[NodeSpec],
    data_dir: Path,
    protocol: str,
    key_file: Path | None,
    extra: list[str],
    tls_dir: Path | None = None,
) -> list[str]:
    peers = ",".join(f"{s.node_id}={s.peer}" for s in specs)
    cmd = [
        sys.executable,
        "-m",
        "quorumkit",
        "node",
        "--id",
        spec.node_id,
        "--peers",
        peers,
        "--data-dir",
        str(data_dir / spec.node_id),
        "--http",
        spec.http,
        "--resp",
        spec.resp,
        "--protocol",
        protocol,
    ]
    if key_file is not None:
        cmd += ["--cluster-key", str(key_file)]
    if tls_dir is not None:
        cmd += [
            "--tls-cert",
            str(tls_dir / f"{spec.node_id}.pem"),
            "--tls-key",
            str(tls_dir / f"{spec.node_id}.key"),
            "--tls-ca",
            str(tls_dir / "ca.pem"),
        ]
    return cmd + extra


#: the JSON key configuration of a byzantine-tolerant cluster (public keys of every replica)
KEYS_FILE = "keys/cluster-keys.json"


def provision_keys(data_dir: Path, node_ids: list[str]) -> Path:
    """Ed25519 and X25519 key pairs for every replica (once) and the cluster key configuration
    listing their public keys; returns the configuration's path (PBFT's ``keys`` option)."""
    from quorumkit.protocols.pbft.crypto import (
        public_from_private,
        read_key_file,
        write_cluster_config,
        write_keypair,
        write_x25519_keypair,
    )

    folder = data_dir / "keys"
    public: dict[str, bytes] = {}
    x25519: dict[str, bytes] = {}
    for node_id in node_ids:
        private_path = folder / f"{node_id}.key"
        if private_path.exists():
            public[node_id] = public_from_private(read_key_file(private_path))
        else:
            public[node_id] = write_keypair(folder, node_id, overwrite=True)[2]
        x25519[node_id] = write_x25519_keypair(folder, node_id)  # kept if it exists
    path = data_dir / KEYS_FILE
    write_cluster_config(path, public, keys_dir=".", x25519=x25519)
    return path


def write_cluster_file(data_dir: Path, specs: list[NodeSpec], protocol: str) -> Path:
    path = data_dir / CLUSTER_FILE
    path.write_text(
        json.dumps(
            {
                "protocol": protocol,
                "nodes": [
                    {"id": s.node_id, "peer": s.peer, "http": s.http, "resp": s.resp} for s in specs
                ],
            },
            indent=2,
        )
        + "\n"
    )
    return path


def read_cluster_file(data_dir: Path) -> dict[str, Any]:
    path = data_dir / CLUSTER_FILE
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no cluster at {data_dir} ({CLUSTER_FILE} missing; start one with "
            "'quorumkit cluster up')"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("nodes"), list):
        raise ConfigError(f"{path} does not describe a cluster")
    return obj


def http_endpoints(data_dir: Path) -> list[str]:
    return [str(n["http"]) for n in read_cluster_file(data_dir)["nodes"]]


class LocalCluster:
    """Start and stop the node processes of a local cluster."""

    def __init__(
        self,
        nodes: int,
        base_port: int,
        data_dir: Path,
        protocol: str = "raft",
        extra_args: list[str] | None = None,
        authenticated: bool = True,
        tls: bool = False,
    ) -> None:
        self.specs = plan(nodes, base_port)
        #: mutual TLS between the nodes, with certificates in ``<data_dir>/tls``
        self.tls_dir = data_dir / TLS_DIR if tls else None
        self.data_dir = data_dir
        self.protocol = protocol
        self.extra = extra_args or []
        self.authenticated = authenticated
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, log_dir: Path | None = None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key_file: Path | None = None
        if self.authenticated:
            key_file = self.data_dir / "cluster.key"
            if not key_file.exists():
                write_key(key_file)
        write_cluster_file(self.data_dir, self.specs, self.protocol)
        if self.tls_dir is not None:  # a CA and a certificate per node, made once
            write_cluster_certs(self.tls_dir, [s.node_id for s in self.specs])
        if self.protocol == "pbft" and not any(a.startswith("keys=") for a in self.extra):
            keys = provision_keys(self.data_dir, [s.node_id for s in self.specs])
            self.extra = [*self.extra, "--option", f"keys={keys}"]
        for spec in self.specs:
            self.start_node(spec.node_id, key_file, log_dir)

    def start_node(
        self, node_id: str, key_file: Path | None = None, log_dir: Path | None = None
    ) -> None:
        spec = next(s for s in self.specs if s.node_id == node_id)
        if key_file is None and self.authenticated:
            key_file = self.data_dir / "cluster.key"
        cmd = node_command(
            spec, self.specs, self.data_dir, self.protocol, key_file, self.extra, self.tls_dir
        )
        out: Any = subprocess.DEVNULL
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            out = open(log_dir / f"{node_id}.log", "ab")
        env = dict(os.environ)
        self.procs[node_id] = subprocess.Popen(cmd, stdout=out, stderr=out, env=env)  # noqa: S603

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(node_id)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def alive(self) -> dict[str, bool]:
        return {n: p.poll() is None for n, p in self.procs.items()}
