"""Identifier rules, dotted scope coverage and ISO 8601 durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from consent.domain.durations import Duration, parse_duration
from consent.domain.errors import DomainError
from consent.domain.ids import check_scope, check_slug, check_subject, covered_by_any, covers


def refused(fn, *args) -> DomainError:
    with pytest.raises(DomainError) as info:
        fn(*args)
    assert info.value.code == "validation_failed"
    return info.value


# Dotted scope coverage


@pytest.mark.parametrize(
    ("granted", "requested", "expected"),
    [
        ("orders", "orders", True),
        ("orders", "orders.history", True),
        ("orders", "orders.history.lines", True),
        ("orders.history", "orders.history", True),
        ("orders", "ordersx", False),
        ("orders", "order", False),
        ("orders", "ordersx.history", False),
        ("orders.history", "orders", False),
        ("orders.history", "orders.historyx", False),
        ("orders.history", "orders.returns", False),
        ("profile", "orders", False),
        ("orders", "x.orders", False),
    ],
)
def test_covers(granted, requested, expected):
    assert covers(granted, requested) is expected


@pytest.mark.parametrize(
    ("requested", "granted", "expected"),
    [
        ("anything.at.all", None, True),
        ("orders.history", ("profile", "orders"), True),
        ("orders.history", ("profile.email",), False),
        ("orders", ("orders.history",), False),
        ("orders", (), False),
    ],
)
def test_covered_by_any(requested, granted, expected):
    assert covered_by_any(requested, granted) is expected


# Identifier validation


@pytest.mark.parametrize(
    "value",
    ["a", "0", "marketing", "ads-partner_2", "9lives", "a" * 64, "a-", "a_"],
)
def test_slug_accepted(value):
    assert check_slug(value, "purpose") == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a.b",  # dots belong to scopes only
        "a b",
        " a",
        "a ",
        "Marketing",
        "mArketing",
        "a" * 65,  # overlong
        "-a",
        "_a",
        "a/b",
        "a\n",  # a trailing newline must not slip through `$`
        "café",
        "ａ",  # full-width letter
    ],
)
def test_slug_refused(value):
    error = refused(check_slug, value, "partner")
    assert "partner" in error.detail


@pytest.mark.parametrize(
    "value",
    [
        "orders",
        "orders.history",
        "profile.email",
        "a.b.c.d.e.f.g.h",  # eight segments
        "x" * 64 + ".y",
        "o-1.h_2",
    ],
)
def test_scope_accepted(value):
    assert check_scope(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        ".orders",
        "orders.",
        "orders..history",
        "orders history",
        "Orders",
        "orders.History",
        "a.b.c.d.e.f.g.h.i",  # nine segments
        "x" * 65,
        "orders." + "x" * 65,
        ".".join(["x" * 64] * 4),  # 259 characters, segments fine, too long overall
        "orders/history",
        "orders.-x",
        "orders\n",
    ],
)
def test_scope_refused(value):
    refused(check_scope, value)


@pytest.mark.parametrize(
    "value",
    ["u", "user-123", "User.With.Dots", "with space", "ÄÖü", "a" * 128, "auth0|5f7c8ec7", "x@example.com"],
)
def test_subject_accepted(value):
    assert check_subject(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "a" * 129, "line\nbreak", "tab\there", "nul\x00", "\x7f", "nb\u00a0sp", "zero\u200bwidth"],
)
def test_subject_refused(value):
    refused(check_subject, value)


# Durations

START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "months", "delta"),
    [
        ("P90D", 0, timedelta(days=90)),
        ("P1Y", 12, timedelta()),
        ("P1M", 1, timedelta()),
        ("P1Y6M", 18, timedelta()),
        ("PT12H", 0, timedelta(hours=12)),
        ("P2W", 0, timedelta(days=14)),
        ("PT30M", 0, timedelta(minutes=30)),
        ("PT45S", 0, timedelta(seconds=45)),
        ("P1DT2H3M4S", 0, timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("P2Y3M1W4DT5H", 27, timedelta(days=11, hours=5)),
        ("P0D", 0, timedelta()),
    ],
)
def test_parse_duration(text, months, delta):
    assert parse_duration(text) == Duration(months=months, delta=delta)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "P",
        "PT",
        "90D",
        "P1.5D",
        "P1,5D",
        "P1DT",
        "PT1",
        "P-1D",
        "p90d",
        "P90d",
        " P90D",
        "P90D ",
        "P90D\n",
        "P1D1Y",  # designators out of order
        "P1H",  # hours belong after T
        "PT1D",
        "P10000Y",
        "P\u0669\u0660D",  # Arabic-Indic digits are not ISO 8601 digits
        "P\uff19\uff10D",  # nor are full-width ones
    ],
)
def test_parse_duration_refused(text):
    refused(parse_duration, text)


@pytest.mark.parametrize(
    ("text", "start", "expected"),
    [
        ("P90D", START, datetime(2024, 3, 31, tzinfo=UTC)),  # 2024 is a leap year
        ("P90D", datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 4, 1, tzinfo=UTC)),
        ("P1Y", START, datetime(2025, 1, 1, tzinfo=UTC)),
        ("P1Y", datetime(2024, 2, 29, 8, tzinfo=UTC), datetime(2025, 2, 28, 8, tzinfo=UTC)),
        ("P1M", datetime(2024, 1, 31, 10, 30, tzinfo=UTC), datetime(2024, 2, 29, 10, 30, tzinfo=UTC)),
        ("P1M", datetime(2023, 1, 31, 10, 30, tzinfo=UTC), datetime(2023, 2, 28, 10, 30, tzinfo=UTC)),
        ("P1M", datetime(2024, 3, 31, tzinfo=UTC), datetime(2024, 4, 30, tzinfo=UTC)),
        ("P1M", datetime(2024, 12, 15, tzinfo=UTC), datetime(2025, 1, 15, tzinfo=UTC)),
        ("P13M", datetime(2023, 1, 31, tzinfo=UTC), datetime(2024, 2, 29, tzinfo=UTC)),
        ("P1M1D", datetime(2023, 1, 31, tzinfo=UTC), datetime(2023, 3, 1, tzinfo=UTC)),
        ("PT12H", datetime(2024, 1, 1, 18, tzinfo=UTC), datetime(2024, 1, 2, 6, tzinfo=UTC)),
        ("P2W", START, datetime(2024, 1, 15, tzinfo=UTC)),
    ],
)
def test_duration_after(text, start, expected):
    assert parse_duration(text).after(start) == expected


def test_duration_after_keeps_the_time_zone():
    paris = timezone(timedelta(hours=1))
    end = parse_duration("P1M").after(datetime(2024, 1, 31, 23, tzinfo=paris))
    assert end == datetime(2024, 2, 29, 23, tzinfo=paris)
    assert end.utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize("text", ["P9999Y", "P999999D"])
def test_duration_after_saturates_instead_of_overflowing(text):
    end = parse_duration(text).after(datetime(8000, 1, 1, tzinfo=UTC))
    assert end.year == 9999
    assert end.tzinfo is UTC
