"""Everything the client raises derives from ConsentError, so one `except` can catch the lot."""

from __future__ import annotations

from typing import Any


class ConsentError(Exception):
    """Base of every error this package raises."""


class ProblemError(ConsentError):
    """The service refused a request: an RFC 9457 problem with a stable `code` (docs/api.md, "Errors").

    Branch on `code` (`unauthorized`, `insufficient_scope`, `sandbox_only`, `unknown_position`,
    `rate_limited`, ...), never on `title` or `detail`, which are for people."""

    def __init__(self, status: int, code: str, title: str, detail: str | None, type_: str | None = None,
                 retry_after: float | None = None, request_id: str | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {detail or title}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.type = type_
        # Seconds to wait before retrying, from Retry-After (429 and 503 send it).
        self.retry_after = retry_after
        # X-Request-Id of the answer: quote it when reporting a problem to the operator.
        self.request_id = request_id
        # The whole problem document, extension members included (`errors` of a validation failure).
        self.body = body or {}


class TokenRequestError(ConsentError):
    """The token endpoint refused the client credentials: an RFC 6749 §5.2 error, not a problem document.

    `code` is the OAuth `error`: `invalid_client` (wrong or revoked credential), `invalid_scope`,
    `invalid_request`, `unauthorized_client`, ..."""

    def __init__(self, status: int, code: str, description: str | None) -> None:
        super().__init__(f"{status} {code}: {description or 'token request refused'}")
        self.status = status
        self.code = code
        self.description = description


class UnexpectedResponse(ConsentError):
    """An answer that is neither the expected JSON nor a problem document: a proxy's error page, a
    wrong base URL. The status and the start of the body tell which."""

    def __init__(self, status: int, content_type: str | None, excerpt: str) -> None:
        super().__init__(f"unexpected answer {status} ({content_type or 'no content type'}): {excerpt}")
        self.status = status
        self.content_type = content_type
        self.excerpt = excerpt


class InvalidEvent(ConsentError):
    """A payload that is not a CloudEvent of this service (malformed JSON, missing attributes)."""


class WebhookVerificationError(ConsentError):
    """A webhook that must not be trusted: missing headers, a timestamp outside the tolerance, or no
    signature made with a known secret. Answer it with 4xx and do not process it."""
