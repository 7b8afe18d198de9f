"""GET /metrics: Prometheus text. Aggregates only: no subject, token or partner secret ever becomes a label.

Read at scrape time from the process's own counters, so the hot paths pay a dict increment rather than a
prometheus_client lock. Per partner (consent/app/telemetry.py, labels bounded by the catalog's partners):
decisions by outcome, denials by reason, policy violations by kind, requests by status class and their
latency. Per route template and method: requests by status code, latency by status class.
(Webhook deliveries do not exist yet; when they do, their outcomes by partner belong here too.)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

from litestar import Response, get
from litestar.di import NamedDependency
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from consent.app.telemetry import LATENCY_LABELS, STATUS_CLASSES, PartnerStats, Telemetry


class ServiceCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        facts = self._snapshot()
        yield GaugeMetricFamily("consent_applied_position", "Log position this process has applied",
                                value=facts["position"])
        yield GaugeMetricFamily("consent_subject_cache_entries", "Subjects held in the decision cache",
                                value=facts["cache_entries"])
        decisions = CounterMetricFamily("consent_decisions", "Decisions answered, by verdict", labels=["decision"])
        for verdict, count in sorted(facts["decisions"].items()):
            decisions.add_metric([verdict], count)
        yield decisions
        appended = CounterMetricFamily("consent_events", "Events this process appended, by type", labels=["type"])
        for kind, count in sorted(facts["events"].items()):
            appended.add_metric([kind], count)
        yield appended
        if "replicas_live" in facts:
            yield GaugeMetricFamily("consent_replicas_live", "replicas of this deployment heard within 3 s, this one "
                                    "included; each enforces its share of the per-partner rate limit",
                                    value=facts["replicas_live"])
        if "relay_leader" in facts:
            yield GaugeMetricFamily("consent_relay_leader", "1 if this process relays the log to NATS",
                                    value=facts["relay_leader"])
            yield GaugeMetricFamily("consent_relay_published_position", "Last log position published to NATS",
                                    value=facts["relay_published_position"])
        if "webhook_attempts" in facts:
            attempts = CounterMetricFamily(
                "consent_webhook_attempts", "Webhook delivery attempts made by this replica, by the delivery's status "
                "after them (delivered; failed: to be retried; dead: given up)", labels=["status"])
            for status in ("delivered", "failed", "dead"):
                attempts.add_metric([status], facts["webhook_attempts"].get(status, 0))
            yield attempts
        yield from traffic_metrics(facts["telemetry"])


def _histogram(counts: list[int]) -> list[tuple[str, float]]:
    """Prometheus buckets are cumulative; the counters keep one count a bucket."""
    return list(zip(LATENCY_LABELS, itertools.accumulate(counts), strict=True))


def traffic_metrics(telemetry: Telemetry) -> Iterator[Metric]:
    partners: list[PartnerStats] = sorted((*telemetry.partners.values(), telemetry.unattributed),
                                          key=lambda stats: stats.label)
    families = {name: CounterMetricFamily(f"consent_partner_{name}", help_text, labels=["partner", label])
                for name, help_text, label in (
                    ("decisions", "Decisions answered, by partner and outcome", "outcome"),
                    ("denials", "Denied scopes, by partner and reason", "reason"),
                    ("violations", "Policy violations, by partner and kind", "kind"))}
    for stats in partners:
        for name, counts in (("decisions", stats.decisions), ("denials", stats.denials),
                             ("violations", stats.violations)):
            for key, count in counts.items():
                families[name].add_metric([stats.label, key], count)
    yield from families.values()
    requests = CounterMetricFamily("consent_partner_requests", "Requests with a partner's token or credential, "
                                   "by status class", labels=["partner", "status_class"])
    latency = HistogramMetricFamily("consent_partner_request_duration_seconds",
                                    "Latency of requests with a partner's token or credential", labels=["partner"])
    for stats in partners:
        for status_class, count in zip(STATUS_CLASSES, stats.requests, strict=True):
            requests.add_metric([stats.label, status_class], count)
        latency.add_metric([stats.label], _histogram(stats.latency), stats.latency_sum)
    yield requests
    yield latency
    http = CounterMetricFamily("consent_http_requests", "HTTP requests by route template, method and status",
                               labels=["route", "method", "code"])
    http_latency = HistogramMetricFamily("consent_http_request_duration_seconds",
                                         "HTTP request latency by route template, method and status class",
                                         labels=["route", "method", "status_class"])
    for route, by_method in sorted(telemetry.routes.items()):
        for method, stats in sorted(by_method.items()):
            for status, count in sorted(stats.statuses.items()):
                http.add_metric([route, method, str(status)], count)
            for index, status_class in enumerate(STATUS_CLASSES):
                if any(stats.latency[index]):
                    http_latency.add_metric([route, method, status_class], _histogram(stats.latency[index]),
                                            stats.latency_sum[index])
    yield http
    yield http_latency


def metrics_registry(snapshot: Callable[[], dict]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)  # collected at scrape time, after start-up
    registry.register(ServiceCollector(snapshot))
    return registry


@get("/metrics", tags=["operations"], security=[], media_type="text/plain; version=0.0.4",
     summary="Prometheus metrics (no credentials; aggregates only, no personal data)")
async def metrics(metrics_registry: NamedDependency[CollectorRegistry]) -> Response[bytes]:
    return Response(generate_latest(metrics_registry))
