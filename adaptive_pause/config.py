"""Shared config machinery: dataclass fields with help, validation helpers, YAML in and out, CLI parsing.

Owns: `help_field` / `check` (a one-line help per field; a `ValueError` naming the field), the typed
conversion of YAML and command-line values into a config dataclass (nested dataclass fields included:
`analytic: {levels: 7}` in YAML, `--analytic.levels 7` on the command line), `parse_cli` (`--config
FILE.yaml` gives defaults, `--field value` overrides them, `--help` lists every field), and the YAML round
trip that saves the resolved config beside every run. Each stage's config lives beside its stage.

Written by hand, not with transformers' `HfArgumentParser`: that parser has no nested dataclasses and
turns a wrong type into an argparse exit or a traceback deep in a stage; here every value is checked on
the way in, YAML and flags alike, with an error that names the field.

Must not: import torch, models, tasks or training code.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

C = TypeVar("C")


def help_field(text: str, **kwargs) -> Any:
    """A dataclass field with its one-line help (shown by `--help`)."""
    return field(metadata={"help": text}, **kwargs)


def check(condition: bool, name: str, message: str) -> None:
    """Raise `ValueError("name: message")` unless `condition`."""
    if not condition:
        raise ValueError(f"{name}: {message}")


# ---- types ---------------------------------------------------------------------------------------------------

def _unwrap_optional(tp) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_config(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def convert(value, tp, name: str):
    """`value` (from YAML, or a command-line string) as type `tp`, or a ValueError naming `name`."""
    inner, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError(f"{name}: must not be empty")
    if _is_config(inner):
        if isinstance(value, inner):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a mapping of {inner.__name__} fields, got {value!r}")
        return from_dict(inner, value, prefix=f"{name}.")
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        args = typing.get_args(inner)
        item = args[0] if args else Any
        items = value if isinstance(value, (list, tuple)) else [value]  # a lone value is a one-item list
        converted = [convert(v, item, f"{name}[{i}]") for i, v in enumerate(items)]
        return converted if origin is list else tuple(converted)
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if inner is int:
        if isinstance(value, bool):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if inner is float:
        if isinstance(value, bool):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        try:
            number = float(value)  # PyYAML reads 1e-3 as a string: accept numeric strings
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
        if math.isnan(number):
            raise ValueError(f"{name}: must not be NaN")
        return number
    if inner is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{name}: expected a string, got {value!r}")
        return str(value)
    return value


# ---- dicts and YAML ------------------------------------------------------------------------------------------

def to_dict(config) -> dict:
    """Plain data for YAML/JSON; a nested config left unset (None) is left out, not written as null."""
    out = {}
    hints = field_types(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif value is None and _is_config(_unwrap_optional(hints[f.name])[0]):
            continue
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def from_dict(cls: type[C], data: dict, prefix: str = "") -> C:
    """Build `cls` from a mapping: unknown fields, wrong types and missing required fields name the field."""
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping of field: value, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown field of {cls.__name__}; known fields: {sorted(fields)}")
    hints = field_types(cls)
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = convert(data[name], hints[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{prefix}{name}: required")
    try:
        return cls(**values)
    except ValueError as err:  # a nested config's own check names its field; say where it sits (model.hidden_size)
        if prefix and not str(err).startswith(prefix):
            raise ValueError(f"{prefix}{err}") from None
        raise


def save_yaml(config, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    os.replace(tmp, path)


def read_yaml(path: str | os.PathLike, what: str = "config") -> dict:
    """A YAML file holding a mapping, or a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: {path} is not a file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{what}: {path} is not valid YAML ({type(err).__name__}: {err})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{what}: {path} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def load_yaml(cls: type[C], path: str | os.PathLike) -> C:
    return from_dict(cls, read_yaml(path))


# ---- command line --------------------------------------------------------------------------------------------

def _flat_fields(cls, prefix: str = ""):
    """(dotted name, field, type) for every field, nested configs expanded."""
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        inner, _ = _unwrap_optional(hints[f.name])
        if _is_config(inner):
            yield from _flat_fields(inner, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f, hints[f.name]


def _default_text(f) -> str:
    if f.default is not dataclasses.MISSING:
        return f" (default: {f.default!r})"
    if f.default_factory is not dataclasses.MISSING:
        return f" (default: {f.default_factory()!r})"
    return " (required)"


def add_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (),
                  beside_positionals: bool = False) -> None:
    """One `--name` option per field of `cls` (nested configs as `--outer.inner`), values left as strings for
    `convert`. `beside_positionals`: options that take no optional value, so they never swallow a
    positional argument: booleans as `--flag` / `--no-flag`, lists one item per repeated flag."""
    for name, f, tp in _flat_fields(cls):
        if name in skip:
            continue
        inner, _ = _unwrap_optional(tp)
        kwargs: dict[str, Any] = {"dest": name, "help": f.metadata.get("help", "") + _default_text(f)}
        is_list = typing.get_origin(inner) in (list, tuple)
        if inner is bool and beside_positionals:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif is_list:
            kwargs["action" if beside_positionals else "nargs"] = "append" if beside_positionals else "*"
        elif inner is bool:
            kwargs.update(nargs="?", const="true", metavar="true|false")
        parser.add_argument(f"--{name}", **kwargs)


def build_parser(cls, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=(cls.__doc__ or "").strip().split("\n")[0],
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file with field: value defaults")
    add_arguments(parser, cls)
    return parser


def given_values(namespace: argparse.Namespace, cls) -> dict:
    """The fields of `cls` that were given on the command line (parsers built with SUPPRESS defaults)."""
    names = {name for name, _, _ in _flat_fields(cls)}
    data: dict = {}
    for dotted, value in vars(namespace).items():
        if dotted in names:
            _set_path(data, dotted, value)
    return data


def _set_path(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        node = data.get(key)
        if not isinstance(node, dict):
            node = data[key] = {}
        data = node
    data[last] = value


def parse_cli(cls: type[C], argv: list[str] | None = None, positional: tuple[str, ...] = (),
              prog: str | None = None) -> C:
    """Parse `argv` into `cls`: `--config FILE.yaml` gives defaults, `--field value` overrides them.

    Fields named in `positional` may also be given as leading positional arguments (e.g. `eval-pauses
    RUN_DIR`). Bad values raise ValueError naming the field (the CLI prints it without a traceback).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    for name in positional:
        if argv and not argv[0].startswith("-"):
            argv = [f"--{name}", argv[0]] + argv[1:]
    namespace = build_parser(cls, prog).parse_args(argv)
    config_file = getattr(namespace, "config", None)
    data = read_yaml(config_file, "--config") if config_file else {}
    for dotted, value in given_values(namespace, cls).items():
        _set_path(data, dotted, value) if not isinstance(value, dict) else _merge(data, dotted, value)
    return from_dict(cls, data)


def _merge(data: dict, key: str, value: dict) -> None:
    node = data.setdefault(key, {})
    if not isinstance(node, dict):
        data[key] = node = {}
    for k, v in value.items():
        _merge(node, k, v) if isinstance(v, dict) else node.__setitem__(k, v)
