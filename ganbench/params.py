"""Typed parameters for plugins and run settings: parse TOML values into a dataclass, or refuse them.

A parameter class is a plain dataclass. Each field has a default and a trailing `# comment`, which
`ganbench plugins` prints as its description. Constraints ride on the type with `typing.Annotated`
and annotated-types (the aliases below cover the common ones); pydantic checks them, field by field
in strict mode, so `true` is not an int and "0.1" is not a float.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import math
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

import annotated_types as at
import pydantic

from ganbench.errors import UsageError, did_you_mean

# Aliases for plugin authors: `p: ganbench.Probability = 0.1  # chance to flip a label`
Probability = Annotated[float, at.Interval(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, at.Gt(0.0)]
NonNegativeFloat = Annotated[float, at.Ge(0.0)]
PositiveInt = Annotated[int, at.Gt(0)]
NonNegativeInt = Annotated[int, at.Ge(0)]


@dataclass(frozen=True)
class ParamInfo:
    """One parameter as `ganbench plugins` shows it."""

    name: str
    type: str
    default: Any
    help: str


def format_value(value: Any) -> str:
    """A value the way it is written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {format_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        bounds = []
        for m in meta:
            for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if getattr(m, attr, None) is not None:
                    bounds.append(f"{sym} {getattr(m, attr)}")
        return _type_name(base) + (f" ({', '.join(bounds)})" if bounds else "")
    if origin is typing.Literal:
        return " | ".join(format_value(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "none" if tp is type(None) else getattr(tp, "__name__", str(tp))


@functools.cache
def _field_comments(cls: type) -> dict[str, str]:
    """Trailing `# comments` on the field lines of a dataclass's source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    line_field: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] > 0 and tok.start[0] not in line_field:
            line_field[tok.start[0]] = tok.string
        if tok.type == tokenize.COMMENT and tok.start[0] in line_field:
            comments.setdefault(line_field[tok.start[0]], tok.string.lstrip("#").strip())
    return comments


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


@functools.cache
def _adapter(tp: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(tp)


def describe(cls: type | None) -> list[ParamInfo]:
    """The parameters of a params dataclass, with types, defaults and descriptions."""
    if cls is None:
        return []
    comments = _field_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        help_text = f.metadata.get("help") or comments.get(f.name, "")
        out.append(ParamInfo(f.name, _type_name(_hints(cls)[f.name]), default, help_text))
    return out


def _wants_tuple(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _wants_tuple(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_wants_tuple(a) for a in typing.get_args(tp))
    return origin is tuple


def _reject_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_reject_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_reject_non_finite(v) for v in value.values())
    return False


def parse(cls: type | None, values: dict[str, Any], where: str, paths: dict[str, str] | None = None) -> Any:
    """Build `cls(**values)`, checking every key and value.

    An error names the key as `paths[key]` when given (a value inherited from elsewhere in the
    file), else as `where.key`, where `where` is like "suite.toml: configs[2].tricks[0]". It names
    the value and what is allowed.
    """
    paths = paths or {}

    def at(key: str) -> str:
        return paths.get(key, f"{where}.{key}")

    if cls is None:
        if values:
            raise UsageError(f"{at(next(iter(values)))}: this plugin takes no parameters")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise UsageError(
                f"{at(key)}: unknown key{did_you_mean(key, fields)}; allowed: {', '.join(fields) or 'none'}"
            )
        if _reject_non_finite(value):
            raise UsageError(f"{at(key)} = {format_value(value)}: nan and inf are not allowed")
        if _wants_tuple(hints[key]) and isinstance(value, list):
            value = tuple(value)
        try:
            clean[key] = _adapter(hints[key]).validate_python(value, strict=True)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            raise UsageError(
                f"{at(key)} = {format_value(value)}: {err['msg'][0].lower()}{err['msg'][1:]} "
                f"(expected {_type_name(hints[key])})"
            ) from None
    missing = [n for n, f in fields.items() if n not in clean and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UsageError(f"{at(missing[0])}: required key is missing")
    return cls(**clean)


# Field metadata of a parameter that only the report reads (a convergence floor): it changes no
# number a run computes, so it is not part of the run's identity, and changing it re-trains nothing.
#     converged_at: float = dataclasses.field(default=0.5, metadata=REPORT_ONLY)  # comment
REPORT_ONLY = {"identity": False}
# Field metadata of a parameter added to a plugin after runs of it were made: it is part of a run's
# identity only when it is not at its default, so those runs keep their ids (a rerun finds them, and
# committed results.csv files still name them). Give such a parameter the default that reproduces
# the plugin's earlier behaviour.
#     d_width: int | None = dataclasses.field(default=None, metadata=ADDED_LATER)  # comment
ADDED_LATER = {"identity": "when-changed"}


def as_dict(params: Any, identity: bool = False) -> dict[str, Any]:
    """A params instance as plain JSON-able values (tuples become lists); with `identity`, without
    the fields marked `REPORT_ONLY`, nor those marked `ADDED_LATER` while at their defaults."""
    if params is None:
        return {}
    skip = set()
    if identity:
        for f in dataclasses.fields(params):
            marked = f.metadata.get("identity")
            if marked is False or (marked == "when-changed" and getattr(params, f.name) == f.default):
                skip.add(f.name)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()
            if k not in skip}
