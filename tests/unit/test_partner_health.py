"""The health answer from summed rows: every label present, the latency summary from the buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consent.app.partner_health import counter_rows, minute_of, partner_health
from consent.app.telemetry import LATENCY_LABELS, PartnerStats

NOW = datetime(2026, 3, 3, 12, 30, 45, 123456, tzinfo=UTC)


def test_figures_by_label_and_percentiles_from_the_buckets():
    sums = {("decision", "permit"): 7, ("denial", "no_consent"): 2, ("violation", "rate_limited"): 1,
            ("request", "2xx"): 100, ("latency", "0.001"): 90, ("latency", "0.01"): 9, ("latency", "+Inf"): 1,
            ("latency_us", "sum"): 100 * 2000}
    answer = partner_health("acme", "P1D", NOW, 5.0, sums)
    assert answer.decisions == {"permit": 7, "deny": 0, "partial": 0}
    assert answer.denials["no_consent"] == 2 and answer.denials["objected"] == 0
    assert answer.violations["rate_limited"] == 1 and answer.requests["5xx"] == 0
    assert (answer.latency.count, answer.latency.mean_ms) == (100, 2.0)
    assert (answer.latency.p50_ms, answer.latency.p95_ms, answer.latency.p99_ms) == (1.0, 10.0, 10.0)
    assert answer.since == datetime(2026, 3, 2, 12, 30, tzinfo=UTC)
    assert answer.as_of == NOW - timedelta(seconds=5)


def test_no_requests_no_latency_and_beyond_the_last_bucket_is_unknown():
    empty = partner_health("acme", "PT1H", NOW, 5.0, {})
    assert (empty.latency.count, empty.latency.mean_ms, empty.latency.p50_ms) == (0, None, None)
    slow = partner_health("acme", "PT1H", NOW, 5.0, {("latency", "+Inf"): 3, ("latency_us", "sum"): 3 * 20_000_000})
    assert slow.latency.p50_ms is None and slow.latency.mean_ms == 20_000.0


def test_a_partners_counters_become_rows_and_minutes_start_at_zero_seconds():
    stats = PartnerStats("acme")
    stats.decisions["deny"] = 2
    stats.latency[0] = 3
    stats.latency_sum = 0.0012345
    rows = counter_rows(stats)
    assert rows[("decision", "deny")] == 2 and rows[("latency", LATENCY_LABELS[0])] == 3
    assert rows[("latency_us", "sum")] == 1234
    assert minute_of(NOW) == datetime(2026, 3, 3, 12, 30, tzinfo=UTC)
