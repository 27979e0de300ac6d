"""Client histories: the :class:`Operation` record, reading and writing histories, and a
seeded simulation of a linearizable store that produces them.

Formats :func:`load_history` reads (it tells them apart by their first line):

JSON lines, operation form (what :func:`dump_jsonl` writes)
    one operation per line: ``{"client": 0, "call": 1.5, "ret": 2.0, "input": ["put", "k",
    "v"], "output": null}``; ``"ret": null`` marks an indeterminate operation. An optional
    first line ``{"meta": {"model": "kv", "initial": ""}}`` carries the model hint (other
    keys of the meta object are ignored).

JSON lines, event form (Jepsen's)
    ``{"process": 0, "type": "invoke", "f": "put", "key": "k", "value": "v", "time": 3}``
    with ``type`` one of ``invoke``, ``ok``, ``fail``, ``info``; ``key`` absent for a
    register; ``time`` optional (the line number stands in for it).

EDN lines (Jepsen, and porcupine's test histories)
    ``{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}``, one map per
    line, read by a small parser (keywords, strings with escapes, integers, floats, ``nil``,
    ``true``, ``false``, vectors; no evaluation). ``:time`` is used when present, else the
    line number. Histories with keys are ``kv`` histories where a missing key reads as
    ``""`` (porcupine's convention); without keys they are ``register`` histories.

Event rules (both event forms): each ``invoke`` is completed by the next ``ok``/``fail``/
``info`` event of the same process. ``ok`` gives the output (the read value of a
``get``/``read``, ``True`` for a ``cas``); a ``fail`` operation did not happen and is dropped;
an ``info`` operation, and an ``invoke`` never completed by the end of the history, is
indeterminate (``ret`` is ``None``). Events of a process that is not an integer (Jepsen's
``:nemesis``) are skipped. A ``cas`` carries ``[old, new]`` as its value. A malformed line,
an unknown ``type`` or ``f``, a completion without an invoke, a second invoke while one is
pending, or a completion earlier than its invoke raises :class:`~quorumkit.errors.ConfigError`
naming the line.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from quorumkit.errors import ConfigError

__all__ = [
    "Keyword",
    "Operation",
    "dump_jsonl",
    "dumps_jsonl",
    "infer_model",
    "load_history",
    "parse_edn_history",
    "parse_edn_map",
    "parse_jsonl_history",
    "simulate_history",
]


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation of a concurrent history.

    ``call`` and ``ret`` are the times the client invoked the operation and saw its result
    (any unit, one clock for the whole history). ``ret`` is ``None`` for an *indeterminate*
    operation (Jepsen's ``:info``): it may have taken effect at any time after ``call``, or
    never, and its ``output`` is not known. Two operations are concurrent unless one's ``ret``
    is strictly smaller than the other's ``call``.
    """

    client: int
    call: float
    ret: float | None
    input: tuple[Any, ...]
    output: Any = None

    @property
    def determinate(self) -> bool:
        """True when the operation completed (its return was seen)."""
        return self.ret is not None


REGISTER_OPS: Final = frozenset({"read", "write"})
KV_OPS: Final = frozenset({"get", "put", "append", "delete"})


def infer_model(ops: Iterable[Operation]) -> str | None:
    """``"register"`` or ``"kv"`` from the operation names (``None`` for no operations)."""
    kinds: set[str] = set()
    for op in ops:
        name = op.input[0] if op.input else None
        if name in REGISTER_OPS or (name == "cas" and len(op.input) == 3):
            kinds.add("register")
        elif name in KV_OPS or (name == "cas" and len(op.input) == 4):
            kinds.add("kv")
        else:
            raise ConfigError(f"cannot tell the model of operation {op.input!r:.80}")
    if len(kinds) > 1:
        raise ConfigError("the history mixes register and kv operations")
    return kinds.pop() if kinds else None


# ----------------------------------------------------------------------------- EDN


@dataclass(frozen=True, slots=True)
class Keyword:
    """An EDN keyword such as ``:invoke`` (``name`` without the colon)."""

    name: str

    def __str__(self) -> str:
        return ":" + self.name


class _EdnError(Exception):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


_WS: Final = frozenset(" \t\r\n,")
_DELIM: Final = _WS | frozenset('{}[]()";')
_NUMBER: Final = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?[NM]?\Z")
_SYMBOLS: Final[dict[str, Any]] = {"nil": None, "true": True, "false": False}
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "b": "\b", "f": "\f"}


class _EdnReader:
    """Recursive descent over one line of EDN (a subset: no sets, tags, chars or symbols)."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def skip(self) -> None:
        s, i, n = self.s, self.i, len(self.s)
        while i < n:
            c = s[i]
            if c in _WS:
                i += 1
            elif c == ";":  # a comment runs to the end of the line
                i = n
            else:
                break
        self.i = i

    def value(self) -> Any:
        self.skip()
        s, i = self.s, self.i
        if i >= len(s):
            raise _EdnError("unexpected end of line", i)
        c = s[i]
        if c == "{":
            return self.collection("}", is_map=True)
        if c in "[(":
            return self.collection("]" if c == "[" else ")", is_map=False)
        if c == '"':
            return self.string()
        if c in "}])":
            raise _EdnError(f"unexpected {c!r}", i)
        word = self.word()
        if c == ":":
            if len(word) < 2:
                raise _EdnError("empty keyword", i)
            return Keyword(word[1:])
        if _NUMBER.match(word):
            text = word.rstrip("NM")
            if any(ch in text for ch in ".eE"):
                return float(text)
            return int(text)
        if word in _SYMBOLS:
            return _SYMBOLS[word]
        raise _EdnError(f"unsupported symbol {word!r:.30}", i)

    def word(self) -> str:
        s, start = self.s, self.i
        i = start
        while i < len(s) and s[i] not in _DELIM:
            i += 1
        self.i = i
        return s[start:i]

    def string(self) -> str:
        s = self.s
        i = self.i + 1
        out: list[str] = []
        while True:
            j = i
            while j < len(s) and s[j] != '"' and s[j] != "\\":
                j += 1
            out.append(s[i:j])
            if j >= len(s):
                raise _EdnError("unterminated string", self.i)
            if s[j] == '"':
                self.i = j + 1
                return "".join(out)
            esc = s[j + 1 : j + 2]
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                i = j + 2
            elif esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", s[j + 2 : j + 6]):
                out.append(chr(int(s[j + 2 : j + 6], 16)))
                i = j + 6
            else:
                raise _EdnError(f"bad escape \\{esc}", j)

    def collection(self, close: str, *, is_map: bool) -> Any:
        start = self.i
        self.i += 1
        items: list[Any] = []
        while True:
            self.skip()
            if self.i >= len(self.s):
                raise _EdnError(f"missing {close!r}", start)
            if self.s[self.i] == close:
                self.i += 1
                break
            items.append(self.value())
        if not is_map:
            return items
        if len(items) % 2:
            raise _EdnError("a map needs an even number of forms", start)
        result: dict[Any, Any] = {}
        for k, v in zip(items[::2], items[1::2], strict=True):
            if isinstance(k, (list, dict)):
                raise _EdnError("a map key must be a scalar", start)
            if k in result:
                raise _EdnError(f"duplicate key {k}", start)
            result[k] = v
        return result


def parse_edn_map(line: str) -> dict[str, Any]:
    """One EDN map with keyword keys, as ``{"process": 0, "type": Keyword("invoke"), ...}``.

    Raises :class:`ConfigError` (with the column) when the line is not exactly one such map.
    """
    reader = _EdnReader(line)
    try:
        reader.skip()
        if reader.i >= len(line) or line[reader.i] != "{":
            raise _EdnError("expected a map '{...}'", reader.i)
        value = reader.value()
        reader.skip()
        if reader.i < len(line):
            raise _EdnError("unexpected text after the map", reader.i)
    except _EdnError as e:
        raise ConfigError(f"{e.message} (column {e.pos + 1})") from None
    out: dict[str, Any] = {}
    for k, v in value.items():
        if not isinstance(k, Keyword):
            raise ConfigError(f"map key {k!r:.30} is not a keyword")
        out[k.name] = v
    return out


# ----------------------------------------------------------------------------- events

_NO_KEY: Final = object()
_EVENT_TYPES: Final = ("invoke", "ok", "fail", "info")


@dataclass(slots=True)
class _Pending:
    line: int
    client: int
    call: float
    f: str
    input: tuple[Any, ...]
    slot: int


class _Assembler:
    """Pairs invoke events with their completions into :class:`Operation` objects."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.slots: list[Operation | None] = []
        self.pending: dict[int, _Pending] = {}
        self.has_key: set[bool] = set()

    def error(self, line: int, message: str) -> ConfigError:
        return ConfigError(f"{self.source} line {line}: {message}")

    def feed(
        self, line: int, process: Any, type_: str, f: str, key: Any, value: Any, time: Any
    ) -> None:
        if type_ not in _EVENT_TYPES:
            raise self.error(line, f"unknown type {type_!r:.30} (expected invoke/ok/fail/info)")
        if isinstance(process, bool) or not isinstance(process, int):
            return  # the nemesis or another non-client process
        if isinstance(time, bool) or not isinstance(time, (int, float)) or math.isnan(time):
            raise self.error(line, f"time must be a number, got {time!r:.30}")
        if type_ == "invoke":
            previous = self.pending.get(process)
            if previous is not None:
                raise self.error(
                    line,
                    f"process {process} invokes while its operation of line "
                    f"{previous.line} is still pending",
                )
            inp = self.make_input(line, f, key, value)
            self.has_key.add(key is not _NO_KEY)
            if len(self.has_key) > 1:
                raise self.error(line, "the history mixes operations with and without :key")
            self.pending[process] = _Pending(line, process, time, f, inp, len(self.slots))
            self.slots.append(None)
            return
        invoke = self.pending.pop(process, None)
        if invoke is None:
            raise self.error(line, f"{type_} of process {process} without a pending invoke")
        if f != invoke.f:
            raise self.error(
                line, f"{type_} of {f!r} completes the {invoke.f!r} invoked on line {invoke.line}"
            )
        if time < invoke.call:
            raise self.error(
                line,
                f"the completion (time {time}) precedes its invoke on line {invoke.line} "
                f"(time {invoke.call})",
            )
        if type_ == "fail":
            return  # it did not happen
        if type_ == "info":
            op = Operation(invoke.client, invoke.call, None, invoke.input, None)
        else:
            name = invoke.input[0]
            output: Any = None
            if name in ("get", "read"):
                output = value
            elif name == "cas":
                output = True
            op = Operation(invoke.client, invoke.call, time, invoke.input, output)
        self.slots[invoke.slot] = op

    def make_input(self, line: int, f: str, key: Any, value: Any) -> tuple[Any, ...]:
        if key is _NO_KEY:
            if f == "read":
                return ("read",)
            if f == "write":
                return ("write", value)
            if f == "cas":
                return ("cas", *self.pair(line, value))
            if f in ("get", "put", "append", "delete"):
                raise self.error(line, f"{f!r} needs a key")
            raise self.error(line, f"unknown operation {f!r:.30} (read, write, cas)")
        if f in ("get", "read"):
            return ("get", key)
        if f in ("put", "write"):
            return ("put", key, value)
        if f == "append":
            return ("append", key, value)
        if f == "delete":
            return ("delete", key)
        if f == "cas":
            return ("cas", key, *self.pair(line, value))
        raise self.error(line, f"unknown operation {f!r:.30} (get, put, append, cas, delete)")

    def pair(self, line: int, value: Any) -> tuple[Any, Any]:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise self.error(line, f"a cas value must be [old new], got {value!r:.40}")
        return value[0], value[1]

    def finish(self) -> list[Operation]:
        for p in self.pending.values():  # never completed: indeterminate
            self.slots[p.slot] = Operation(p.client, p.call, None, p.input, None)
        return [op for op in self.slots if op is not None]


def _name(value: Any) -> Any:
    return value.name if isinstance(value, Keyword) else value


def _plain(value: Any) -> Any:
    """EDN values as plain Python: keywords become strings, vectors stay lists."""
    if isinstance(value, Keyword):
        return value.name
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def parse_edn_history(
    text: str, *, source: str = "<edn>", initial: Any = ""
) -> tuple[list[Operation], dict[str, Any]]:
    """Operations and a model hint from Jepsen-style EDN lines (see the module docstring).

    The hint is ``{"model": "kv", "initial": initial}`` when the events carry ``:key``
    (``initial`` defaults to ``""``, porcupine's value of a missing key), else
    ``{"model": "register", "initial": None}``.
    """
    asm = _Assembler(source)
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(";"):
            continue
        try:
            event = parse_edn_map(stripped)
        except ConfigError as e:
            raise asm.error(lineno, f"malformed EDN: {e}") from None
        for field in ("process", "type", "f"):
            if field not in event:
                raise asm.error(lineno, f"missing :{field}")
        type_ = event["type"]
        if not isinstance(type_, Keyword):
            raise asm.error(lineno, f":type must be a keyword, got {type_!r:.30}")
        f = _name(event["f"])
        if not isinstance(f, str):
            raise asm.error(lineno, f":f must be a keyword, got {f!r:.30}")
        key = _plain(event["key"]) if "key" in event else _NO_KEY
        asm.feed(
            lineno,
            event["process"],
            type_.name,
            f,
            key,
            _plain(event.get("value")),
            event.get("time", lineno),
        )
    ops = asm.finish()
    if True in asm.has_key:
        return ops, {"model": "kv", "initial": initial}
    return ops, {"model": "register", "initial": None}


# ----------------------------------------------------------------------------- JSON lines


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def parse_jsonl_history(
    text: str, *, source: str = "<jsonl>"
) -> tuple[list[Operation], dict[str, Any]]:
    """Operations and a model hint from JSON lines, operation or event form."""
    ops: list[Operation] = []
    asm = _Assembler(source)
    hint: dict[str, Any] | None = None
    form: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise asm.error(lineno, f"malformed JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise asm.error(lineno, "expected a JSON object")
        if "meta" in obj:
            if form is not None or hint is not None or not isinstance(obj["meta"], dict):
                raise asm.error(lineno, "a meta object may only be the first line")
            meta = obj["meta"]
            if "model" in meta and meta["model"] not in ("register", "kv"):
                raise asm.error(lineno, f"unknown model {meta['model']!r:.40} in the meta object")
            hint = {k: meta[k] for k in ("model", "initial") if k in meta}
            continue
        line_form = "event" if "type" in obj else "op"
        if form is None:
            form = line_form
        elif form != line_form:
            raise asm.error(lineno, f"an {line_form}-form line in a history of {form}-form lines")
        if line_form == "op":
            ops.append(_op_from_json(asm, lineno, obj))
            continue
        for field in ("process", "type", "f"):
            if field not in obj:
                raise asm.error(lineno, f"missing {field!r}")
        if not isinstance(obj["type"], str) or not isinstance(obj["f"], str):
            raise asm.error(lineno, "'type' and 'f' must be strings")
        asm.feed(
            lineno,
            obj["process"],
            obj["type"],
            obj["f"],
            obj["key"] if "key" in obj else _NO_KEY,
            obj.get("value"),
            obj.get("time", lineno),
        )
    if form == "event":
        ops = asm.finish()
    if hint is None:
        model = infer_model(ops)
        hint = {} if model is None else {"model": model, "initial": None}
    return ops, hint


def _op_from_json(asm: _Assembler, lineno: int, obj: dict[str, Any]) -> Operation:
    missing = [f for f in ("client", "call", "ret", "input") if f not in obj]
    if missing:
        raise asm.error(lineno, f"missing {', '.join(repr(f) for f in missing)}")
    client, call, ret, inp = obj["client"], obj["call"], obj["ret"], obj["input"]
    if isinstance(client, bool) or not isinstance(client, int):
        raise asm.error(lineno, f"client must be an integer, got {client!r:.30}")
    if not _number(call):
        raise asm.error(lineno, f"call must be a number, got {call!r:.30}")
    if ret is not None and not _number(ret):
        raise asm.error(lineno, f"ret must be a number or null, got {ret!r:.30}")
    if ret is not None and ret < call:
        raise asm.error(lineno, f"ret {ret} precedes call {call}")
    if not isinstance(inp, list) or not inp or not isinstance(inp[0], str):
        raise asm.error(lineno, f"input must be a list starting with a name, got {inp!r:.40}")
    return Operation(client, call, ret, tuple(inp), obj.get("output"))


def dumps_jsonl(ops: Iterable[Operation], *, model_hint: dict[str, Any] | None = None) -> str:
    """``ops`` as JSON lines (operation form), after an optional meta line."""
    lines = []
    try:
        if model_hint:
            lines.append(json.dumps({"meta": model_hint}))
        for op in ops:
            lines.append(
                json.dumps(
                    {
                        "client": op.client,
                        "call": op.call,
                        "ret": op.ret,
                        "input": list(op.input),
                        "output": op.output,
                    }
                )
            )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the history cannot be written as JSON: {e}") from None
    return "".join(line + "\n" for line in lines)


def dump_jsonl(
    ops: Iterable[Operation], path: str | Path, *, model_hint: dict[str, Any] | None = None
) -> None:
    """Write ``ops`` to ``path`` as JSON lines (see :func:`dumps_jsonl`)."""
    Path(path).write_text(dumps_jsonl(ops, model_hint=model_hint), encoding="utf-8")


def load_history(path: str | Path) -> tuple[list[Operation], dict[str, Any]]:
    """Read a history file in any of the supported formats: ``(operations, model hint)``.

    The hint is a dict such as ``{"model": "kv", "initial": ""}`` to pass on to
    :func:`~quorumkit.check.check_linearizability` (``{}`` for an empty history).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read history {p}: {e}") from None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if re.match(r"\{\s*:", line):
            return parse_edn_history(text, source=str(p))
        break
    return parse_jsonl_history(text, source=str(p))


# ----------------------------------------------------------------------------- simulation

_REGISTER_MIX: Final = (("read", 0.5), ("write", 0.3), ("cas", 0.2))
_KV_MIX: Final = (("get", 0.45), ("put", 0.2), ("append", 0.2), ("cas", 0.1), ("delete", 0.05))


def simulate_history(
    *,
    model: str = "kv",
    n_ops: int,
    clients: int = 10,
    keys: int = 100,
    info_rate: float = 0.05,
    seed: int = 0,
    initial: Any = None,
    latency: float = 1.0,
) -> list[Operation]:
    """A history of a real linearizable store, by a seeded simulation: linearizable by
    construction.

    ``clients`` clients issue ``n_ops`` operations in total, each right after its previous
    one returned (with a short think time); an operation's latency is exponential with mean
    ``latency``, and it takes effect at a uniformly random point between its call and its
    return, so operations of different clients overlap. A fraction ``info_rate`` of the
    operations are indeterminate: the client never sees their return, and half of them never
    take effect. Written values are unique; a cas names the current value half of the time.
    ``model`` is ``"register"`` (read 50%, write 30%, cas 20%) or ``"kv"`` (over ``keys``
    keys ``"0"``, ``"1"``, ...: get 45%, put 20%, append 20%, cas 10%, delete 5%; a missing
    key reads as ``initial``).
    """
    if model not in ("register", "kv"):
        raise ConfigError(f"unknown model {model!r:.40}: use 'register' or 'kv'")
    if n_ops < 0 or clients < 1 or keys < 1 or not 0.0 <= info_rate <= 1.0 or latency <= 0:
        raise ConfigError("simulate_history needs n_ops >= 0, clients >= 1, keys >= 1, ...")
    rng = random.Random(seed)
    mix = _REGISTER_MIX if model == "register" else _KV_MIX
    names = [m[0] for m in mix]
    weights = [m[1] for m in mix]
    clock = [(rng.uniform(0.0, latency), c) for c in range(clients)]
    heapq.heapify(clock)
    # (effect time or None, index, client, call, ret, name, key, indeterminate)
    plans: list[tuple[float | None, int, int, float, float, str, str | None, bool]] = []
    for i in range(n_ops):
        call, client = heapq.heappop(clock)
        ret = call + rng.expovariate(1.0 / latency)
        effect: float | None = rng.uniform(call, ret)
        info = rng.random() < info_rate
        if info and rng.random() < 0.5:
            effect = None
        name = rng.choices(names, weights)[0]
        key = str(rng.randrange(keys)) if model == "kv" else None
        plans.append((effect, i, client, call, ret, name, key, info))
        heapq.heappush(clock, (ret + rng.expovariate(10.0 / latency), client))
    store: dict[str | None, Any] = {}
    history: dict[str | None, list[Any]] = {}
    written = 0
    ops: list[Operation | None] = [None] * n_ops
    for effect, i, client, call, ret, name, key, info in sorted(
        plans, key=lambda p: (p[0] is None, p[0] or 0.0, p[1])
    ):
        current = store.get(key, initial)
        seen = history.setdefault(key, [initial])
        output: Any = None
        written += 1
        fresh: Any = written if model == "register" else f"v{written}"
        if name in ("read", "get"):
            output = current
            fresh = current
            inp: tuple[Any, ...] = (name,) if key is None else (name, key)
        elif name in ("write", "put"):
            inp = (name, fresh) if key is None else (name, key, fresh)
        elif name == "append":
            piece = f"[{written}]"
            inp = ("append", key, piece)
            fresh = piece if current is None or current == initial else current + piece
        elif name == "delete":
            inp = ("delete", key)
            fresh = initial
        else:
            old = current if rng.random() < 0.5 else rng.choice(seen)
            inp = ("cas", old, fresh) if key is None else ("cas", key, old, fresh)
            output = current == old
            if not output:
                fresh = current
        if effect is not None and fresh != current:
            store[key] = fresh
            seen.append(fresh)
        if info:
            ops[i] = Operation(client, call, None, inp, None)
        else:
            ops[i] = Operation(client, call, ret, inp, output)
    return [op for op in ops if op is not None]
