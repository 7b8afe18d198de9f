"""What the bench asks of the service: its catalog, the subjects' consent histories, the decision
questions and the write the `writes` run toggles."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

PARTNER = "acme"  # the partner whose token drives the decision runs
WRITE_KEY = {"purpose": "ad_sharing", "partner": "initech", "scopes": ["profile.email"]}  # never seeded

# --- the catalog -------------------------------------------------------------------------------

SCOPES = {
    "profile": "low", "profile.email": "medium", "profile.phone": "medium",
    "orders": "low", "orders.history": "medium", "location": "high", "location.precise": "high",
}
PURPOSES = {
    "marketing": {"title": "Marketing", "description": "Offers by email and in the app",
                  "legal_basis": "consent", "retention": "P2Y"},
    "analytics": {"title": "Product analytics", "description": "How the product is used",
                  "legal_basis": "legitimate_interest", "retention": "P90D"},
    "fulfilment": {"title": "Order fulfilment", "description": "Deliver what was ordered",
                   "legal_basis": "contract", "retention": "P7Y"},
    "ad_sharing": {"title": "Advertising partners", "description": "Share data with ad partners",
                   "legal_basis": "consent", "retention": "P180D", "sale_or_sharing": True},
}
PARTNERS = {
    "acme": {"name": "Acme Ads", "status": "active", "data_uses": {
        "marketing": ["profile.email", "orders.history"], "analytics": ["orders", "location"],
        "ad_sharing": ["profile"], "fulfilment": ["profile", "orders"]}},
    "globex": {"name": "Globex Logistics", "status": "active", "data_uses": {
        "marketing": ["profile"], "analytics": ["orders.history"], "fulfilment": ["orders"]}},
    "initech": {"name": "Initech Insights", "status": "sandbox", "data_uses": {
        "ad_sharing": ["profile.email", "location"], "analytics": ["location.precise"]}},
}
# What the decision runs ask as acme, with weights: permits, partials, denials of several reasons.
QUESTIONS = [
    (30, "marketing", ["profile.email"]),
    (20, "marketing", ["profile.email", "orders.history"]),
    (15, "analytics", ["orders"]),
    (5, "analytics", ["location", "orders.history"]),
    (10, "ad_sharing", ["profile"]),
    (10, "fulfilment", ["orders"]),
    (5, "marketing", ["profile.phone"]),                       # scope_not_approved
    (5, "marketing", ["profile.email", "location.precise"]),   # partial at best
]
EVIDENCE = [
    {"collection_point": "signup-form", "text_shown": "Send me offers by email (v3)"},
    {"collection_point": "app-settings", "text_shown": "Privacy choices"},
    {"collection_point": "cookie-banner", "text_shown": "We and our partners use your data to..."},
]


def subject_width(subjects: int) -> int:
    return max(6, len(str(subjects - 1)))


def subject_id(prefix: str, width: int, i: int) -> str:
    return f"{prefix}{i:0{width}d}"


def subject_plan(rng: random.Random, now: dt.datetime) -> list[list[dict[str, Any]]]:
    """One subject's consent requests (each a list of changes): mixed grants, some partner grants,
    some expiring, objections to the legitimate-interest purpose, and later withdrawals."""
    first: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []
    if rng.random() < 0.55:
        change: dict[str, Any] = {"purpose": "marketing", "partner": None, "scopes": None, "action": "grant"}
        if rng.random() < 0.25:
            change["expires_at"] = (now + dt.timedelta(days=rng.randint(30, 365))).isoformat()
        first.append(change)
        if rng.random() < 0.2:
            later.append({"purpose": "marketing", "partner": None, "action": "withdraw"})
    if rng.random() < 0.35:
        scopes = rng.choice([["profile.email"], ["orders.history"], ["profile.email", "orders.history"]])
        change = {"purpose": "marketing", "partner": "acme", "scopes": scopes, "action": "grant"}
        if rng.random() < 0.15:
            change["expires_at"] = (now + dt.timedelta(days=rng.randint(1, 90))).isoformat()
        first.append(change)
        if len(scopes) == 2 and rng.random() < 0.3:
            later.append({"purpose": "marketing", "partner": "acme", "scopes": ["orders.history"],
                          "action": "withdraw"})
    if rng.random() < 0.25:
        first.append({"purpose": "ad_sharing", "partner": "acme", "scopes": ["profile"], "action": "grant"})
        if rng.random() < 0.15:
            later.append({"purpose": "ad_sharing", "partner": "acme", "action": "withdraw"})
    if rng.random() < 0.15:
        first.append({"purpose": "marketing", "partner": "globex", "scopes": ["profile"], "action": "grant"})
    if rng.random() < 0.08:
        first.append({"purpose": "analytics", "partner": None, "action": "object"})
    elif rng.random() < 0.05:
        first.append({"purpose": "analytics", "partner": "acme", "action": "object"})
    if not first:
        first.append({"purpose": "marketing", "partner": "globex", "scopes": ["profile"], "action": "grant"})
    return [first] + ([later] if later else [])
