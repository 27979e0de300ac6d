"""Sequential specifications ("models") for the linearizability checker.

A model says what one operation does when it runs alone: from a state and an input it gives
the output the operation must return and the next state. The checker asks, for a concurrent
history, whether some order of the operations, consistent with their real-time order, is a run
of the model (Herlihy & Wing 1990).

Two models are built in:

``register`` (state: the register's value, ``initial`` at the start, default ``None``)
    ``("read",)`` returns the value; ``("write", v)`` sets it and returns ``None``;
    ``("cas", old, new)`` sets ``new`` and returns ``True`` when the value is ``old``, else
    returns ``False`` and changes nothing.

``kv`` (checked key by key, so its state is *one key's* value; a missing key has the value
``initial``, default ``None``; porcupine's and Jepsen-EDN histories use ``""``)
    ``("get", k)`` returns the value; ``("put", k, v)`` sets it; ``("append", k, v)``
    concatenates ``v`` (``str``, ``bytes`` or sequences of one kind; appending to a missing key
    gives ``v``); ``("cas", k, old, new)`` as for the register (a missing key compares as
    ``initial``); ``("delete", k)`` makes the key missing again. ``put``, ``append`` and
    ``delete`` return ``None``.

The output of a blind write (``write``, ``put``, ``delete``) and of ``append`` carries no
information and is not compared. The output of a completed ``cas`` must be ``True`` or
``False``. Values are compared with ``==`` after lists, dicts and sets are turned into tuples
and frozensets (states must be hashable: the checker memoizes them).

For speed, a model *compiles* each operation into a step function ``state -> next state``
that returns :data:`FAIL` when the operation cannot take effect in that state with the
output it recorded. An indeterminate operation (its return was never seen) is compiled with
an unconstrained output; one that cannot change the state (a read) compiles to ``None``: it
is dropped, since it constrains nothing.

A model may also give *pruning hints* (``is_blind``, ``is_read_only``, ``required_state``,
``forbidden_state``, ``acts_on``, ``reset_state``, ``grows``, ``can_grow``, ``split_growth``,
``growth_piece``, ``total_growth``): promises about its operations that let the checker cut
the search (see :mod:`quorumkit.check.linearizability`). The defaults promise nothing; the
two built-in models make exact promises. A subclass that changes what an operation does must
revisit them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any, ClassVar, Final

from quorumkit.errors import ConfigError

__all__ = [
    "FAIL",
    "KVModel",
    "Model",
    "RegisterModel",
    "StepFn",
    "freeze",
    "make_model",
]


class _Fail:
    """The type of :data:`FAIL` (a singleton)."""

    _instance: ClassVar[_Fail | None] = None

    def __new__(cls) -> _Fail:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "FAIL"


FAIL: Final = _Fail()
"""Returned by a step function when the operation cannot be linearized in that state."""

StepFn = Callable[[Any], Any]
"""A compiled operation: ``state -> next state``, or :data:`FAIL`."""

_SCALARS = (str, int, float, bytes, type(None), bool)


def freeze(value: Any) -> Hashable:
    """``value`` made hashable: lists and tuples become tuples, dicts and sets frozensets.

    Raises :class:`ConfigError` for anything else that cannot be hashed.
    """
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return frozenset((freeze(k), freeze(v)) for k, v in value.items())
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        raise ConfigError(
            f"value {value!r:.60} of type {type(value).__name__} is not hashable "
            "(the checker memoizes model states)"
        ) from None
    return value  # type: ignore[no-any-return]


def _concat(state: Any, value: Any, initial: Any) -> Any:
    """``state`` with ``value`` appended, or :data:`FAIL` when they do not concatenate."""
    if state is None:
        return value
    if type(state) is type(value) and isinstance(state, (str, bytes, tuple)):
        return state + value
    if state == initial:  # a missing key (whose value reads as ``initial``) gives ``value``
        return value
    return FAIL


class Model(ABC):
    """A sequential specification. Subclass it to check histories of other objects.

    ``partition_key`` splits a history into independent parts (P-compositionality): each
    part is checked alone, from :meth:`init_state`. A model with one part returns ``None``.
    """

    name: ClassVar[str] = "model"
    ops: ClassVar[dict[str, int]] = {}
    """operation name -> the length of its input tuple"""
    blind_ops: ClassVar[frozenset[str]] = frozenset()
    """operations whose next state does not depend on the state and that always succeed"""

    def __init__(self, initial: Any = None) -> None:
        self.initial: Hashable = freeze(initial)

    def init_state(self) -> Hashable:
        """The state every partition starts from."""
        return self.initial

    def validate(self, input: tuple[Any, ...], output: Any, determinate: bool) -> None:
        """Raise :class:`ConfigError` when ``input`` (and ``output``) make no sense."""
        if not input or not isinstance(input[0], str):
            raise ConfigError(f"an input must start with the operation name, got {input!r:.80}")
        name = input[0]
        arity = self.ops.get(name)
        if arity is None:
            known = ", ".join(sorted(self.ops))
            raise ConfigError(f"unknown {self.name} operation {name!r} (known: {known})")
        if len(input) != arity:
            raise ConfigError(
                f"{self.name} operation {name!r} takes {arity - 1} argument(s), "
                f"got {len(input) - 1}: {input!r:.80}"
            )
        if name == "cas" and determinate and not isinstance(output, bool):
            raise ConfigError(f"a completed cas returns True or False, got {output!r:.40}")

    def partition_key(self, input: tuple[Any, ...]) -> Hashable:
        """The part of the history ``input`` belongs to (``None``: a single part)."""
        return None

    def is_blind(self, input: tuple[Any, ...]) -> bool:
        """True when the operation sets the state to a value that does not depend on it,
        always succeeds, and returns nothing that depends on it (a write). A pruning hint."""
        return input[0] in self.blind_ops

    # Pruning hints. The defaults are always safe (they prune nothing); a model that
    # overrides them must keep their promises, or the checker may wrongly say False.

    def is_read_only(self, input: tuple[Any, ...], output: Any) -> bool:
        """True when the completed operation, wherever it can go, leaves the state as it was.

        The checker linearizes such an operation as soon as it can, without trying other
        orders (it commutes to the front).
        """
        return False

    def required_state(self, input: tuple[Any, ...], output: Any) -> tuple[bool, Any]:
        """``(True, s)`` when the completed operation can go in state ``s`` only (a read; a
        cas that returned True)."""
        return False, None

    def forbidden_state(self, input: tuple[Any, ...], output: Any) -> tuple[bool, Any]:
        """``(True, s)`` when the completed read-only operation can go in any state but ``s``
        (a cas that returned False)."""
        return False, None

    def acts_on(self, input: tuple[Any, ...]) -> tuple[bool, Any]:
        """``(True, s)`` when the operation, if indeterminate, changes the state only when it
        is ``s`` (a cas: its old value), and never grows it."""
        return False, None

    def grows(self, input: tuple[Any, ...]) -> bool:
        """True when the operation can only *grow* the state, in the sense of
        :meth:`can_grow` (an append)."""
        return False

    def can_grow(self, state: Any, target: Any) -> bool:
        """False when no sequence of operations that :meth:`grows` turns ``state`` into
        ``target``. Only asked when the history has such operations."""
        return True

    def total_growth(self, ops: Sequence[Any]) -> bool:
        """True when, in a history of these operations (:class:`Operation` objects), every
        completed operation that :meth:`grows` the state succeeds in any state it can meet
        and returns the same output there: it observes nothing."""
        return False

    def growth_piece(self, input: tuple[Any, ...]) -> Hashable:
        """What an operation that :meth:`grows` the state adds to it (see
        :meth:`split_growth`)."""
        return None

    def split_growth(
        self, start: Any, target: Any, pieces: Collection[Hashable]
    ) -> tuple[bool, list[Any] | None]:
        """How growth turns ``start`` into ``target`` (when :meth:`can_grow` says it can),
        adding some of ``pieces`` (each added by one operation): ``(False, None)`` when it
        cannot, ``(True, [p1, p2, ...])`` when it can in exactly this one way, ``(True,
        None)`` when unknown or in several ways."""
        return True, None

    def reset_state(self, input: tuple[Any, ...]) -> tuple[bool, Any]:
        """``(True, s)`` when the operation, whenever it changes the state other than by
        growing it, sets it to ``s`` (a write, a delete, the new value of a cas).

        With :meth:`required_state` and :meth:`can_grow` this lets the checker abandon a
        configuration where a read cannot go now, no growth can give the state it needs,
        and every operation that could still set such a state before the read's return has
        already been linearized.
        """
        return False, None

    @abstractmethod
    def apply(self, state: Any, input: tuple[Any, ...]) -> tuple[Any, Any]:
        """Run ``input`` alone from ``state``: ``(output, next state)``.

        The next state is :data:`FAIL` when the operation cannot run at all in ``state``.
        """

    def compile(self, input: tuple[Any, ...], output: Any, determinate: bool) -> StepFn | None:
        """A step function for one operation (``None``: the operation constrains nothing).

        The default runs :meth:`apply` and compares outputs; subclasses specialize it.
        """
        inp = tuple(freeze(x) for x in input)
        out = freeze(output)
        apply = self.apply
        if not determinate:

            def step_any(state: Any) -> Any:
                return apply(state, inp)[1]

            return step_any

        def step(state: Any) -> Any:
            got, nxt = apply(state, inp)
            return nxt if got == out else FAIL

        return step

    def describe_state(self, state: Any) -> str:
        """The state for humans."""
        return repr(state)


def _compile_read(out: Any) -> StepFn:
    def read(state: Any) -> Any:
        return state if state == out else FAIL

    return read


def _compile_set(value: Any) -> StepFn:
    def write(state: Any) -> Any:
        return value

    return write


def _compile_cas(old: Any, new: Any, determinate: bool, output: Any) -> StepFn:
    if not determinate:

        def cas_any(state: Any) -> Any:
            return new if state == old else state

        return cas_any
    if output:

        def cas_true(state: Any) -> Any:
            return new if state == old else FAIL

        return cas_true

    def cas_false(state: Any) -> Any:
        return FAIL if state == old else state

    return cas_false


class RegisterModel(Model):
    """One read/write/compare-and-set register (see the module docstring)."""

    name = "register"
    ops = {"read": 1, "write": 2, "cas": 3}
    blind_ops = frozenset({"write"})

    def is_read_only(self, input: tuple[Any, ...], output: Any) -> bool:
        return bool(input[0] == "read" or (input[0] == "cas" and output is False))

    def required_state(self, input: tuple[Any, ...], output: Any) -> tuple[bool, Any]:
        if input[0] == "read":
            return True, freeze(output)
        if input[0] == "cas" and output is True:
            return True, freeze(input[1])
        return False, None

    def acts_on(self, input: tuple[Any, ...]) -> tuple[bool, Any]:
        if input[0] == "cas":
            return True, freeze(input[1])
        return False, None

    def forbidden_state(self, input: tuple[Any, ...], output: Any) -> tuple[bool, Any]:
        if input[0] == "cas" and output is False:
            return True, freeze(input[1])
        return False, None

    def reset_state(self, input: tuple[Any, ...]) -> tuple[bool, Any]:
        if input[0] == "write":
            return True, freeze(input[1])
        if input[0] == "cas":
            return True, freeze(input[2])
        return False, None

    def apply(self, state: Any, input: tuple[Any, ...]) -> tuple[Any, Any]:
        name = input[0]
        if name == "read":
            return state, state
        if name == "write":
            return None, input[1]
        if state == input[1]:
            return True, input[2]
        return False, state

    def compile(self, input: tuple[Any, ...], output: Any, determinate: bool) -> StepFn | None:
        name = input[0]
        if name == "read":
            return _compile_read(freeze(output)) if determinate else None
        if name == "write":
            return _compile_set(freeze(input[1]))
        return _compile_cas(freeze(input[1]), freeze(input[2]), determinate, output)


class KVModel(Model):
    """A key-value map, checked one key at a time (see the module docstring)."""

    name = "kv"
    ops = {"get": 2, "put": 3, "append": 3, "cas": 4, "delete": 2}
    blind_ops = frozenset({"put", "delete"})

    def is_read_only(self, input: tuple[Any, ...], output: Any) -> bool:
        return bool(input[0] == "get" or (input[0] == "cas" and output is False))

    def required_state(self, input: tuple[Any, ...], output: Any) -> tuple[bool, Any]:
        if input[0] == "get":
            return True, freeze(output)
        if input[0] == "cas" and output is True:
            return True, freeze(input[2])
        return False, None

    def acts_on(self, input: tuple[Any, ...]) -> tuple[bool, Any]:
        if input[0] == "cas":
            return True, freeze(input[2])
        return False, None

    def forbidden_state(self, input: tuple[Any, ...], output: Any) -> tuple[bool, Any]:
        if input[0] == "cas" and output is False:
            return True, freeze(input[2])
        return False, None

    def grows(self, input: tuple[Any, ...]) -> bool:
        return bool(input[0] == "append")

    def growth_piece(self, input: tuple[Any, ...]) -> Hashable:
        return freeze(input[2])

    def split_growth(
        self, start: Any, target: Any, pieces: Collection[Hashable]
    ) -> tuple[bool, list[Any] | None]:
        if self.initial not in (None, "", b"", ()) or not isinstance(target, (str, bytes, tuple)):
            return True, None
        rest = target if start is None or start == self.initial else target[len(start) :]
        size = len(rest)
        lengths = sorted({len(p) for p in pieces if type(p) is type(rest) and len(p) > 0})
        # ways[i]: the decompositions of rest[i:] into pieces (0, 1, or 2 for "several")
        ways = [0] * size + [1]
        step = [0] * (size + 1)
        for i in range(size - 1, -1, -1):
            w = 0
            for length in lengths:
                j = i + length
                if j > size:
                    break
                if ways[j] and rest[i:j] in pieces:
                    w += ways[j]
                    step[i] = length
            ways[i] = min(w, 2)
        if ways[0] == 0:
            return False, None
        if ways[0] > 1:
            return True, None
        out = []
        i = 0
        while i < size:
            out.append(rest[i : i + step[i]])
            i += step[i]
        return True, out

    def total_growth(self, ops: Sequence[Any]) -> bool:
        # appends never fail when every value the key can hold is of one concatenable type
        kinds = set()
        if self.initial is not None:
            kinds.add(type(self.initial))
        for op in ops:
            name = op.input[0]
            if name in ("put", "append"):
                kinds.add(type(freeze(op.input[2])))
            elif name == "cas":
                kinds.add(type(freeze(op.input[3])))
        return len(kinds) <= 1 and kinds <= {str, bytes, tuple}

    def reset_state(self, input: tuple[Any, ...]) -> tuple[bool, Any]:
        name = input[0]
        if name == "put":
            return True, freeze(input[2])
        if name == "delete":
            return True, self.initial
        if name == "cas":
            return True, freeze(input[3])
        return False, None

    def can_grow(self, state: Any, target: Any) -> bool:
        if self.initial not in (None, "", b"", ()):
            return True  # appends may pass through `initial` and start afresh: no pruning
        if state is None or state == self.initial or state == target:
            return True
        if type(state) is not type(target) or not isinstance(state, (str, bytes, tuple)):
            return False
        return len(state) < len(target) and bool(target[: len(state)] == state)

    def partition_key(self, input: tuple[Any, ...]) -> Hashable:
        return freeze(input[1])

    def apply(self, state: Any, input: tuple[Any, ...]) -> tuple[Any, Any]:
        name = input[0]
        if name == "get":
            return state, state
        if name == "put":
            return None, input[2]
        if name == "append":
            return None, _concat(state, input[2], self.initial)
        if name == "delete":
            return None, self.initial
        if state == input[2]:
            return True, input[3]
        return False, state

    def compile(self, input: tuple[Any, ...], output: Any, determinate: bool) -> StepFn | None:
        name = input[0]
        if name == "get":
            return _compile_read(freeze(output)) if determinate else None
        if name == "put":
            return _compile_set(freeze(input[2]))
        if name == "delete":
            return _compile_set(self.initial)
        if name == "append":
            value = freeze(input[2])
            initial = self.initial

            def append(state: Any) -> Any:
                return _concat(state, value, initial)

            return append
        return _compile_cas(freeze(input[2]), freeze(input[3]), determinate, output)


MODELS: Final[dict[str, type[Model]]] = {"register": RegisterModel, "kv": KVModel}


def make_model(model: str | Model, initial: Any = None) -> Model:
    """The model named ``model`` (``"register"`` or ``"kv"``), or ``model`` itself."""
    if isinstance(model, Model):
        return model
    cls = MODELS.get(model) if isinstance(model, str) else None
    if cls is None:
        known = ", ".join(repr(k) for k in MODELS)
        raise ConfigError(f"unknown model {model!r:.40}: use one of {known} or a Model instance")
    return cls(initial)
