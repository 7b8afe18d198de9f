"""This process's traffic counters, per partner and per route: what GET /metrics shows, and what the
health flusher (consent/adapters/partner_health_store.py) adds to the database for every replica to sum.

The hot paths pay a dict lookup and an integer increment: one event loop runs them all, so no lock. Labels
stay bounded: a partner is labelled by its id only once the catalog knows it (ids an admin names in a
decision that the catalog does not know, and failures no partner can be named for, count as UNATTRIBUTED);
routes by their template, never the raw path; methods from a fixed list. No subject id, path parameter or
token ever becomes a label.

What happened during one request that only code deep inside it knows (which partner's token it carried,
which rule it broke) is noted on the request's RequestFacts (`note_partner`, `note_violation`), which
the outermost ASGI layer (consent/api/observability.py) counts and logs when the request ends.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from contextvars import ContextVar

from consent.domain.decision import REASONS, Decision

OUTCOMES = ("permit", "deny", "partial")
# Policy violations: a decision asking for a scope outside the partner's contract, the guards' refusals,
# and the token endpoint's RFC 6749 §5.2 errors (plus `invalid_token`: a partner token refused).
VIOLATIONS = ("scope_not_approved", "sandbox_only", "insufficient_scope", "rate_limited", "invalid_token",
              "invalid_client", "invalid_request", "invalid_scope", "unauthorized_client", "unsupported_grant_type")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Upper bounds of the latency buckets, in seconds (Prometheus `le`); one more bucket holds the rest.
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
LATENCY_LABELS = (*(repr(bound) for bound in LATENCY_BOUNDS), "+Inf")  # as Prometheus names the buckets
# Not partner ids: those match ^[a-z0-9], these start with an underscore.
FIRST_PARTY = "_first_party"  # decisions an admin asks for the platform itself (no partner named)
UNATTRIBUTED = "_unknown"
UNMATCHED = "unmatched"  # the route label of a path that matches no route
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
OTHER_METHOD = "OTHER"


class PartnerStats:
    __slots__ = ("label", "decisions", "denials", "violations", "requests", "latency", "latency_sum")

    def __init__(self, label: str) -> None:
        self.label = label
        self.decisions = dict.fromkeys(OUTCOMES, 0)
        self.denials = dict.fromkeys(REASONS, 0)  # one per denied scope
        self.violations = dict.fromkeys(VIOLATIONS, 0)
        self.requests = [0] * len(STATUS_CLASSES)  # index 0 for 1xx ... 4 for 5xx
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)  # requests by latency bucket
        self.latency_sum = 0.0  # seconds


class RouteStats:
    """One route template and method: requests by status code, latency by status class."""

    __slots__ = ("statuses", "latency", "latency_sum")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.latency = [[0] * (len(LATENCY_BOUNDS) + 1) for _ in STATUS_CLASSES]
        self.latency_sum = [0.0] * len(STATUS_CLASSES)


class RequestFacts:
    """What the layers inside one request tell the outermost one."""

    __slots__ = ("request_id", "partner", "violation")

    def __init__(self, request_id: bytes) -> None:
        self.request_id = request_id
        self.partner: str | None = None  # the partner whose token or credential the request carried
        self.violation: str | None = None  # one of VIOLATIONS


_current: ContextVar[RequestFacts | None] = ContextVar("consent_request", default=None)


def current_request() -> RequestFacts | None:
    return _current.get()


# Make a request's facts current: `token = begin_request(facts)`, and when it ends `end_request(token)`.
begin_request = _current.set
end_request = _current.reset


def note_partner(partner_id: str) -> None:
    facts = _current.get()
    if facts is not None:
        facts.partner = partner_id


def note_violation(kind: str) -> None:
    facts = _current.get()
    if facts is not None:
        facts.violation = kind


class Telemetry:
    def __init__(self, is_partner: Callable[[str], bool]) -> None:
        self._is_partner = is_partner
        self.unattributed = PartnerStats(UNATTRIBUTED)
        # By partner id (None: first party); ids the catalog does not know are never keys.
        self.partners: dict[str | None, PartnerStats] = {None: PartnerStats(FIRST_PARTY)}
        self.routes: dict[str, dict[str, RouteStats]] = {}  # template -> method -> stats

    def partner(self, partner_id: str | None) -> PartnerStats:
        stats = self.partners.get(partner_id)
        if stats is None:
            if partner_id is None or not self._is_partner(partner_id):
                return self.unattributed
            stats = self.partners[partner_id] = PartnerStats(partner_id)
        return stats

    def decided(self, partner_id: str | None, decision: Decision) -> None:
        stats = self.partners.get(partner_id) or self.partner(partner_id)
        stats.decisions[decision.decision] += 1
        for denied in decision.denied:
            stats.denials[denied.reason] += 1
            if denied.reason == "scope_not_approved":
                stats.violations["scope_not_approved"] += 1

    def request_done(self, route: str, method: str, status: int, seconds: float, facts: RequestFacts) -> None:
        by_method = self.routes.get(route)
        if by_method is None:
            by_method = self.routes[route] = {}
        stats = by_method.get(method)
        if stats is None:
            stats = by_method[method] = RouteStats()
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        index = status // 100 - 1  # into STATUS_CLASSES; anything else counts as 5xx
        if not 0 <= index <= 4:
            index = 4
        bucket = bisect_left(LATENCY_BOUNDS, seconds)
        stats.latency[index][bucket] += 1
        stats.latency_sum[index] += seconds
        if facts.partner is not None:
            partner = self.partners.get(facts.partner) or self.partner(facts.partner)
            partner.requests[index] += 1
            partner.latency[bucket] += 1
            partner.latency_sum += seconds
        else:
            partner = self.unattributed
        if facts.violation in partner.violations:  # None, or a kind VIOLATIONS does not name: nothing
            partner.violations[facts.violation] += 1

    def decisions_by_outcome(self) -> dict[str, int]:
        totals = dict.fromkeys(OUTCOMES, 0)
        for stats in (*self.partners.values(), self.unattributed):
            for outcome, count in stats.decisions.items():
                totals[outcome] += count
        return totals
