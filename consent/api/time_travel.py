"""The `at` query parameter of time travel: an RFC 3339 moment, with its zone, not in the future."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar.params import Parameter

from consent.api.errors import problem

At = Annotated[datetime | None, Parameter(description=(
    "Answer as of this moment (RFC 3339, with a time zone): the log folded up to it"))]


def past_moment(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise problem(400, "validation_failed", "at must carry a time zone (RFC 3339), e.g. 2026-03-03T12:00:00Z")
    return at.astimezone(UTC)
