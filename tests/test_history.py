"""History I/O: the EDN-line parser, Jepsen events (EDN and JSON), the JSON-lines operation
form, format detection, errors that name their line, and the seeded store simulation."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from quorumkit.check import (
    Keyword,
    Operation,
    check_linearizability,
    dump_jsonl,
    dumps_jsonl,
    infer_model,
    load_history,
    parse_edn_history,
    parse_edn_map,
    parse_jsonl_history,
    simulate_history,
)
from quorumkit.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared"
PORCUPINE = SHARED / "data" / "porcupine-kv"
needs_shared = pytest.mark.skipif(
    not PORCUPINE.is_dir(), reason=f"porcupine's kv histories are not at {PORCUPINE}"
)


# ----------------------------------------------------------------------------- EDN values


def test_edn_map_scalars() -> None:
    m = parse_edn_map(
        '{:process 12, :type :invoke, :f :cas, :key "a b", :value [1 -2 3.5 nil true false],'
        " :time 1700000000000N, :x :ns/kw?}"
    )
    assert m == {
        "process": 12,
        "type": Keyword("invoke"),
        "f": Keyword("cas"),
        "key": "a b",
        "value": [1, -2, 3.5, None, True, False],
        "time": 1700000000000,
        "x": Keyword("ns/kw?"),
    }


def test_edn_strings_keep_their_escapes_apart() -> None:
    m = parse_edn_map(r'{:value "q\"uote \\ back\nline\ttab \u00e9 , {:not :a-map}"}')
    assert m["value"] == 'q"uote \\ back\nline\ttab \u00e9 , {:not :a-map}'


def test_edn_commas_are_whitespace_and_comments_end_the_line() -> None:
    assert parse_edn_map("{:a 1,,, :b 2} ; a comment") == {"a": 1, "b": 2}
    assert parse_edn_map("  {}  ") == {}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{:a 1", "missing '}'"),
        ("{:a}", "even number"),
        ('{:a "open}', "unterminated string"),
        (r'{:a "bad \q"}', r"bad escape \\q"),
        ("{:a (eval 1)}", "unsupported symbol 'eval'"),
        ("{:a foo}", "unsupported symbol 'foo'"),
        ("{:a 1 :a 2}", "duplicate key :a"),
        ("[:a 1]", "expected a map"),
        ("{:a 1} {:b 2}", "after the map"),
        ('{"a" 1}', "not a keyword"),
        ("{: 1}", "empty keyword"),
        ("{:a #{1}}", "unsupported symbol"),
    ],
)
def test_edn_map_rejects_what_it_does_not_understand(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_edn_map(line)


# ----------------------------------------------------------------------------- events


EDN = """\
{:process 0, :type :invoke, :f :put, :key "k", :value "a"}
{:process 1, :type :invoke, :f :get, :key "k", :value nil}
{:process 0, :type :ok, :f :put, :key "k", :value "a"}
{:process :nemesis, :type :info, :f :start, :value "partition"}
{:process 1, :type :ok, :f :get, :key "k", :value "a"}
{:process 2, :type :invoke, :f :append, :key "k", :value "b"}
{:process 3, :type :invoke, :f :cas, :key "k", :value ["a" "c"]}
{:process 2, :type :info, :f :append, :key "k", :value "b"}
{:process 3, :type :fail, :f :cas, :key "k", :value ["a" "c"]}
{:process 4, :type :invoke, :f :delete, :key "k", :value nil}
"""


def test_edn_events_become_operations() -> None:
    ops, hint = parse_edn_history(EDN)
    assert hint == {"model": "kv", "initial": ""}
    assert ops == [
        Operation(0, 1, 3, ("put", "k", "a"), None),
        Operation(1, 2, 5, ("get", "k"), "a"),
        # :info -> indeterminate; the :fail cas is dropped; the unfinished delete is pending
        Operation(2, 6, None, ("append", "k", "b"), None),
        Operation(4, 10, None, ("delete", "k"), None),
    ]
    assert check_linearizability(ops, **hint).ok is True


def test_edn_register_events_and_explicit_times() -> None:
    text = """\
{:process 0, :type :invoke, :f :write, :value 3, :time 100}
{:process 0, :type :ok, :f :write, :value 3, :time 250}
{:process 1, :type :invoke, :f :cas, :value [3 4], :time 300}
{:process 1, :type :ok, :f :cas, :value [3 4], :time 400}
{:process 0, :type :invoke, :f :read, :value nil, :time 500}
{:process 0, :type :ok, :f :read, :value 4, :time 600}
"""
    ops, hint = parse_edn_history(text)
    assert hint == {"model": "register", "initial": None}
    assert ops == [
        Operation(0, 100, 250, ("write", 3), None),
        Operation(1, 300, 400, ("cas", 3, 4), True),
        Operation(0, 500, 600, ("read",), 4),
    ]
    assert check_linearizability(ops, **hint).ok is True


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('{:process 0, :type :invoke, :f :get, :key "k"}\n{:process 0 :type', 2, "malformed EDN"),
        ('{:process 0, :type :begin, :f :get, :key "k"}', 1, "unknown type 'begin'"),
        ('\n{:process 0, :type :ok, :f :get, :key "k", :value "x"}', 2, "without a pending invoke"),
        (
            '{:process 0, :type :invoke, :f :get, :key "k", :time 5}\n'
            '{:process 0, :type :ok, :f :get, :key "k", :value "", :time 4}',
            2,
            "precedes its invoke on line 1",
        ),
        (
            '{:process 0, :type :invoke, :f :get, :key "k"}\n'
            '{:process 0, :type :invoke, :f :get, :key "k"}',
            2,
            "still pending",
        ),
        ('{:process 0, :type :invoke, :f :incr, :key "k"}', 1, "unknown operation 'incr'"),
        ("{:process 0, :type :invoke, :f :get}", 1, "'get' needs a key"),
        ('{:process 0, :f :get, :key "k"}', 1, "missing :type"),
        ('{:process 0, :type "invoke", :f :get, :key "k"}', 1, ":type must be a keyword"),
        ('{:process 0, :type :invoke, :f :cas, :key "k", :value "x"}', 1, r"\[old new\]"),
        (
            '{:process 0, :type :invoke, :f :get, :key "k"}\n'
            '{:process 0, :type :ok, :f :put, :key "k", :value "x"}',
            2,
            "completes the 'get'",
        ),
        (
            '{:process 0, :type :invoke, :f :get, :key "k"}\n{:process 1, :type :invoke, :f :read}',
            2,
            "mixes operations with and without :key",
        ),
    ],
)
def test_bad_edn_histories_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError, match=f"line {line}: .*{message}"):
        parse_edn_history(text, source="h.edn")


@needs_shared
@pytest.mark.parametrize("name", ["c01-ok", "c01-bad", "c10-ok", "c10-bad", "c50-ok", "c50-bad"])
def test_porcupine_files_parse_completely(name: str) -> None:
    path = PORCUPINE / f"{name}.txt"
    text = path.read_text()
    ops, hint = load_history(path)
    assert hint == {"model": "kv", "initial": ""}
    assert len(ops) == text.count(":type :invoke") == text.count(":type :ok")
    assert all(op.ret is not None and op.call < op.ret for op in ops)
    assert {op.input[0] for op in ops} <= {"get", "put", "append"}
    lines = text.splitlines()
    first = ops[0]
    assert f":key {first.input[1]!r}".replace("'", '"') in lines[int(first.call) - 1]


# ----------------------------------------------------------------------------- JSON lines


def test_jsonl_operation_form_round_trips_with_its_hint(tmp_path: Path) -> None:
    ops = [
        Operation(0, 0.5, 1.5, ("put", "k", "v"), None),
        Operation(1, 1.0, None, ("append", "k", "w"), None),
        Operation(2, 2, 3, ("get", "k"), "vw"),
        Operation(3, 4, 5, ("cas", "k", "vw", "x"), True),
    ]
    path = tmp_path / "h.jsonl"
    dump_jsonl(ops, path, model_hint={"model": "kv", "initial": ""})
    assert path.read_text().splitlines()[0] == '{"meta": {"model": "kv", "initial": ""}}'
    loaded, hint = load_history(path)
    assert loaded == ops
    assert hint == {"model": "kv", "initial": ""}
    assert check_linearizability(loaded, **hint).ok is True


def test_jsonl_without_meta_infers_the_model() -> None:
    ops, hint = parse_jsonl_history(dumps_jsonl([Operation(0, 0, 1, ("write", 1), None)]))
    assert hint == {"model": "register", "initial": None}
    assert ops == [Operation(0, 0, 1, ("write", 1), None)]
    assert parse_jsonl_history("\n\n") == ([], {})


def test_jsonl_event_form() -> None:
    text = "\n".join(
        [
            '{"process": 0, "type": "invoke", "f": "write", "value": 1, "time": 10}',
            '{"process": 1, "type": "invoke", "f": "read", "value": null, "time": 11}',
            '{"process": 0, "type": "ok", "f": "write", "value": 1, "time": 12}',
            '{"process": 1, "type": "ok", "f": "read", "value": 1, "time": 13}',
            '{"process": "nemesis", "type": "info", "f": "kill"}',
            '{"process": 2, "type": "invoke", "f": "cas", "value": [1, 2]}',
            '{"process": 2, "type": "info", "f": "cas", "value": [1, 2]}',
        ]
    )
    ops, hint = parse_jsonl_history(text)
    assert hint == {"model": "register", "initial": None}
    assert ops == [
        Operation(0, 10, 12, ("write", 1), None),
        Operation(1, 11, 13, ("read",), 1),
        Operation(2, 6, None, ("cas", 1, 2), None),  # no time: the line number
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('{"client": 0, "call": 1, "ret": 2, "input": ["read"]}\n{oops', 2, "malformed JSON"),
        ("[1, 2]", 1, "expected a JSON object"),
        ('{"client": 0, "call": 1, "input": ["read"]}', 1, "missing 'ret'"),
        ('{"client": 0, "call": 3, "ret": 2, "input": ["read"]}', 1, "ret 2 precedes call 3"),
        ('{"client": 0, "call": "3", "ret": 4, "input": ["read"]}', 1, "call must be a number"),
        ('{"client": true, "call": 3, "ret": 4, "input": ["read"]}', 1, "client must be an int"),
        ('{"client": 0, "call": 3, "ret": 4, "input": "read"}', 1, "input must be a list"),
        (
            '{"client": 0, "call": 1, "ret": 2, "input": ["read"]}\n'
            '{"process": 0, "type": "invoke", "f": "read"}',
            2,
            "event-form line in a history of op-form lines",
        ),
        ('{"process": 0, "type": "done", "f": "read"}', 1, "unknown type 'done'"),
        ('{"process": 0, "type": "ok", "f": "read", "value": 1}', 1, "without a pending invoke"),
        (
            '{"client": 0, "call": 1, "ret": 2, "input": ["read"]}\n{"meta": {}}',
            2,
            "meta object may only be the first line",
        ),
    ],
)
def test_bad_jsonl_histories_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError, match=f"h.jsonl line {line}: .*{message}"):
        parse_jsonl_history(text, source="h.jsonl")


def test_unwritable_values_and_unreadable_files_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be written as JSON"):
        dumps_jsonl([Operation(0, 0, 1, ("write", b"bytes"), None)])
    with pytest.raises(ConfigError, match="cannot read history"):
        load_history(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read history"):
        load_history(bad)


def test_load_history_tells_the_formats_apart(tmp_path: Path) -> None:
    edn = tmp_path / "h.txt"
    edn.write_text("\n; a comment\n" + EDN)
    assert load_history(edn)[1]["model"] == "kv"
    js = tmp_path / "h.txt2"
    js.write_text('\n{"client": 0, "call": 1, "ret": 2, "input": ["read"], "output": null}\n')
    assert load_history(js) == (
        [Operation(0, 1, 2, ("read",), None)],
        {"model": "register", "initial": None},
    )


def test_infer_model() -> None:
    assert infer_model([]) is None
    assert infer_model([Operation(0, 0, 1, ("cas", 1, 2), True)]) == "register"
    assert infer_model([Operation(0, 0, 1, ("cas", "k", 1, 2), True)]) == "kv"
    with pytest.raises(ConfigError, match="mixes"):
        infer_model([Operation(0, 0, 1, ("read",), 1), Operation(0, 0, 1, ("get", "k"), 1)])
    with pytest.raises(ConfigError, match="cannot tell"):
        infer_model([Operation(0, 0, 1, ("pop",), 1)])


# ----------------------------------------------------------------------------- simulation


@pytest.mark.parametrize("model", ["register", "kv"])
def test_simulated_histories_are_deterministic_and_linearizable(model: str) -> None:
    kw: dict[str, Any] = {"model": model, "n_ops": 400, "clients": 6, "keys": 5, "seed": 9}
    a = simulate_history(**kw, info_rate=0.1)
    assert a == simulate_history(**kw, info_rate=0.1)
    assert a != simulate_history(**{**kw, "seed": 10}, info_rate=0.1)
    assert len(a) == 400
    assert 10 < sum(op.ret is None for op in a) < 80
    assert infer_model(a) == model
    # operations of different clients overlap
    ordered = sorted((op for op in a if op.ret is not None), key=lambda op: op.call)
    assert any(x.ret > y.call for x, y in itertools.pairwise(ordered))  # type: ignore[operator]
    assert check_linearizability(a, model=model).ok is True


def test_simulation_rejects_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        simulate_history(model="queue", n_ops=1)
    with pytest.raises(ConfigError):
        simulate_history(n_ops=1, clients=0)
