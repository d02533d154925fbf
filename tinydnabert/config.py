"""One validated dataclass per stage, turned into command-line flags and back, and saved as JSON.

A stage declares its settings once:

    @dataclass
    class PreprocessConfig:
        fasta: list[str] = field(default_factory=list, metadata={"help": "input FASTA files"})
        min_len: int = field(default=256, metadata={"help": "shortest segment, bp"})
        def __post_init__(self): ...   # reject bad combinations with a message that says what to do

and gets `--fasta A B --min-len 256` flags from `add_dataclass_args`, a config from
`dataclass_from_args`, and a `config.json` next to its output from `config_to_dict`.
Validation errors raised in __post_init__ should be `InputError` (the CLI prints them and exits 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per dataclass field, typed from its annotation, with its metadata help."""
    hints = typing.get_type_hints(cls)
    # Required flags first: a kw_only config that extends a shared one (eval/common.py) declares its required
    # fields (--model --task --out) after the inherited defaults; --help should still start with them.
    for f in sorted(dataclasses.fields(cls), key=lambda f: not _required(f)):
        if f.name in skip or not f.init or f.metadata.get("cli") is False:
            continue
        tp = hints[f.name]
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kwargs: dict[str, Any] = {"dest": f.name, "help": f"{help_text} (default: {default})"}
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType) and type(None) in args:  # Optional[X] or X | None
            tp = next(a for a in args if a is not type(None))
            origin, args = typing.get_origin(tp), typing.get_args(tp)
        required = _required(f)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = default
        elif origin in (list, tuple) and f.metadata.get("repeat"):  # --data A --data B (or --data A B)
            kwargs["action"] = "extend"
            kwargs["nargs"] = "+"
            kwargs["type"] = args[0] if args and args[0] is not Ellipsis else str
            kwargs["default"] = None
        elif origin in (list, tuple):
            kwargs["nargs"] = "+"
            kwargs["type"] = args[0] if args and args[0] is not Ellipsis else str
            kwargs["default"] = default
        else:
            kwargs["type"] = tp
            kwargs["default"] = default
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if required:
            kwargs["required"] = True
        parser.add_argument(_flag(f.name), **kwargs)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def dataclass_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build the stage config from parsed flags (runs its __post_init__ validation)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides)
    for f in dataclasses.fields(cls):
        if f.name in values and isinstance(values[f.name], list) and _is_tuple(cls, f.name):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def _is_tuple(cls: type, name: str) -> bool:
    return typing.get_origin(typing.get_type_hints(cls)[name]) is tuple


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) config dataclass."""
    return dataclasses.asdict(cfg)


def to_flags(cls: type, **values: Any) -> list[str]:
    """The command-line flags that set `values` on stage config `cls` (`--vocab-size 1024`, `--no-progress`,
    `--fasta A B`), checked against its fields: a command built here from a renamed field fails in the
    unit test that builds it, not minutes into a run. Nothing is validated: the stage does that."""
    fields = {f.name for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli") is not False}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)} (its flags: {sorted(fields)})")
    argv: list[str] = []
    for name, value in values.items():
        if isinstance(value, bool):
            argv.append(_flag(name) if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            argv += [_flag(name), *map(str, value)]
        else:
            argv += [_flag(name), str(value)]
    return argv
