"""Strict JSON ⇄ frozen-dataclass conversion for configs.

Configs are plain data written beside the weights; reading them back must
reject unknown keys and wrong types so a tampered or stale file fails loudly
instead of building a different model.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from samplegen.errors import ParameterError

T = TypeVar("T")


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterError(f"{name}={value!r} must be a number")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"{name}={value!r} must be an integer")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ParameterError(f"{name}={value!r} must be true or false")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ParameterError(f"{name}={value!r} must be a string")
        return value
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{name}={value!r} must be a list")
        item_type = args[0]
        return tuple(_check_type(f"{name}[{i}]", v, item_type) for i, v in enumerate(value))
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(name, value, arg)
            except ParameterError:
                continue
        raise ParameterError(f"{name}={value!r} has the wrong type")
    return value


def from_dict(cls: type[T], data: Any, what: str | None = None) -> T:
    """Build dataclass ``cls`` from a JSON object, rejecting unknown keys and wrong types.

    Missing keys take the dataclass defaults, so configs written by an older
    version with fewer options still load.
    """
    label = what or cls.__name__
    if not isinstance(data, dict):
        raise ParameterError(f"{label} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParameterError(f"{label} has unknown key(s) {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _check_type(f"{label}.{key}", value, hints[key]) for key, value in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass → JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}
