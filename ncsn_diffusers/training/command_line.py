"""The command line of `train_ncsn.py`, made from `TrainingConfig`: one flag per field, with the field's help and
choices (see `config.flag`), its type from the field's annotation."""

import argparse
import dataclasses
import typing

from .config import TrainingConfig


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Adds `--<field>` for every `TrainingConfig` field: a bool that defaults to False is a switch, one that defaults
    to True takes `--no-<field>` too; an int or float flag converts its value."""
    for field in dataclasses.fields(TrainingConfig):
        meta = field.metadata
        options = {"help": argparse.SUPPRESS if meta.get("hidden") else meta.get("help")}
        if meta.get("choices") is not None:
            options["choices"] = meta["choices"]
        kind = value_type(field)
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction if field.default else "store_true"
        elif kind is not str:
            options["type"] = kind
        parser.add_argument(f"--{field.name}", *meta.get("aliases", ()), dest=field.name, **options)


def value_type(field: dataclasses.Field) -> type:
    """The type of a field's value: `int` for `int | None`."""
    return next(kind for kind in typing.get_args(field.type) or (field.type,) if kind is not type(None))
