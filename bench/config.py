"""Typed config dataclasses and checked `--set key=value` overrides.

Every knob is a field of a frozen dataclass with its recipe default. Overrides are parsed
against the field's declared type: an unknown key or a value of the wrong type is a
UserError (exit code 2), never a silent string.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from bench.errors import UserError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(text: str, typ: Any, key: str) -> Any:
    """Convert `text` to the declared type `typ` (int, float, bool, str, tuple, Optional)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in {"none", "null"}:
            return None
        return parse_value(text, args[0], key)
    if origin is tuple:
        args = typing.get_args(typ)
        inner = args[0] if args else str
        parts = [p for p in text.split(",") if p.strip()]
        return tuple(parse_value(p.strip(), inner, key) for p in parts)
    try:
        if typ is bool:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(text)
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
        if typ is str:
            return text
    except ValueError:
        pass
    else:
        raise UserError(f"--set {key}: unsupported field type {typ!r}")
    name = getattr(typ, "__name__", str(typ))
    raise UserError(f"--set {key}={text}: expected a value of type {name}")


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply(cfg: Any, overrides: dict[str, str], scope: str) -> Any:
    """Return a copy of dataclass `cfg` with `overrides` (field -> text) applied and checked."""
    types = field_types(type(cfg))
    changes = {}
    for field, text in overrides.items():
        if field not in types:
            known = ", ".join(types)
            raise UserError(f"--set {scope}.{field}: unknown key; {scope} has: {known}")
        changes[field] = parse_value(text, types[field], f"{scope}.{field}")
    return dataclasses.replace(cfg, **changes)


def parse_sets(items: list[str]) -> dict[str, dict[str, str]]:
    """Split ['simclr.temperature=0.2', ...] into {'simclr': {'temperature': '0.2'}}.

    The scope is everything before the last dot ('byol.optim.lr' -> scope 'byol.optim').
    """
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        scope, dot, field = key.strip().rpartition(".")
        if not sep or not dot or not scope or not field:
            raise UserError(f"--set {item!r}: expected SCOPE.KEY=VALUE, e.g. simclr.temperature=0.2")
        out.setdefault(scope, {})[field] = value.strip()
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-friendly dict of a dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)
