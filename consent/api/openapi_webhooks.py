"""The OpenAPI 3.1 `webhooks` section: what the service POSTs to a partner's registered URL (docs/webhooks.md)."""

from __future__ import annotations

from typing import Any

from consent.domain.webhook_audience import DELIVERED_TYPES

_HEADERS = {
    "webhook-id": "The event id: the same on every attempt of one event (deduplicate on it)",
    "webhook-timestamp": "Unix seconds when this attempt was signed; refuse one far from your clock",
    "webhook-signature": "Space-separated `v1,<base64 HMAC-SHA256>` over `{webhook-id}.{webhook-timestamp}.{body}`, "
                         "keyed by the base64-decoded part of the `whsec_` secret; two while a rotated secret "
                         "still signs (any one valid is enough)",
}
_EXAMPLE = {
    "specversion": "1.0", "id": "0b0f8a55-5a43-4c1c-9c43-0c8f5b0b7e21", "source": "/consent",
    "type": "io.consent.v1.subject.withdrawn", "time": "2026-03-03T12:00:00Z", "subject": "u-12345",
    "datacontenttype": "application/json",
    "data": {"purpose": "marketing", "partner": "acme", "scopes": ["orders.history"], "purpose_version": 1,
             "source": "web", "reason": None, "position": 1234, "stream_version": 3},
}


def webhooks_section() -> dict[str, Any]:
    cloud_event = {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"],
        "properties": {
            "specversion": {"const": "1.0"}, "id": {"type": "string", "format": "uuid"},
            "source": {"type": "string"},
            "type": {"enum": [f"io.consent.v1.{t}" for t in DELIVERED_TYPES]},
            "time": {"type": "string", "format": "date-time"},
            "subject": {"type": "string", "description": "The subject id, or for a pairwise partner its pseudonym; "
                        "the purpose or partner id of a catalog notice"},
            "pseudonymous": {"type": "boolean", "description": "true when `subject` is a pairwise pseudonym"},
            "datacontenttype": {"const": "application/json"},
            "data": {"type": "object", "description": "The event's fields, as on NATS (openapi/asyncapi.yaml), "
                     "with `position` and `stream_version`"},
        },
    }
    return {"consentEvent": {"post": {
        "operationId": "receiveConsentEvent",
        "summary": "An event that concerns the partner, as a CloudEvent, signed per Standard Webhooks",
        "description": "Sent at least once, per subject in stream-version order. Answer 2xx within 10 s. 5xx, 429 "
                       "(Retry-After honoured), timeouts and connection errors are retried on "
                       "CONSENT_WEBHOOK_RETRY_SCHEDULE, then the delivery is `dead`; 410 disables the webhook; any "
                       "other answer, a redirect included, makes it `dead` at once.",
        "security": [],
        "parameters": [{"name": name, "in": "header", "required": True, "description": description,
                        "schema": {"type": "string"}} for name, description in _HEADERS.items()],
        "requestBody": {"required": True, "content": {"application/cloudevents+json": {
            "schema": cloud_event, "example": _EXAMPLE}}},
        "responses": {"2XX": {"description": "Received: the delivery is recorded `delivered`"},
                      "410": {"description": "Gone: the service disables this webhook"}},
    }}}
