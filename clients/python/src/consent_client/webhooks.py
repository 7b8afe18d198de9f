"""Webhooks signed as Standard Webhooks prescribes (https://www.standardwebhooks.com), carrying a CloudEvent.

Headers: `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, a space-separated
list of `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. The HMAC key is the base64 part of a
`whsec_...` secret. While a secret is rotated the sender signs with both, so any one valid signature
passes; the receiver may hold several secrets for the same reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping

from consent_client.errors import WebhookVerificationError
from consent_client.events import CloudEvent, decode_event

SECRET_PREFIX = "whsec_"
# Standard Webhooks' recommended window against replays of a captured request.
DEFAULT_TOLERANCE = 300.0
CONTENT_TYPE = "application/cloudevents+json"


def secret_key(secret: str | bytes) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (the prefix is optional); raw bytes are taken as is."""
    if isinstance(secret, bytes):
        key = secret
    else:
        encoded = secret.removeprefix(SECRET_PREFIX)
        try:
            # Padding is added: some tools print secrets without it.
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def _signature(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, b".".join((webhook_id.encode(), timestamp.encode(), body)), hashlib.sha256).digest()


def sign(secrets: str | bytes | Iterable[str | bytes], webhook_id: str, body: bytes,
         timestamp: int | None = None) -> dict[str, str]:
    """The three headers of a signed webhook, one `v1` signature per secret (several while rotating).
    For senders, and for testing a receiver."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signatures = " ".join(
        "v1," + base64.b64encode(_signature(key, webhook_id, stamp, body)).decode() for key in _keys(secrets))
    return {"webhook-id": webhook_id, "webhook-timestamp": stamp, "webhook-signature": signatures}


def _keys(secrets: str | bytes | Iterable[str | bytes]) -> list[bytes]:
    listed = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
    if not listed:
        raise ValueError("at least one webhook secret is needed")
    return [secret_key(secret) for secret in listed]


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:  # a plain dict with other capitalisation (`Webhook-Id`)
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if not value:
        raise WebhookVerificationError(f"missing {name} header")
    return value


class WebhookVerifier:
    """Checks a webhook's signature and timestamp, then parses its CloudEvent.

    `secrets`: the endpoint's `whsec_...` secret, or several while one replaces another.
    `tolerance`: seconds a timestamp may be off the local clock, either way."""

    def __init__(self, secrets: str | bytes | Iterable[str | bytes], *, tolerance: float = DEFAULT_TOLERANCE,
                 clock: Callable[[], float] = time.time) -> None:
        self._keys = _keys(secrets)
        self._tolerance = tolerance
        self._clock = clock

    def verify(self, body: bytes | str, headers: Mapping[str, str]) -> CloudEvent:
        """The event, if the request is authentic and recent; else WebhookVerificationError.

        `body` must be the bytes as received: parsing and re-serialising JSON changes them. A
        verified body that is no CloudEvent raises InvalidEvent. The same event may arrive twice
        (a retry after a timeout): deduplicate on `webhook-id` or on the event's `id`."""
        raw = body.encode() if isinstance(body, str) else body
        self.check(raw, headers)
        return decode_event(raw)

    def check(self, body: bytes, headers: Mapping[str, str]) -> None:
        """The signature and timestamp only, without parsing the body."""
        webhook_id = _header(headers, "webhook-id")
        stamp = _header(headers, "webhook-timestamp")
        offered = _header(headers, "webhook-signature")
        self._check_timestamp(stamp)
        candidates = []
        for entry in offered.split():
            version, _, encoded = entry.partition(",")
            if version != "v1":  # other schemes (v1a, asymmetric) are not ours to check
                continue
            try:
                candidates.append(base64.b64decode(encoded, validate=True))
            except binascii.Error:
                continue
        expected = [_signature(key, webhook_id, stamp, body) for key in self._keys]
        # Every pair is compared, in constant time each: how long it takes does not tell which matched.
        matches = [hmac.compare_digest(mine, theirs) for mine in expected for theirs in candidates]
        if not any(matches):
            raise WebhookVerificationError("no valid signature: wrong secret, or the body was altered")

    def _check_timestamp(self, stamp: str) -> None:
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            raise WebhookVerificationError("webhook-timestamp is not a number of seconds")
        skew = self._clock() - int(stamp)
        if skew > self._tolerance:
            raise WebhookVerificationError("webhook-timestamp too old: a replay, or a clock far off")
        if skew < -self._tolerance:
            raise WebhookVerificationError("webhook-timestamp too far in the future")
