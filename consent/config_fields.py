"""How each setting is read from its environment variable and checked.

A field of `Settings` (consent/config.py) named `token_ttl` is read from `CONSENT_TOKEN_TTL`. Its type says
how the text is read (whole number, number, yes/no, one of a few words, comma-separated list, text) and an
optional `Bounds` beside it, `Annotated[int, Bounds(at_least=1, unit="seconds")]`, what values are allowed.
The same checks run on values given in code, so a bad value stops the service at start whichever way it came,
with a `SettingsError` naming the variable and the form it expects.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A setting has a value the service cannot run with. The message names its environment variable."""


@dataclass(frozen=True)
class Bounds:
    """What a setting allows beyond its type: a least value (or, for text, a least length) and the unit
    shown in errors. A secret's value is never repeated in an error."""

    at_least: float | None = None
    unit: str = ""
    secret: bool = False


@dataclass(frozen=True)
class Field:
    """One setting: its field name, variable, type (without Optional), bounds and whether it may be unset."""

    name: str
    variable: str
    kind: Any
    bounds: Bounds
    optional: bool

    def expected(self) -> str:
        """The form of an acceptable value, as an error shows it."""
        low, unit = self.bounds.at_least, f" of {self.bounds.unit}" if self.bounds.unit else ""
        if self.kind is bool:
            return "1/0, true/false, yes/no or on/off (any case)"
        if self.kind is int:
            return f"a whole number{unit}" + (f" >= {low:g}" if low is not None else "")
        if self.kind is float:
            return f"a number{unit}" + (f" >= {low:g}" if low is not None else "")
        if typing.get_origin(self.kind) is Literal:
            return "one of " + ", ".join(typing.get_args(self.kind))
        if typing.get_origin(self.kind) is tuple:
            return "a comma-separated list of text"
        return f"text of at least {low:g} characters" if low else "text"


def env_variable(field_name: str) -> str:
    return "CONSENT_" + field_name.upper()


def fields_of(cls: type) -> list[Field]:
    """The settings a Struct declares, in order."""
    found = []
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        bounds = Bounds()
        if typing.get_origin(hint) is Annotated:
            hint, *extras = typing.get_args(hint)
            bounds = next((extra for extra in extras if isinstance(extra, Bounds)), bounds)
        kind, optional = hint, False
        if typing.get_origin(hint) in (Union, types.UnionType) and type(None) in typing.get_args(hint):
            (kind,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            optional = True
        found.append(Field(name, env_variable(name), kind, bounds, optional))
    return found


def refused(field: Field, shown: object) -> SettingsError:
    value = "" if field.bounds.secret else f", not {shown!r}"
    return SettingsError(f"{field.variable} must be {field.expected()}{value}")


def parse(field: Field, text: str) -> object:
    """The value of a variable's text (not empty: an empty variable leaves the default), checked."""
    word = text.strip()
    if field.kind is bool:
        if word.lower() not in TRUE_WORDS + FALSE_WORDS:
            raise refused(field, text)
        value: object = word.lower() in TRUE_WORDS
    elif field.kind in (int, float):
        try:
            value = field.kind(word)
        except ValueError:
            raise refused(field, text) from None
    elif typing.get_origin(field.kind) is tuple:
        value = tuple(item.strip() for item in text.split(",") if item.strip())
    else:
        value = word
    check(field, value, shown=text)
    return value


def check(field: Field, value: object, shown: object = None) -> None:
    """Refuse a value of the wrong type or out of bounds, however it was given (`shown`: as it was written)."""
    if value is None and field.optional:
        return
    low = field.bounds.at_least
    if field.kind is bool:
        ok = isinstance(value, bool)
    elif field.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and (low is None or value >= low)
    elif field.kind is float:
        ok = (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
              and (low is None or value >= low))
    elif typing.get_origin(field.kind) is Literal:
        ok = value in typing.get_args(field.kind)
    elif typing.get_origin(field.kind) is tuple:
        ok = isinstance(value, tuple) and all(isinstance(item, str) for item in value)
    else:
        ok = isinstance(value, str) and (low is None or len(value) >= low)
    if not ok:
        raise refused(field, value if shown is None else shown)
