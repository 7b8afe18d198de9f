"""ISO 8601 durations (`P90D`, `P1Y6M`, `PT12H`) as used for purpose retention."""

from __future__ import annotations

import calendar
import functools
import re
from datetime import datetime, timedelta

from msgspec import Struct

from consent.domain.errors import DomainError

_DURATION = re.compile(
    r"P(?!$)(?:(?P<years>\d{1,4})Y)?(?:(?P<months>\d{1,5})M)?(?:(?P<weeks>\d{1,6})W)?(?:(?P<days>\d{1,6})D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d{1,7})H)?(?:(?P<minutes>\d{1,9})M)?(?:(?P<seconds>\d{1,10})S)?)?",
    re.ASCII,  # ISO 8601 digits only: `\d` alone would accept e.g. Arabic-Indic or full-width digits
)


class Duration(Struct, frozen=True):
    months: int
    delta: timedelta

    def after(self, start: datetime) -> datetime:
        """`start` plus this duration; calendar months, so P1M from 31 Jan is 28/29 Feb."""
        if self.months:
            month_index = start.month - 1 + self.months
            year, month = start.year + month_index // 12, month_index % 12 + 1
            if year > 9999:
                return datetime.max.replace(tzinfo=start.tzinfo)
            day = min(start.day, calendar.monthrange(year, month)[1])
            start = start.replace(year=year, month=month, day=day)
        try:
            return start + self.delta
        except OverflowError:
            return datetime.max.replace(tzinfo=start.tzinfo)


def duration_fields(text: str) -> dict[str, int] | None:
    """Each field of a duration (years, months, weeks, days, hours, minutes, seconds), None if it does not parse."""
    match = _DURATION.fullmatch(text)
    return None if match is None else {name: int(n or 0) for name, n in match.groupdict().items()}


@functools.lru_cache(maxsize=1024)  # retention strings are few and parsed on every decision
def parse_duration(text: str) -> Duration:
    match = _DURATION.fullmatch(text)
    if not match:
        raise DomainError("validation_failed", f"{text!r} is not an ISO 8601 duration such as P90D or P1Y")
    part = {k: int(v or 0) for k, v in match.groupdict().items()}
    try:
        delta = timedelta(
            weeks=part["weeks"], days=part["days"], hours=part["hours"],
            minutes=part["minutes"], seconds=part["seconds"],
        )
    except OverflowError:
        raise DomainError("validation_failed", f"duration {text!r} is too long") from None
    return Duration(months=part["years"] * 12 + part["months"], delta=delta)
