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


@app.command()
def sim(
    protocol: Annotated[
        str, typer.Argument(help="Protocol to simulate: raft, heartbeat (paxos, pbft later).")
    ] = "raft",
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Cluster size.")] = 5,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Seed of the run.")] = 1,
    duration: Annotated[
        float, typer.Option("--duration", "-d", help="Simulated seconds to run.")
    ] = 10.0,
    loss: Annotated[float, typer.Option("--loss", help="Message loss rate in [0, 1].")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run PROTOCOL in the deterministic simulator and print what happened.

    The same --seed and options always give the same run and the same trace hash.
    """
    from quorumkit.sim.run import run_simulation

    result = run_simulation(protocol, nodes=nodes, seed=seed, duration=duration, loss_rate=loss)
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True, default=str))
    else:
        _print_sim(result)
    if not result.get("ok", True):
        raise typer.Exit(1)


def _print_sim(result: dict[str, Any]) -> None:
    table = Table(
        title=f"{result['protocol']}: {result['nodes']} nodes, seed {result['seed']}, "
        f"{result['duration']} s simulated"
    )
    table.add_column("node", no_wrap=True)
    short = {
        "commit_index": "commit",
        "last_applied": "applied",
        "log_length": "log",
        "voted_for": "voted",
        "snapshot_index": "snap",
        "heartbeats_sent": "beats",
    }
    keys = [k for k in result["columns"] if k != "id"]
    for k in keys:
        table.add_column(short.get(k, k), no_wrap=True)
    for node_id, st in result["status"].items():
        table.add_row(node_id, *(str(st.get(k, "")) for k in keys))
    console.print(table)
    m = result["messages"]
    console.print(
        f"messages: sent {m['sent']}, delivered {m['delivered']}, dropped {m['dropped']}; "
        f"{result['events']} events at {result['events_per_second']:,} events/s wall-clock"
    )
    if result["ops"]["ok"] or result["ops"]["fail"]:
        console.print(
            f"client writes: {result['ops']['ok']} ok, {result['ops']['fail']} failed; "
            f"leader now: {result['leader']}"
        )
    for violation in result["violations"]:
        console.print(f"[bold red]VIOLATION[/] {violation}")
    if not result["violations"]:
        console.print(f"invariants held over {result['invariant_checks']:,} checks")
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
