"""What the webhook routes answer (docs/webhooks.md): endpoints without their secret, and the delivery ledger."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from msgspec import Struct

DeliveryStatus = Literal["pending", "delivered", "failed", "dead"]


class WebhookView(Struct, kw_only=True):
    id: str
    partner_id: str
    url: str
    events: list[str] | None
    description: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime
    # After a rotation: until when the previous secret still signs beside the new one.
    previous_secret_valid_until: datetime | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> WebhookView:
        return cls(id=row["id"], partner_id=row["partner_id"], url=row["url"], events=row["events"],
                   description=row["description"], enabled=row["enabled"], created_at=row["created_at"],
                   updated_at=row["updated_at"], previous_secret_valid_until=row["previous_valid_until"])


class CreatedWebhook(WebhookView, kw_only=True):
    """The secret, `whsec_` + base64, is shown here once: it is stored only encrypted."""

    secret: str


class RotatedSecret(Struct):
    id: str
    secret: str
    previous_secret_valid_until: datetime


class Attempt(Struct, omit_defaults=True):
    at: datetime
    duration_ms: int
    status: int | None = None  # the receiver's HTTP status
    error: str | None = None  # timeout, connection_error, url_forbidden, secret_unavailable


class Delivery(Struct):
    id: int
    event_id: uuid.UUID
    type: str
    position: int
    status: DeliveryStatus
    attempts: list[Attempt]
    next_attempt_at: datetime | None
    created_at: datetime


class DeliveryPage(Struct):
    deliveries: list[Delivery]
    next_after: int | None


class ReplayResult(Struct):
    enqueued: int
    up_to_position: int  # the last position looked at
    complete: bool  # false: more events remain; replay again after up_to_position


def delivery(row: Any) -> Delivery:
    attempts = [Attempt(at=datetime.fromisoformat(a["at"]), duration_ms=a["duration_ms"], status=a.get("status"),
                        error=a.get("error")) for a in row.attempts]
    return Delivery(id=row.id, event_id=row.event_id, type=row.type, position=row.position, status=row.status,
                    attempts=attempts, next_attempt_at=row.next_attempt_at if row.status != "delivered" else None,
                    created_at=row.created_at)
