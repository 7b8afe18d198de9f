"""A partner's health over a window, from the per-minute counts every replica adds to the database.

Each process counts its traffic (consent/app/telemetry.py) and adds what it counted since its previous
flush to the current minute's rows every CONSENT_METRICS_FLUSH_INTERVAL seconds, and once more when it
stops (consent/adapters/partner_health_store.py). The figures therefore include every replica, survive
restarts, and are at most one flush interval behind.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from msgspec import Struct

from consent.app.telemetry import (
    LATENCY_BOUNDS,
    LATENCY_LABELS,
    OUTCOMES,
    STATUS_CLASSES,
    VIOLATIONS,
    PartnerStats,
)
from consent.domain.decision import REASONS

WINDOWS = {"PT1H": timedelta(hours=1), "P1D": timedelta(days=1), "P7D": timedelta(days=7)}
DEFAULT_WINDOW = "PT1H"
# Rows older than the longest window, and a margin, are deleted.
KEEP = max(WINDOWS.values()) + timedelta(hours=1)
PERCENTILES = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))


class LatencySummary(Struct):
    count: int
    mean_ms: float | None
    # Upper bounds of the latency bucket the percentile falls in (buckets of LATENCY_BOUNDS, 0.5 ms to 10 s);
    # null beyond the last bucket, or without requests.
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class PartnerHealth(Struct):
    partner_id: str
    window: str
    since: datetime  # by the minute: the window's oldest minute counts whole
    until: datetime
    # Each replica adds its counts every `flush_interval` seconds: what happened after `as_of` may be missing.
    as_of: datetime
    flush_interval: float
    decisions: dict[str, int]  # by outcome
    denials: dict[str, int]  # denied scopes, by reason
    violations: dict[str, int]  # by kind
    requests: dict[str, int]  # requests with the partner's token or credential, by status class
    latency: LatencySummary


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def counter_rows(stats: PartnerStats) -> dict[tuple[str, str], int]:
    """A partner's counters since the process started, as (metric, label) -> count: the table's rows."""
    rows: dict[tuple[str, str], int] = {}
    for metric, counts in (("decision", stats.decisions), ("denial", stats.denials),
                           ("violation", stats.violations)):
        for label, count in counts.items():
            rows[(metric, label)] = count
    for label, count in zip(STATUS_CLASSES, stats.requests, strict=True):
        rows[("request", label)] = count
    for label, count in zip(LATENCY_LABELS, stats.latency, strict=True):
        rows[("latency", label)] = count
    rows[("latency_us", "sum")] = round(stats.latency_sum * 1_000_000)
    return rows


def partner_health(partner_id: str, window: str, until: datetime, flush_interval: float,
                   sums: dict[tuple[str, str], int]) -> PartnerHealth:
    """The figures of `sums` ((metric, label) -> count over the window) for the answer."""
    def by_label(metric: str, labels: tuple[str, ...]) -> dict[str, int]:
        return {label: sums.get((metric, label), 0) for label in labels}

    latency = [sums.get(("latency", label), 0) for label in LATENCY_LABELS]
    count = sum(latency)
    percentiles = {name: _percentile_ms(latency, count, share) for name, share in PERCENTILES}
    mean_ms = round(sums.get(("latency_us", "sum"), 0) / count / 1000, 3) if count else None
    return PartnerHealth(
        partner_id=partner_id, window=window, since=minute_of(until - WINDOWS[window]), until=until,
        as_of=until - timedelta(seconds=flush_interval), flush_interval=flush_interval,
        decisions=by_label("decision", OUTCOMES), denials=by_label("denial", REASONS),
        violations=by_label("violation", VIOLATIONS), requests=by_label("request", STATUS_CLASSES),
        latency=LatencySummary(count=count, mean_ms=mean_ms, **percentiles))


def _percentile_ms(buckets: list[int], count: int, share: float) -> float | None:
    if not count:
        return None
    seen = 0
    for bound, n in zip(LATENCY_BOUNDS, buckets, strict=False):
        seen += n
        if seen >= share * count:
            return round(bound * 1000, 3)
    return None
