"""Identifier rules and the dotted scope hierarchy."""

from __future__ import annotations

import re

from consent.domain.errors import DomainError

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
SCOPE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}(\.[a-z0-9][a-z0-9_-]{0,63}){0,7}")
MAX_SUBJECT_LEN = 128


def check_slug(value: str, what: str) -> str:
    if not SLUG.fullmatch(value):
        raise DomainError("validation_failed", f"{what} id must match ^[a-z0-9][a-z0-9_-]{{0,63}}$")
    return value


def check_scope(value: str) -> str:
    if len(value) > 255 or not SCOPE.fullmatch(value):
        raise DomainError("validation_failed", "scope id must be slugs joined by dots, e.g. orders.history")
    return value


def check_subject(value: str) -> str:
    if not 1 <= len(value) <= MAX_SUBJECT_LEN or not value.isprintable():
        raise DomainError("validation_failed", "subject id must be 1 to 128 printable characters")
    return value


def covers(granted: str, requested: str) -> bool:
    """`orders` covers `orders` and `orders.history`, never `ordersx`."""
    return requested == granted or requested.startswith(granted + ".")


def covered_by_any(requested: str, granted: tuple[str, ...] | None) -> bool:
    """`None` stands for every scope."""
    return granted is None or any(covers(g, requested) for g in granted)
