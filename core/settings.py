"""Settings declared once: a pydantic-settings field gives the type, default, bounds and environment variable,
and the command-line flag and its ``--help`` line are derived from it here.

Why not the library's own CLI source: the services' flag names and environment names differ by design
(``--model`` reads the bundle-directory variable that training shares, ``--bootstrap-servers`` a ``KAFKA_``
one), and operators read
the environment name in ``--help``. So pydantic-settings reads the environment and validates; argparse only
collects the flags that were given, which override the environment (init arguments win in
pydantic-settings). A validation error becomes :class:`SettingsError` naming the flag and the variable.

Declaring a field::

    batch_size: int = Field(2000, ge=1, le=100_000, description="max records per batch")
    data: Path = Field(default_factory=default_data_path, validation_alias=DATA_ENV, description="data file")

The environment variable is the class's ``env_prefix`` + the upper-cased name unless ``validation_alias``
names it; ``json_schema_extra`` may set ``flag`` (e.g. ``-X``) or ``secret``.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import annotated_types
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

MODEL_DIR = "MODEL_DIR"  # one environment variable for the bundle directory, read by training and detector

S = TypeVar("S", bound="Settings")


class SettingsError(ValueError):
    """A setting is invalid; the message names its flag and environment variable (exit code 2)."""


class Settings(BaseSettings):
    """Frozen, validated once at start-up; other variables that share the prefix are not settings, not errors."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True, case_sensitive=False,
                                      env_ignore_empty=True)

    @classmethod
    def env_name(cls, name: str) -> str:
        alias = cls.model_fields[name].validation_alias
        if isinstance(alias, str):
            return alias
        return f"{cls.model_config.get('env_prefix', '')}{name}".upper()

    @classmethod
    def flag(cls, name: str) -> str:
        extra = cls.model_fields[name].json_schema_extra
        if isinstance(extra, dict) and isinstance(extra.get("flag"), str):
            return str(extra["flag"])
        return "--" + name.replace("_", "-")

    @classmethod
    def describe(cls, name: str) -> str:
        """``--flag (ENV_VAR)``: how error messages name a setting."""
        return f"{cls.flag(name)} ({cls.env_name(name)})"


# ------------------------------------------------------------------------------------------ the CLI
def _nested(info: FieldInfo) -> type[Settings] | None:
    ann = info.annotation
    return ann if isinstance(ann, type) and issubclass(ann, Settings) else None


def _choices(ann: Any) -> list[str] | None:
    args = typing.get_args(ann)
    if typing.get_origin(ann) is typing.Literal:
        return [str(a) for a in args]
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        for a in args:
            found = _choices(a)
            if found:
                return found
    return None


def _is(ann: Any, kind: type) -> bool:
    if ann is kind:
        return True
    return typing.get_origin(ann) in (typing.Union, types.UnionType) and kind in typing.get_args(ann)


def _shown_default(info: FieldInfo, secret: bool) -> str:
    if secret:
        return "unset"
    default = info.get_default(call_default_factory=True)
    if default is None or default == {} or default == []:
        return "unset"
    return str(default)


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type[Settings], *, exclude: Sequence[str] = ()) -> None:
    """Add one flag per field of ``cls`` (and of nested settings), each showing its environment variable."""
    for name, info in cls.model_fields.items():
        if name in exclude:
            continue
        nested = _nested(info)
        if nested is not None:
            add_arguments(parser, nested, exclude=exclude)
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        secret = _is(info.annotation, SecretStr)
        help_text = f"{info.description or ''} [env {cls.env_name(name)}; default: {_shown_default(info, secret)}]"
        help_text = help_text.replace("%", "%%")  # argparse %-formats help: a literal "99%" crashed --help
        kwargs: dict[str, Any] = {"dest": f"{cls.__name__}.{name}", "default": argparse.SUPPRESS, "help": help_text}
        if _is(info.annotation, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(info.annotation) is dict or _is(info.annotation, list):
            kwargs.update(action="append", metavar=extra.get("metavar", "VALUE"))
        else:
            kwargs["choices"] = _choices(info.annotation)
            if kwargs["choices"] is None:
                kwargs["metavar"] = extra.get("metavar") or name.upper()
        parser.add_argument(cls.flag(name), **kwargs)


def from_namespace(cls: type[S], args: argparse.Namespace, **overrides: Any) -> S:
    """Build ``cls`` from the environment with the given flags on top; raise :class:`SettingsError`."""
    given = {key.split(".", 1)[1]: value for key, value in vars(args).items()
             if key.startswith(f"{cls.__name__}.")}
    for name, info in cls.model_fields.items():
        nested = _nested(info)
        if nested is not None and name not in overrides:
            given[name] = from_namespace(nested, args)
    return build(cls, {**given, **overrides})


def build(cls: type[S], values: Mapping[str, Any]) -> S:
    try:
        return cls(**values)
    except ValidationError as exc:
        raise SettingsError(explain(cls, exc)) from None


def explain(cls: type[Settings], exc: ValidationError) -> str:
    """Each problem as ``--flag (ENV): what is wrong, got VALUE`` (secrets are never echoed)."""
    by_alias = {cls.env_name(n).lower(): n for n in cls.model_fields}
    problems = []
    for err in exc.errors():
        loc = str(err["loc"][0]) if err["loc"] else ""
        name = loc if loc in cls.model_fields else by_alias.get(loc.lower())
        if name is None:  # a model-level rule: its message already names the settings
            problems.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        info = cls.model_fields[name]
        shown = "***" if _is(info.annotation, SecretStr) else repr(err.get("input"))
        if err["type"] in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            problems.append(f"{cls.describe(name)} must be {_bounds(info)}, got {err.get('input')}")
        else:
            problems.append(f"{cls.describe(name)}: {str(err['msg']).removeprefix('Value error, ')}, got {shown}")
    return f"invalid {cls.__name__} configuration: " + "; ".join(problems)


def _num(x: Any) -> str:
    return str(int(x)) if float(x).is_integer() and abs(float(x)) < 1e15 else str(x)


def _bounds(info: FieldInfo) -> str:
    """The allowed range of a numeric field, from its declaration: ``1..100000``, ``in [0, 1)``, ``>= 0``."""
    b: dict[str, Any] = {}
    for m in info.metadata:
        for kind in ("Ge", "Gt", "Le", "Lt"):
            if isinstance(m, getattr(annotated_types, kind)):
                b[kind] = getattr(m, kind.lower())
    low = f"[{_num(b['Ge'])}" if "Ge" in b else f"({_num(b['Gt'])}" if "Gt" in b else None
    high = f"{_num(b['Le'])}]" if "Le" in b else f"{_num(b['Lt'])})" if "Lt" in b else None
    if "Ge" in b and "Le" in b:
        return f"{_num(b['Ge'])}..{_num(b['Le'])}"
    if low and high:
        return f"in {low}, {high}"
    if low:
        return (">= " if "Ge" in b else "> ") + low[1:]
    return ("<= " if "Le" in b else "< ") + str(high)[:-1]


def parse_pairs(value: Any, what: str) -> dict[str, str]:
    """``k=v,k=v`` (environment) or a list of ``k=v`` (repeated flag) as a dict; a dict passes through."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    items = [p for p in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    out: dict[str, str] = {}
    for item in items:
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} expects key=value, got {item!r}")
        out[key.strip()] = val.strip()
    return out
