"""Domain errors carry a stable, machine-readable code; the API maps them to HTTP."""

from __future__ import annotations

from consent.domain.streams import stream_kind


class DomainError(Exception):
    """A command was refused. `code` is stable and part of the public contract."""

    status = 422

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class NotFound(DomainError):
    status = 404

    def __init__(self, what: str, ident: str) -> None:
        super().__init__("not_found", f"{what} {ident!r} does not exist")


class Forbidden(DomainError):
    """Valid credentials, acting outside their rights."""

    status = 403


class Conflict(DomainError):
    """The command is valid in form but clashes with the current state."""

    status = 409


class VersionConflict(Conflict):
    def __init__(self, stream_id: str, expected: int) -> None:
        super().__init__(
            "version_conflict",
            f"{stream_kind(stream_id)} changed concurrently (expected version {expected})",
        )


def idempotency_key_in_flight() -> Conflict:
    """Another request with the same Idempotency-Key committed first; this one rolls back whole."""
    return Conflict("idempotency_key_in_flight",
                    "a request with this Idempotency-Key was processed concurrently; retry it")


# Every `code` a problem answer can carry, with what it means: the one list the OpenAPI document
# publishes (an enum on Problem.code) and tests/unit/test_problem_codes.py holds the code base to.
# Adding a code is a change of the public contract; renaming or removing one breaks clients.
PROBLEM_CODES: dict[str, str] = {
    "validation_failed": "The request is malformed, or a value breaks a rule of form (400 or 422)",
    "invalid_window": "The partner health window is not one of the durations offered (400)",
    "unauthorized": "Credentials are missing, invalid, expired or revoked (401)",
    "forbidden": "Valid credentials, but this caller may not do this (403)",
    "insufficient_scope": "The partner token lacks the OAuth scope this route needs (403)",
    "sandbox_only": "A sandbox partner asked about a subject outside the sandbox id prefix (403)",
    "not_found": "No such resource (404)",
    "method_not_allowed": "The path does not answer this HTTP method (405)",
    "conflict": "The request clashes with the current state (409)",
    "catalog_changed": "The catalog changed since the plan whose catalog_position the apply names (409)",
    "version_conflict": "The subject or catalog entry changed since the version named in If-Match (409)",
    "idempotency_key_reused": "This Idempotency-Key was used with another request body (409)",
    "idempotency_key_in_flight": "A request with this Idempotency-Key was processed concurrently; retry (409)",
    "partner_terminated": "The partner is terminated, which is final (409)",
    "purpose_retired": "The purpose is retired: it takes no new grants and cannot be revised (409 or 422)",
    "payload_too_large": "The request body exceeds the configured limit (413)",
    "unsupported_media_type": "The request body's content type is not accepted here (415)",
    "unknown_purpose": "The purpose is not in the catalog (422)",
    "unknown_scope": "The scope is not in the catalog (422)",
    "unknown_partner": "The partner is not registered (422)",
    "partner_inactive": "The partner is suspended or terminated and takes no grants (422)",
    "scope_not_approved": "The partner is not approved for this purpose on these scopes (422)",
    "not_consent_based": "The purpose rests on another legal basis and takes no consent commands (422)",
    "unknown_position": "min_position names a log position that has not been written (422)",
    "pseudonym_key_missing": "Pairwise identifiers need CONSENT_PSEUDONYM_KEY, which this server lacks (422)",
    "master_key_missing": "Evidence needs CONSENT_MASTER_KEY to be stored encrypted; this server lacks it (422)",
    "webhook_url_forbidden": "The webhook URL is not https, or its host resolves to a private, loopback, "
                             "link-local, multicast or unspecified address (422)",
    "client_error": "Another client error (4xx)",
    "rate_limited": "The partner exceeded its request rate; retry after Retry-After seconds (429)",
    "internal_error": "An unexpected server error (500)",
    "unavailable": "The database is unavailable; retry after Retry-After seconds (503)",
    "master_key_unavailable": "The data is sealed under a master key this server lacks: a configuration fault (503)",
}
