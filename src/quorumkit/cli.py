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

from quorumkit.errors import ConfigError

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
        str, typer.Argument(help="Protocol to simulate: raft, heartbeat (paxos, pbft later).")
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
    )
    validate_options(base)
    from quorumkit.protocols import resolve_protocol

    proto_cls = resolve_protocol(protocol)
    if unsafe is not None:
        proto_cls.make_config(unsafe=unsafe)  # validates the variant name
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
        console.print(f"replay: {failed.options.replay_command()}")
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
    console.print(f"replay: {result['replay']}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning usage errors into one line and exit code 2."""
    exc_mod = _click_exceptions()
    no_args: Any = getattr(exc_mod, "NoArgsIsHelpError", ())
    try:
        app(args=argv, prog_name="quorumkit", standalone_mode=False)
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
