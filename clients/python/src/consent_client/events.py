"""The CloudEvents the service publishes (docs/api.md, "Events"; openapi/asyncapi.yaml).

The same JSON arrives on the JetStream stream and in webhook bodies: CloudEvents 1.0, structured mode.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec import Struct

from consent_client.errors import InvalidEvent

TYPE_PREFIX = "io.consent.v1."
# The subject event types after which a partner's use of the data ends (or may end, for a first-party
# withdrawal): what a subscriber that deletes copies listens for.
CONSENT_ENDED = frozenset({f"{TYPE_PREFIX}subject.{kind}" for kind in ("withdrawn", "expired", "objected", "erased")})


class CloudEvent(Struct, frozen=True, kw_only=True):
    specversion: str
    id: str  # the event id, also the NATS message id: deduplicate on it
    source: str
    type: str  # io.consent.v1.<aggregate>.<kind>, e.g. io.consent.v1.subject.granted
    time: datetime
    # The subject, purpose, scope or partner id; a pairwise partner's pseudonym when `pseudonymous`.
    subject: str
    data: dict[str, Any]
    datacontenttype: str = "application/json"
    pseudonymous: bool = False

    @property
    def kind(self) -> str:
        """The type without its prefix: `subject.granted`, `partner.terminated`, ..."""
        return self.type.removeprefix(TYPE_PREFIX)

    @property
    def position(self) -> int:
        """The event's global position in the log: a consistency token for `min_position`."""
        return self.data["position"]

    @property
    def stream_version(self) -> int:
        return self.data["stream_version"]

    def consent_change(self) -> ConsentChange | None:
        """The typed data of a grant, withdrawal, expiry or objection; None for any other event."""
        if self.kind not in _CONSENT_CHANGES:
            return None
        try:
            return msgspec.convert(self.data, ConsentChange, strict=False)
        except msgspec.ValidationError as error:
            raise InvalidEvent(f"{self.type} data: {error}") from None


_CONSENT_CHANGES = {"subject.granted", "subject.withdrawn", "subject.expired", "subject.objected"}


class ConsentChange(Struct, frozen=True, kw_only=True):
    """A subject's choice about one purpose: `partner` None is a first-party choice, which covers
    every partner; `scopes` None means every scope approved for the purpose."""

    purpose: str
    partner: str | None
    scopes: list[str] | None
    purpose_version: int
    source: str  # web, app, api, gpc, admin, system
    occurred_at: datetime
    position: int
    stream_version: int
    expires_at: datetime | None = None  # grants and expiries
    reason: str | None = None  # withdrawals by the service, e.g. partner_terminated


_decoder = msgspec.json.Decoder(CloudEvent)


def decode_event(payload: bytes | str) -> CloudEvent:
    """A CloudEvent from its JSON; InvalidEvent when the payload is not one."""
    try:
        event = _decoder.decode(payload)
    except msgspec.DecodeError as error:  # ValidationError is a DecodeError
        raise InvalidEvent(f"not a CloudEvent of this service: {error}") from None
    if event.specversion != "1.0":
        raise InvalidEvent(f"unsupported CloudEvents specversion {event.specversion!r}")
    return event
