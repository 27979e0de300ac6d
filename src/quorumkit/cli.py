"""The ``quorumkit`` command.

Usage errors (a wrong flag, a bad value, an unknown protocol) print one line starting with
``quorumkit: error:`` and exit 2; a failed check exits 1; success exits 0.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from quorumkit.errors import ConfigError, QuorumkitError

app = typer.Typer(
    name="quorumkit",
    help=(
        "Raft, Multi-Paxos and PBFT as real software: run protocols in a deterministic "
        "simulator with faults and checkers, or as a replicated key-value store."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

console = Console()


def _click_exceptions() -> Any:
    """The exception module of the click that typer uses (typer >= 0.22 vendors its own)."""
    try:
        from typer._click import exceptions as vendored
    except ImportError:  # pragma: no cover - older typer on top of click
        import click.exceptions as vendored  # type: ignore[no-redef]
    return vendored


def _fail_usage(message: str) -> None:
    raise _click_exceptions().UsageError(message)


@app.command()
def bounds(
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Number of nodes n (>= 1).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fault-tolerance bounds for N nodes, per fault model.

    Prints the largest tolerable f, the quorum size and T(S) = f/n (Definition 3.2). Crash and
    omission faults need n >= 2f+1; byzantine faults need n >= 3f+1 (Theorem 3.1).
    """
    from quorumkit.model import bounds_table

    if nodes < 1:
        _fail_usage(f"--nodes must be >= 1, got {nodes}")
    table = bounds_table(nodes)
    if as_json:
        typer.echo(json.dumps(table, sort_keys=True))
        return
    out = Table(title=f"Fault tolerance of n = {nodes} nodes")
    for col in ("fault model", "max faulty f", "quorum size", "needs n >=", "T(S) = f/n"):
        out.add_column(col, justify="right" if col != "fault model" else "left")
    for model, row in table.items():
        out.add_row(
            model,
            str(row["max_faulty"]),
            str(row["quorum_size"]),
            str(row["min_nodes_for_f"]),
            f"{row['tolerance']:.3f}",
        )
    console.print(out)


def _parse_seeds(seed: int, seeds: str | None) -> list[int]:
    if seeds is None:
        return [seed]
    text = seeds.strip()
    lo_s, sep, hi_s = text.partition("..")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
    except ValueError:
        _fail_usage(f"--seeds takes A..B (e.g. 1..200), got {seeds!r}")
        raise  # unreachable
    if hi < lo:
        _fail_usage(f"--seeds {seeds}: B must be >= A")
    return list(range(lo, hi + 1))


@app.command()
def sim(
    protocol: Annotated[
        str, typer.Argument(help="Protocol to simulate: raft, paxos, pbft, heartbeat.")
    ] = "raft",
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Cluster size.")] = 5,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Seed of the run.")] = 1,
    seeds: Annotated[
        str | None,
        typer.Option("--seeds", help="A campaign over seeds A..B; stops at the first failure."),
    ] = None,
    duration: Annotated[
        float, typer.Option("--duration", "-d", help="Simulated seconds of the safety phase.")
    ] = 10.0,
    clients: Annotated[int, typer.Option("--clients", help="Concurrent simulated clients.")] = 5,
    rate: Annotated[
        float, typer.Option("--rate", help="Operations per second offered by all clients.")
    ] = 50.0,
    nemesis: Annotated[
        str,
        typer.Option(
            "--nemesis",
            help="Faults, comma-separated: partition, crash, loss, duplicate, delay, skew.",
        ),
    ] = "",
    loss: Annotated[float, typer.Option("--loss", help="Base message loss rate in [0, 1].")] = 0.0,
    unsafe: Annotated[
        str | None,
        typer.Option("--unsafe", help="Run a known-unsafe variant (a planted bug) by name."),
    ] = None,
    byzantine: Annotated[
        int,
        typer.Option(
            "--byzantine",
            help="How many nodes misbehave (the first ones: n1 is the first primary); pbft.",
        ),
    ] = 0,
    behaviour: Annotated[
        str,
        typer.Option(
            "--behaviour",
            help="What byzantine nodes do: silent, equivocate, wrong-digest, forge, replay, "
            "stale-view, bad-checkpoint, wrong-reply, delay, twins.",
        ),
    ] = "equivocate",
    report: Annotated[
        str | None,
        typer.Option("--report", help="Write a self-contained HTML report to this file."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run PROTOCOL in the deterministic simulator, with clients and faults, and check it.

    Three phases: safety (workload and nemeses; invariants checked after every event),
    liveness (faults healed; the cluster must make progress), quiet (replicas must converge;
    the history must be linearizable). Exit 0 when every check passes, 1 when one fails (the
    command that replays the failing seed is printed), 2 for usage errors.
    """
    from quorumkit.sim.nemesis import parse_nemeses
    from quorumkit.sim.run import RunOptions, run, validate_options

    seed_list = _parse_seeds(seed, seeds)
    base = RunOptions(
        protocol=protocol,
        nodes=nodes,
        seed=seed_list[0],
        duration=duration,
        clients=clients,
        rate=rate,
        nemesis=tuple(parse_nemeses(nemesis)),
        loss=loss,
        unsafe=unsafe,
        record=report is not None,
        byzantine=byzantine,
        behaviour=behaviour,
    )
    validate_options(base)
    from quorumkit.protocols import resolve_protocol

    proto_cls = resolve_protocol(protocol)
    if unsafe is not None:
        proto_cls.make_config(unsafe=unsafe)  # validates the variant name
    if byzantine:
        proto_cls.byzantine_class(behaviour)  # validates the behaviour name
    if len(seed_list) == 1:
        result = run(base)
        if report is not None:
            _write_report(result, report)
        if as_json:
            out = dict(result.summary)
            out.pop("status", None)
            typer.echo(json.dumps(out, sort_keys=True, default=str))
        else:
            _print_run(result.summary)
        if not result.ok:
            raise typer.Exit(1)
        return
    _campaign(base, seed_list, as_json, report)


def _campaign(base: Any, seed_list: list[int], as_json: bool, report: str | None) -> None:
    import dataclasses

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from quorumkit.sim.run import run

    failed = None
    passed = 0
    quiet = as_json or not sys.stderr.isatty()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
    ) as bar:
        task = bar.add_task(
            f"{base.protocol} seeds {seed_list[0]}..{seed_list[-1]}", total=len(seed_list)
        )
        for s in seed_list:
            result = run(dataclasses.replace(base, seed=s, record=False))
            if not result.ok:
                failed = result
                break
            passed += 1
            bar.advance(task)
    summary = {
        "protocol": base.protocol,
        "seeds": [seed_list[0], seed_list[-1]],
        "passed": passed,
        "failed_seed": failed.options.seed if failed else None,
        "ok": failed is None,
    }
    if failed is not None:
        summary["violations"] = failed.summary["violations"]
        summary["replay"] = failed.options.replay_command()
        summary["trace_hash"] = failed.summary["trace_hash"]
        if report is not None:
            _write_report(run(dataclasses.replace(failed.options, record=True)), report)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True, default=str))
    elif failed is None:
        console.print(
            f"[green]all {passed} seeds passed[/] ({base.replay_command()} "
            f"--seeds {seed_list[0]}..{seed_list[-1]})"
        )
    else:
        console.print(f"[red]seed {failed.options.seed} FAILED[/] after {passed} passing seeds")
        for v in failed.summary["violations"]:
            console.print(f"  {v}")
        console.print(f"replay: {failed.options.replay_command()}", soft_wrap=True)
        console.print(f"trace hash: {failed.summary['trace_hash']}")
    if failed is not None:
        raise typer.Exit(1)


def _write_report(result: Any, path: str) -> None:
    from quorumkit.check.report import write_report

    write_report(result, path)
    console.print(f"report written to {path}")


def _print_run(result: dict[str, Any]) -> None:
    status = result["status"]
    columns: list[str] = []
    for st in status.values():
        for k, v in st.items():
            if k not in columns and k != "id" and not isinstance(v, (dict, list)):
                columns.append(k)
    short = {
        "commit_index": "commit",
        "last_applied": "applied",
        "log_length": "log",
        "voted_for": "voted",
        "snapshot_index": "snap",
        "heartbeats_sent": "beats",
    }
    table = Table(
        title=f"{result['protocol']}: {result['nodes']} nodes, seed {result['seed']}, "
        f"{result['simulated_seconds']:g} s simulated"
    )
    table.add_column("node", no_wrap=True)
    for k in columns:
        table.add_column(short.get(k, k), no_wrap=True)
    for node_id, st in status.items():
        table.add_row(node_id, *(str(st.get(k, "")) for k in columns))
    console.print(table)
    m = result["messages"]
    ops = result["ops"]
    console.print(
        f"messages: sent {m['sent']}, delivered {m['delivered']}, dropped {m['dropped']}; "
        f"{result['events']} events at {result['events_per_second']:,} events/s; "
        f"leader changes {result['leader_changes']}"
    )
    if sum(ops.values()):
        console.print(
            f"client ops: {ops['ok']} ok, {ops['fail']} failed, {ops['info']} indeterminate"
        )

    def verdict(v: bool | None) -> str:
        return "[green]yes[/]" if v else ("[red]NO[/]" if v is False else "[dim]n/a[/]")

    inv = result["invariants"]
    console.print(
        "invariants: "
        + (", ".join(f"{name} {verdict(held)}" for name, held in inv.items()) or "none declared")
    )
    console.print(
        f"linearizable: {verdict(result['linearizable'])}; converged: "
        f"{verdict(result['converged'])}"
    )
    for violation in result["violations"]:
        console.print(f"[bold red]VIOLATION[/] {violation}")
    console.print(f"trace hash: {result['trace_hash']}")
    console.print(f"replay: {result['replay']}", soft_wrap=True)


@app.command()
def check(
    history: Annotated[str, typer.Argument(help="History file: JSON lines or Jepsen EDN.")],
    model: Annotated[
        str | None, typer.Option("--model", help="register or kv (default: from the file).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check a client history for linearizability (exit 0 yes, 1 no, 3 timed out).

    Reads JSON lines ({"client","call","ret","input","output"} or invoke/ok/fail/info events)
    or the EDN format of Jepsen and Porcupine. Histories are split by key (P-compositionality).
    """
    from quorumkit.check import check_linearizability, load_history

    ops, hint = load_history(history)
    if model is not None:
        if model not in ("register", "kv"):
            _fail_usage(f"--model is register or kv, got {model!r}")
        hint = {**hint, "model": model}
    result = check_linearizability(ops, timeout=timeout, **hint)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "history": history,
                    "operations": len(ops),
                    "model": hint.get("model"),
                    "linearizable": result.ok,
                    "explanation": result.explanation,
                    "elapsed_s": result.elapsed_s,
                }
            )
        )
    elif result.ok:
        console.print(f"[green]linearizable[/]: {len(ops)} operations ({result.elapsed_s:.3f} s)")
    elif result.ok is None:
        console.print(f"[yellow]unknown[/]: timed out after {result.elapsed_s:.1f} s")
    else:
        console.print(f"[red]NOT linearizable[/]: {len(ops)} operations")
        console.print(result.explanation, soft_wrap=True, markup=False)
    if result.ok is None:
        raise typer.Exit(3)
    if not result.ok:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- runtime


@app.command()
def node(
    node_id: Annotated[str, typer.Option("--id", help="This node's id (one of --peers).")],
    peers: Annotated[
        str, typer.Option("--peers", help="Every member, this node included: ID=HOST:PORT,...")
    ],
    data_dir: Annotated[str, typer.Option("--data-dir", help="Durable storage directory.")],
    http: Annotated[
        str | None, typer.Option("--http", help="HOST:PORT of the HTTP JSON API.")
    ] = None,
    resp: Annotated[
        str | None, typer.Option("--resp", help="HOST:PORT of the Redis-protocol API.")
    ] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="Consensus protocol.")] = "raft",
    cluster_key: Annotated[
        str | None,
        typer.Option("--cluster-key", help="File with the shared key (quorumkit keygen)."),
    ] = None,
    tls_cert: Annotated[
        str | None,
        typer.Option(
            "--tls-cert",
            help="Mutual TLS between peers: this node's certificate (PEM; it must name this "
            "node's id; quorumkit keygen --tls). Goes with --tls-key and --tls-ca.",
        ),
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option("--tls-key", help="Mutual TLS: this node's private key (PEM).")
    ] = None,
    tls_ca: Annotated[
        str | None,
        typer.Option("--tls-ca", help="Mutual TLS: the CA certificate that signs every peer."),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="TOML file with these settings.")
    ] = None,
    no_fsync: Annotated[
        bool, typer.Option("--no-fsync", help="UNSAFE: skip fsync (benchmarks only).")
    ] = False,
    fault_injection: Annotated[
        bool, typer.Option("--fault-injection", help="Accept /v1/admin/faults requests.")
    ] = False,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            help="A protocol option NAME=VALUE (repeatable; VALUE is JSON or a string), e.g. "
            "election_timeout_ms_min=300 or, for pbft, keys=cluster-keys.json.",
        ),
    ] = None,
) -> None:
    """Run one node of a real cluster until SIGTERM or Ctrl-C.

    --peers lists every member as ID=HOST:PORT, like etcd's --initial-cluster. Peers
    authenticate with an HMAC over each frame (--cluster-key), mutual TLS (--tls-cert,
    --tls-key, --tls-ca), or both; with neither the node accepts peers on loopback addresses
    only.
    """
    from pathlib import Path

    from quorumkit.net.framing import read_key
    from quorumkit.net.runtime import NodeConfig
    from quorumkit.net.server import parse_address, parse_peers, run_node
    from quorumkit.net.tls import TlsFiles

    settings: dict[str, Any] = {}
    if config is not None:
        settings = _read_toml(config)
        for name in ("http", "resp", "cluster_key", "tls_cert", "tls_key", "tls_ca"):
            if name in settings and not isinstance(settings[name], str):
                _fail_usage(f"{name} in --config must be a string, got {settings[name]!r}")
        for name in ("fsync", "fault_injection"):
            if name in settings and not isinstance(settings[name], bool):
                _fail_usage(f"{name} in --config must be true or false, got {settings[name]!r}")
    key = (
        read_key(cluster_key or settings["cluster_key"])
        if (cluster_key or settings.get("cluster_key"))
        else None
    )
    tls = TlsFiles.from_options(
        tls_cert or settings.get("tls_cert"),
        tls_key or settings.get("tls_key"),
        tls_ca or settings.get("tls_ca"),
    )
    http_addr = http or settings.get("http")
    resp_addr = resp or settings.get("resp")
    options = settings.get("protocol_options", {})
    if not isinstance(options, dict):
        _fail_usage("protocol_options in --config must be a table")
    options = {**options, **_parse_options(option or [])}
    cfg = NodeConfig(
        node_id=node_id,
        peers=parse_peers(peers),
        data_dir=Path(data_dir),
        protocol=protocol,
        http=parse_address(http_addr, "--http") if http_addr else None,
        resp=parse_address(resp_addr, "--resp") if resp_addr else None,
        key=key,
        tls=tls,
        fsync=not no_fsync and settings.get("fsync", True),
        fault_injection=fault_injection or bool(settings.get("fault_injection", False)),
        protocol_options=options,
    )
    from quorumkit.protocols import resolve_protocol

    resolve_protocol(protocol).make_config(**options)
    run_node(cfg)


def _parse_options(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; VALUE is read as JSON when it parses, else kept as a string."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            _fail_usage(f"--option takes NAME=VALUE, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[name.strip()] = value
    return out


def _read_toml(path: str) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path} is not valid TOML: {exc}") from None


@app.command()
def keygen(
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write: a file (cluster key) or a directory (--ed25519, --tls).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    ed25519: Annotated[
        bool,
        typer.Option(
            "--ed25519",
            help="Write Ed25519 key pairs (PBFT signatures) for --ids into the --out directory, "
            "and cluster-keys.json listing their public keys.",
        ),
    ] = False,
    ids: Annotated[
        str | None,
        typer.Option(
            "--ids", help="With --ed25519 or --tls: node ids, comma-separated (n1,n2,...)."
        ),
    ] = None,
    clients: Annotated[
        str | None,
        typer.Option("--clients", help="With --ed25519: client ids, comma-separated."),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Write a CA (ca.pem, ca.key) and a certificate and key per node of --ids "
            "(<id>.pem, <id>.key) into the --out directory, for mutual TLS between peers. "
            "An existing CA there is reused.",
        ),
    ] = False,
) -> None:
    """Write a new random cluster key (hex, mode 0600) for peer authentication; with --tls, a
    CA and node certificates for mutual TLS; with --ed25519, the key pairs and key
    configuration of a PBFT cluster."""
    from pathlib import Path

    from quorumkit.net.framing import write_key

    if ed25519 and tls:
        _fail_usage("--ed25519 and --tls make different keys: one at a time")
    if ed25519:
        _keygen_ed25519(out or "keys", ids, clients, force)
        return
    if tls:
        _keygen_tls(out or "tls", ids, clients, force)
        return
    if ids or clients:
        _fail_usage("--ids goes with --ed25519 or --tls, --clients with --ed25519")
    out = out or "cluster.key"
    if Path(out).exists() and not force:
        _fail_usage(f"{out} exists (use --force to overwrite)")
    write_key(out)
    console.print(f"cluster key written to {out}")


def _keygen_tls(out: str, ids: str | None, clients: str | None, force: bool) -> None:
    from pathlib import Path

    from quorumkit.net.tls import write_cluster_certs

    if clients:
        _fail_usage("--clients goes with --ed25519 (TLS certificates are for peers)")
    nodes = [x.strip() for x in (ids or "").split(",") if x.strip()]
    if not nodes:
        _fail_usage("--tls needs --ids n1,n2,... (every node of the cluster)")
    if len(set(nodes)) != len(nodes):
        _fail_usage("--ids names a node twice")
    bad = [n for n in nodes if not n.isascii() or not n.isprintable() or "," in n]
    if bad:
        _fail_usage(f"--ids: a certificate names a node in printable ASCII, not {bad[0]!r}")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        _fail_usage(f"--out {out} must be a directory with --tls")
    written = write_cluster_certs(folder, nodes, overwrite=force)
    kept = [n for n in nodes if folder / f"{n}.pem" not in written]
    console.print(
        f"{len(written)} file(s) written to {folder}"
        + (
            f" (kept existing certificates of {', '.join(kept)}; --force remakes them)"
            if kept
            else ""
        )
        + f". Start node ID with --tls-cert {folder}/ID.pem --tls-key {folder}/ID.key "
        f"--tls-ca {folder}/ca.pem; give each machine only its own key (ca.key signs new "
        "members: keep it off the nodes)."
    )


def _keygen_ed25519(out: str, ids: str | None, clients: str | None, force: bool) -> None:
    from pathlib import Path

    from quorumkit.protocols.pbft.crypto import (
        write_cluster_config,
        write_keypair,
        write_x25519_keypair,
    )

    replicas = [x.strip() for x in (ids or "").split(",") if x.strip()]
    client_ids = [x.strip() for x in (clients or "").split(",") if x.strip()]
    if not replicas:
        _fail_usage("--ed25519 needs --ids n1,n2,... (every replica of the cluster)")
    if len(set(replicas + client_ids)) != len(replicas) + len(client_ids):
        _fail_usage("--ids and --clients must name distinct identities")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        _fail_usage(f"--out {out} must be a directory with --ed25519")
    public: dict[str, dict[str, bytes]] = {"replicas": {}, "clients": {}}
    for group, names in (("replicas", replicas), ("clients", client_ids)):
        for name in names:
            public[group][name] = write_keypair(folder, name, overwrite=force)[2]
    # X25519 keys for auth="mac" (write_keypair made them; read back the replicas' public keys)
    x25519 = {name: write_x25519_keypair(folder, name) for name in replicas}
    config = folder / "cluster-keys.json"
    write_cluster_config(config, public["replicas"], public["clients"], keys_dir=".", x25519=x25519)
    console.print(
        f"{len(replicas) + len(client_ids)} key pairs (Ed25519, and X25519 for "
        f"auth=mac) written to {folder} (private keys mode "
        f"0600: give each machine only its own); public keys in {config}; start each node "
        f"with --protocol pbft --option keys={config}"
    )


cluster_app = typer.Typer(
    help="Run and inspect a local cluster of node processes.", no_args_is_help=True
)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("up")
def cluster_up(
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="How many nodes.")] = 3,
    protocol: Annotated[str, typer.Option("--protocol", help="Consensus protocol.")] = "raft",
    base_port: Annotated[
        int, typer.Option("--base-port", help="Node i listens on P+10i (peers), +1 HTTP, +2 RESP.")
    ] = 7000,
    data_dir: Annotated[str, typer.Option("--data-dir", help="Cluster data directory.")] = (
        "quorumkit-data"
    ),
    no_fsync: Annotated[bool, typer.Option("--no-fsync", help="UNSAFE: skip fsync.")] = False,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Mutual TLS between the nodes too (a CA and node certificates are made in "
            "DATA_DIR/tls), besides the cluster key.",
        ),
    ] = False,
) -> None:
    """Start a local cluster in the foreground; Ctrl-C stops every node cleanly."""
    import signal
    import time
    from pathlib import Path

    from quorumkit.net.cluster import LocalCluster
    from quorumkit.protocols import resolve_protocol

    resolve_protocol(protocol)
    extra = ["--no-fsync"] if no_fsync else []
    cluster = LocalCluster(nodes, base_port, Path(data_dir), protocol, extra, tls=tls)
    auth = "cluster key + mutual TLS" if tls else "cluster key"
    table = Table(title=f"quorumkit cluster: {nodes} x {protocol} ({auth}), data in {data_dir}")
    for col in ("node", "peer", "http", "resp"):
        table.add_column(col)
    for s in cluster.specs:
        table.add_row(s.node_id, s.peer, f"http://{s.http}", s.resp)
    cluster.start(log_dir=Path(data_dir) / "logs")
    console.print(table)
    console.print(
        f"logs in {data_dir}/logs; try: curl -X PUT --data hello "
        f"http://{cluster.specs[0].http}/v1/kv/greeting"
    )
    console.print("Ctrl-C stops the cluster")
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop["now"]:
            dead = [n for n, alive in cluster.alive().items() if not alive]
            if dead:
                console.print(f"[red]node(s) {', '.join(dead)} exited; see {data_dir}/logs[/]")
                break
            time.sleep(0.2)
    finally:
        console.print("stopping the cluster...")
        cluster.stop()
    if stop["now"]:
        console.print("stopped")
    else:
        raise typer.Exit(1)


@cluster_app.command("status")
def cluster_status(
    data_dir: Annotated[str, typer.Option("--data-dir", help="Cluster data directory.")] = (
        "quorumkit-data"
    ),
    endpoints: Annotated[
        str | None, typer.Option("--endpoints", help="HTTP HOST:PORT list instead.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show every node's role, term, leader, commit and applied index."""
    import urllib.request
    from pathlib import Path

    from quorumkit.net.cluster import http_endpoints

    eps = endpoints.split(",") if endpoints else http_endpoints(Path(data_dir))
    rows: dict[str, Any] = {}
    for ep in eps:
        try:
            with urllib.request.urlopen(f"http://{ep}/v1/status", timeout=2) as r:
                rows[ep] = json.loads(r.read())
        except (OSError, ValueError) as exc:
            rows[ep] = {"error": str(exc)}
    if as_json:
        typer.echo(json.dumps(rows, sort_keys=True))
        return
    table = Table(title="quorumkit cluster status")
    for col in ("endpoint", "id", "role", "term", "leader", "commit", "applied", "peers up"):
        table.add_column(col)
    for ep, st in rows.items():
        if "error" in st:
            table.add_row(ep, "-", "[red]unreachable[/]", "", "", "", "", "")
            continue
        up = sum(1 for p in st.get("peers", {}).values() if p.get("connected"))
        table.add_row(
            ep,
            str(st.get("id")),
            str(st.get("role")),
            str(st.get("term")),
            str(st.get("leader")),
            str(st.get("commit_index")),
            str(st.get("last_applied")),
            f"{up}/{len(st.get('peers', {}))}",
        )
    console.print(table)


kv_app = typer.Typer(help="Read and write keys of a running cluster.", no_args_is_help=True)
app.add_typer(kv_app, name="kv")


def _client(data_dir: str, endpoints: str | None) -> Any:
    from pathlib import Path

    from quorumkit.client import Client
    from quorumkit.net.cluster import http_endpoints

    return Client(endpoints.split(",") if endpoints else http_endpoints(Path(data_dir)))


_EP = Annotated[str | None, typer.Option("--endpoints", help="HTTP HOST:PORT,... of nodes.")]
_DD = Annotated[str, typer.Option("--data-dir", help="Cluster data directory (cluster up).")]


@kv_app.command("get")
def kv_get(
    key: str,
    endpoints: _EP = None,
    data_dir: _DD = "quorumkit-data",
    stale: Annotated[bool, typer.Option("--stale", help="Local, possibly stale read.")] = False,
) -> None:
    """Print the value of KEY (linearizable read); exit 1 when it is missing."""
    from quorumkit.client import ClientError

    try:
        value = _client(data_dir, endpoints).get(key, stale=stale)
    except ClientError as exc:
        typer.echo(f"quorumkit: error: {exc}", err=True)
        raise typer.Exit(1) from None
    if value is None:
        typer.echo(f"{key}: not found", err=True)
        raise typer.Exit(1)
    typer.echo(value if isinstance(value, str) else repr(value))


@kv_app.command("put")
def kv_put(key: str, value: str, endpoints: _EP = None, data_dir: _DD = "quorumkit-data") -> None:
    """Set KEY to VALUE."""
    from quorumkit.client import ClientError

    try:
        _client(data_dir, endpoints).put(key, value)
    except ClientError as exc:
        typer.echo(f"quorumkit: error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("OK")


@kv_app.command("del")
def kv_del(key: str, endpoints: _EP = None, data_dir: _DD = "quorumkit-data") -> None:
    """Delete KEY."""
    from quorumkit.client import ClientError

    try:
        _client(data_dir, endpoints).delete(key)
    except ClientError as exc:
        typer.echo(f"quorumkit: error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("OK")


@app.command()
def bench(
    endpoints: Annotated[
        str | None, typer.Option("--endpoints", help="HOST:PORT,... (HTTP, or RESP for resp).")
    ] = None,
    target: Annotated[
        str, typer.Option("--target", help="quorumkit | resp | etcd | http-kv")
    ] = "quorumkit",
    data_dir: _DD = "quorumkit-data",
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Requests in flight (closed loop).")
    ] = 16,
    duration: Annotated[float, typer.Option("--duration", "-d", help="Measured seconds.")] = 10.0,
    warmup: Annotated[float, typer.Option("--warmup", help="Seconds before measuring.")] = 1.0,
    value_size: Annotated[int, typer.Option("--value-size", help="Bytes per value.")] = 100,
    keys: Annotated[int, typer.Option("--keys", help="Distinct keys.")] = 10_000,
    read_ratio: Annotated[float, typer.Option("--read-ratio", help="Fraction of reads.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Closed-loop load: ops/s and p50/p99/p999 latency of a running cluster."""
    import asyncio
    from pathlib import Path

    from quorumkit.bench import BenchOptions, run_bench

    if endpoints:
        eps = tuple(e.strip() for e in endpoints.split(",") if e.strip())
    else:
        from quorumkit.net.cluster import read_cluster_file

        nodes = read_cluster_file(Path(data_dir))["nodes"]
        eps = tuple(str(n["resp" if target == "resp" else "http"]) for n in nodes)
    opts = BenchOptions(
        endpoints=eps,
        target=target,
        concurrency=concurrency,
        duration_s=duration,
        warmup_s=warmup,
        value_size=value_size,
        keys=keys,
        read_ratio=read_ratio,
    )
    try:  # the load generator must not be the bottleneck: uvloop when installed, as nodes do
        import uvloop

        run: Any = uvloop.run
    except ImportError:  # pragma: no cover - optional speed-up
        run = asyncio.run
    if as_json or not console.is_terminal:
        result = run(run_bench(opts))
    else:
        with console.status(
            f"{target}: {concurrency} in flight against {', '.join(eps)}, "
            f"{warmup:g} s warm-up + {duration:g} s measured..."
        ):
            result = run(run_bench(opts))
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    console.print(
        f"{result['target']} c={concurrency}: {result['ops_per_s']:,} ops/s, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, p999 {result['p999_ms']} ms "
        f"({result['ops']} ok, {result['errors']} errors in {duration:g} s)"
    )
    if result["ops"] == 0:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning usage errors into one line and exit code 2."""
    exc_mod = _click_exceptions()
    no_args: Any = getattr(exc_mod, "NoArgsIsHelpError", ())
    try:
        rc = app(args=argv, prog_name="quorumkit", standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except no_args as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(0)
    except exc_mod.UsageError as exc:
        ctx = exc.ctx
        hint = f" (see 'quorumkit {ctx.info_name} --help')" if ctx and ctx.parent else ""
        typer.echo(f"quorumkit: error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except ConfigError as exc:
        typer.echo(f"quorumkit: error: {exc}", err=True)
        sys.exit(2)
    except QuorumkitError as exc:  # e.g. corrupt storage: not a usage error, still one line
        typer.echo(f"quorumkit: error: {' '.join(str(exc).split())}", err=True)
        sys.exit(1)
    except exc_mod.ClickException as exc:
        typer.echo(f"quorumkit: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("quorumkit: aborted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
