"""Typed records from data files: a frozen dataclass is the schema of a mapping.

The course keeps data (the taxonomy) in YAML and its schema in code: each kind of record
is a frozen dataclass, and :func:`record` turns one mapping of a data file into an
instance after checking it against the dataclass's fields - no unknown or missing key,
every value of its declared type (lists become tuples). Errors name the record, so a
typo in ``taxonomy.yaml`` reads ``head_types[12] ('Name mover head'): field 'stage'
...``. Rules that relate records to each other (a sub-category belongs to its stage) are
checked by the module that owns the data.

Why not JSON Schema: the rules that matter most here cross records, which JSON Schema
cannot state, so code would check them anyway; and this module needs no dependency
beyond the standard library on a learner's Colab runtime.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = ["DataError", "record", "records"]

T = TypeVar("T")


class DataError(ValueError):
    """A data file does not match its schema (the message says where and why)."""


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(hint))
    if origin is tuple:
        item = _type_name(get_args(hint)[0]).removeprefix("a ").removeprefix("an ")
        return f"a list of {item}s"
    return {str: "a string", bool: "true or false", int: "an integer"}.get(hint, str(hint))


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` (lists to tuples), else DataError."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in get_args(hint):
            try:
                return _convert(value, option, where)
            except DataError:
                continue
    elif origin is tuple:
        item = get_args(hint)[0]  # only tuple[X, ...] is used by the schemas
        if isinstance(value, list):
            return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    elif hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is str:
        # An empty string is always a mistake in these files.
        if isinstance(value, str) and value.strip():
            return value
    else:  # pragma: no cover - a schema bug, not a data bug
        raise TypeError(f"schema type {hint!r} is not supported")
    raise DataError(f"{where}: expected {_type_name(hint)}, got {value!r}")


def record(cls: type[T], data: Any, where: str) -> T:
    """An instance of the frozen dataclass ``cls`` built from the mapping ``data``.

    Args:
        cls: the record's dataclass; its fields and their type hints are the schema
            (``str``, ``bool``, ``int``, ``X | None`` and ``tuple[X, ...]``), fields with
            a default are optional.
        data: one mapping read from a data file.
        where: how to name the record in errors, e.g. ``"taxonomy.yaml: head_types[3]"``.

    Raises:
        DataError: ``data`` is not a mapping, has an unknown or a missing key, or a value
            of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise DataError(f"{where}: expected a mapping of fields, got {data!r}")
    label = f"{where} ({data['name']!r})" if isinstance(data.get("name"), str) else where
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise DataError(f"{label}: unknown field(s) {unknown}; the fields are {list(fields)}")
    hints = get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _convert(data[name], hints[name], f"{label}: field {name!r}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise DataError(f"{label}: missing field {name!r}")
    return cls(**values)


def records(cls: type[T], data: Any, where: str) -> tuple[T, ...]:
    """:func:`record` for each mapping of the list ``data`` (``where[i]`` in errors).

    Raises:
        DataError: ``data`` is not a non-empty list, or one of its records is invalid.
    """
    if not isinstance(data, list) or not data:
        raise DataError(f"{where}: expected a non-empty list of records, got {data!r}")
    return tuple(record(cls, item, f"{where}[{index}]") for index, item in enumerate(data))
