"""Checkers of client histories: linearizability (WGL search, partitioned by key) and the
history formats it reads.

    from quorumkit.check import Operation, check_linearizability, load_history

    ops, hint = load_history("history.edn")
    result = check_linearizability(ops, **hint, timeout=10)
    print(result.ok, result.explanation)
"""

from quorumkit.check.history import (
    Keyword,
    Operation,
    dump_jsonl,
    dumps_jsonl,
    infer_model,
    load_history,
    parse_edn_history,
    parse_edn_map,
    parse_jsonl_history,
    simulate_history,
)
from quorumkit.check.linearizability import CheckResult, check_linearizability, format_operation
from quorumkit.check.models import FAIL, KVModel, Model, RegisterModel, freeze, make_model

__all__ = [
    "FAIL",
    "CheckResult",
    "KVModel",
    "Keyword",
    "Model",
    "Operation",
    "RegisterModel",
    "check_linearizability",
    "dump_jsonl",
    "dumps_jsonl",
    "format_operation",
    "freeze",
    "infer_model",
    "load_history",
    "make_model",
    "parse_edn_history",
    "parse_edn_map",
    "parse_jsonl_history",
    "simulate_history",
]
