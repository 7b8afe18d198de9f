"""Events as CloudEvents 1.0, structured JSON mode of the NATS protocol binding (API.md "Events")."""

from __future__ import annotations

from typing import Any

import msgspec

from consent.app.ports import RecordedEvent
from consent.domain.events import event_data, event_type

TYPE_PREFIX = "io.consent.v1."
# Never published: may hold personal data (what was shown, where), kept in the log only.
PRIVATE_FIELDS = ("evidence", "name")
_encode = msgspec.json.Encoder().encode


def nats_subject(recorded: RecordedEvent, prefix: str = "consent.v1") -> str:
    """`consent.v1.subject.granted.<purpose or _>.<partner or _>`, `consent.v1.purpose.defined.<id>`, ..."""
    aggregate, kind = event_type(recorded.event).split(".", 1)
    if aggregate == "subject":
        purpose = getattr(recorded.event, "purpose", None) or "_"
        partner = getattr(recorded.event, "partner", None) or "_"
        return f"{prefix}.subject.{kind}.{purpose}.{partner}"
    return f"{prefix}.{aggregate}.{kind}.{recorded.stream_id.split(':', 1)[1]}"


def cloudevent(recorded: RecordedEvent, source: str) -> dict[str, Any]:
    data = event_data(recorded.event)
    for field in PRIVATE_FIELDS:
        data.pop(field, None)
    data["position"] = recorded.position
    data["stream_version"] = recorded.stream_version
    return {
        "specversion": "1.0",
        "id": str(recorded.event_id),
        "source": source,
        "type": TYPE_PREFIX + event_type(recorded.event),
        "time": recorded.event.occurred_at,
        "subject": recorded.stream_id.split(":", 1)[1],
        "datacontenttype": "application/json",
        "data": data,
    }


def encode(recorded: RecordedEvent, source: str) -> bytes:
    return _encode(cloudevent(recorded, source))
