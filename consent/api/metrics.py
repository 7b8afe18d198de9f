"""GET /metrics: Prometheus text. Aggregates only: no subject, token or partner secret ever becomes a label.

Read at scrape time from the process's own counters, so the hot paths pay a dict
increment rather than a metrics middleware.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from litestar import Response, get
from litestar.di import NamedDependency
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


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
        if "relay_leader" in facts:
            yield GaugeMetricFamily("consent_relay_leader", "1 if this process relays the log to NATS",
                                    value=facts["relay_leader"])
            yield GaugeMetricFamily("consent_relay_published_position", "Last log position published to NATS",
                                    value=facts["relay_published_position"])


def metrics_registry(snapshot: Callable[[], dict]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)  # collected at scrape time, after start-up
    registry.register(ServiceCollector(snapshot))
    return registry


@get("/metrics", tags=["operations"], security=[], media_type="text/plain; version=0.0.4",
     summary="Prometheus metrics (no credentials; aggregates only, no personal data)")
async def metrics(metrics_registry: NamedDependency[CollectorRegistry]) -> Response[bytes]:
    return Response(generate_latest(metrics_registry))
