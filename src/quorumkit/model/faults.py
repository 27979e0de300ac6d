"""Fault models and their bounds (spec section 3: Definitions 3.1-3.3, Theorem 3.1).

* Crash and omission faults: a decision needs a majority quorum of ``floor(n/2) + 1`` nodes, so
  any two quorums intersect; ``f`` faulty nodes are tolerated iff ``n >= 2f + 1``.
* Byzantine faults: two quorums of ``q`` nodes intersect in ``2q - n`` nodes, and that
  intersection must contain a correct node, so ``2q - n >= f + 1``; with ``q = n - f`` (the most
  a system can wait for) this gives ``n >= 3f + 1`` (Theorem 3.1, by quorum intersection; the
  spec's own proof, ``n - f > f``, only gives ``n > 2f``).
"""

from __future__ import annotations

import enum
import math

from quorumkit.errors import ConfigError


class FaultModel(enum.Enum):
    """Definition 3.1: F = {crash, byzantine, omission}."""

    CRASH = "crash"
    OMISSION = "omission"
    BYZANTINE = "byzantine"

    @classmethod
    def parse(cls, value: FaultModel | str) -> FaultModel:
        if isinstance(value, FaultModel):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ConfigError(f"unknown fault model {value!r} (choose from {names})") from None


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"the number of nodes must be a positive integer, got {n!r}")


def _check_f(f: int) -> None:
    if not isinstance(f, int) or isinstance(f, bool) or f < 0:
        raise ConfigError(f"the number of faulty nodes must be an integer >= 0, got {f!r}")


def max_faulty(n: int, model: FaultModel | str = FaultModel.CRASH) -> int:
    """Largest f that n nodes tolerate under ``model``."""
    _check_n(n)
    if FaultModel.parse(model) is FaultModel.BYZANTINE:
        return (n - 1) // 3
    return (n - 1) // 2


def min_nodes(f: int, model: FaultModel | str = FaultModel.CRASH) -> int:
    """Fewest nodes that tolerate f faults under ``model``: 2f+1, or 3f+1 for byzantine."""
    _check_f(f)
    if FaultModel.parse(model) is FaultModel.BYZANTINE:
        return 3 * f + 1
    return 2 * f + 1


def quorum_size(n: int, model: FaultModel | str = FaultModel.CRASH) -> int:
    """Size of a quorum: any two intersect (crash) or intersect in a correct node (byzantine).

    Crash/omission: ``floor(n/2) + 1``. Byzantine: ``ceil((n + f + 1) / 2)`` with
    ``f = max_faulty(n)``, which is ``2f + 1`` when ``n = 3f + 1``.
    """
    _check_n(n)
    if FaultModel.parse(model) is FaultModel.BYZANTINE:
        f = max_faulty(n, FaultModel.BYZANTINE)
        return math.ceil((n + f + 1) / 2)
    return n // 2 + 1


def tolerance(n: int, f: int) -> float:
    """Definition 3.2: T(S) = (maximum number of faulty nodes) / (total number of nodes)."""
    _check_n(n)
    _check_f(f)
    if f > n:
        raise ConfigError(f"f = {f} faulty nodes is more than the n = {n} nodes")
    return f / n


def validate(n: int, f: int, model: FaultModel | str = FaultModel.CRASH) -> None:
    """Refuse a configuration that cannot tolerate ``f`` faults (Definition 3.3, Theorem 3.1)."""
    _check_n(n)
    _check_f(f)
    fm = FaultModel.parse(model)
    if fm is FaultModel.BYZANTINE:
        if n <= 3 * f:
            raise ConfigError(
                f"n = {n} nodes cannot tolerate f = {f} byzantine faults: Theorem 3.1 requires "
                f"n >= 3f + 1 = {3 * f + 1}. Two quorums of n - f = {n - f} nodes share at least "
                f"n - 2f = {n - 2 * f} nodes, and that must exceed f = {f} so that a correct node "
                f"is in both."
            )
    elif n <= 2 * f:
        raise ConfigError(
            f"n = {n} nodes cannot tolerate f = {f} {fm.value} faults: a majority quorum needs "
            f"n >= 2f + 1 = {2 * f + 1}, so that two quorums of n - f = {n - f} nodes intersect."
        )


def bounds_table(n: int) -> dict[str, dict[str, float | int]]:
    """The figures ``quorumkit bounds`` prints for n nodes, per fault model."""
    _check_n(n)
    out: dict[str, dict[str, float | int]] = {}
    for fm in FaultModel:
        f = max_faulty(n, fm)
        out[fm.value] = {
            "nodes": n,
            "max_faulty": f,
            "quorum_size": quorum_size(n, fm),
            "min_nodes_for_f": min_nodes(f, fm),
            "tolerance": tolerance(n, f),
        }
    return out
