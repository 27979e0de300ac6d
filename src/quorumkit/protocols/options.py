"""What every protocol's config does with keyword options (CLI, simulator, config files): refuse
unknown names, read ``unsafe`` (the names of known-unsafe variants), check shared fields."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from quorumkit.errors import ConfigError


def reject_unknown_options(cls: type[Any], options: dict[str, Any], label: str) -> None:
    """ConfigError naming the options ``cls`` (a dataclass) does not have, and those it has."""
    names = {f.name for f in fields(cls)}
    unknown = set(options) - names
    if unknown:
        raise ConfigError(
            f"unknown {label} option(s) {sorted(unknown)} (options: {', '.join(sorted(names))})"
        )


def unsafe_names(value: Any, label: str, *, comma_separated: bool = True) -> frozenset[str]:
    """The variant names of an ``unsafe`` option: None, a string (comma-separated names, or one
    name when ``comma_separated`` is False) or a collection of strings."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        if not comma_separated:
            return frozenset([value] if value else [])
        return frozenset(v.strip() for v in value.split(",") if v.strip())
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(v, str) for v in value
    ):
        raise ConfigError(f"{label} option unsafe must be names, got {value!r}")
    return frozenset(value)


def check_option_types(
    defaults: Any,
    options: dict[str, Any],
    label: str,
    *,
    exact: tuple[type, ...] = (int, bool),
    skip: frozenset[str] = frozenset(),
) -> None:
    """ConfigError for an option whose default is of a type in ``exact`` (int, bool: ``True``
    is an int to Python, ``"8"`` and ``8.0`` are not config ints) but whose value is not of
    exactly that type. Other fields (a float ratio, a tuple) are checked by the config itself;
    ``unsafe`` and the names in ``skip`` are the caller's."""
    for name, value in options.items():
        if name == "unsafe" or name in skip:
            continue
        want = type(getattr(defaults, name))
        if want in exact and type(value) is not want:
            raise ConfigError(f"{label} option {name} must be {want.__name__}, got {value!r}")


def check_non_negative_number(name: str, value: Any) -> None:
    """ConfigError unless ``value`` is an int or float >= 0 (a bool is not a number here)."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and value >= 0):
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
