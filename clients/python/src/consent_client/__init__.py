"""Client for the consent service: partner decisions over HTTP, webhook verification, and (with the
`nats` extra) a JetStream subscriber in `consent_client.jetstream`."""

from consent_client.errors import (
    ConsentError,
    InvalidEvent,
    ProblemError,
    TokenRequestError,
    UnexpectedResponse,
    WebhookVerificationError,
)
from consent_client.events import CONSENT_ENDED, CloudEvent, ConsentChange, decode_event
from consent_client.models import (
    AccessToken,
    BatchDecisions,
    Decision,
    Denial,
    Permission,
    Permissions,
    Question,
)
from consent_client.partner import AsyncPartnerClient, PartnerClient
from consent_client.webhooks import WebhookVerifier, sign

__all__ = [
    "CONSENT_ENDED",
    "AccessToken",
    "AsyncPartnerClient",
    "BatchDecisions",
    "CloudEvent",
    "ConsentChange",
    "ConsentError",
    "Decision",
    "Denial",
    "InvalidEvent",
    "PartnerClient",
    "Permission",
    "Permissions",
    "ProblemError",
    "Question",
    "TokenRequestError",
    "UnexpectedResponse",
    "WebhookVerificationError",
    "WebhookVerifier",
    "decode_event",
    "sign",
]
