"""The partner API without I/O: requests to send, answers to decode, the token to reuse.

The sync and async clients (partner.py) only send what this builds, so both speak exactly the same
protocol; a fix here fixes both.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote, quote_plus

import httpx
import msgspec

from consent_client.errors import ProblemError, TokenRequestError, UnexpectedResponse
from consent_client.models import AccessToken, BatchDecisions, Decision, Permissions, Question

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode


class Call(NamedTuple):
    """One API request, before it gets a token."""

    method: str
    path: str
    answer: type
    body: dict[str, Any] | None = None
    params: dict[str, Any] | None = None


class TokenCache:
    """The current access token, renewed `margin` seconds before it expires: a request never carries
    a token about to lapse on its way. The margin shrinks for short-lived tokens (a fifth of the
    lifetime at most), so that a token is not renewed on every call, but never below one second: the
    service counts `exp` from its clock truncated to the second, so a token may lapse up to a second
    before `expires_in` says."""

    def __init__(self, margin: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._margin = margin
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0

    def now(self) -> float:
        return self._clock()

    def current(self) -> str | None:
        if self._token is not None and self._clock() < self._renew_at:
            return self._token
        return None

    def keep(self, token: AccessToken, requested_at: float) -> str:
        # Counted from when the request left: the server's clock started no earlier.
        self._token = token.access_token
        self._renew_at = requested_at + token.expires_in - max(1.0, min(self._margin, token.expires_in / 5))
        return token.access_token

    def forget(self, token: str) -> None:
        """The service refused this token (revoked, or signed with a key it no longer has)."""
        if self._token == token:
            self._token = None


def basic_credentials(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: each part form-urlencoded before they are joined, which plain HTTP Basic
    helpers skip; a secret holding `:` or `%` would otherwise be misread."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


class PartnerProtocol:
    def __init__(self, base_url: str, client_id: str, client_secret: str, scopes: Iterable[str] | None,
                 user_agent: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._authorization = basic_credentials(client_id, client_secret)
        self._scope = " ".join(scopes) if scopes is not None else None
        self._user_agent = user_agent

    # Tokens (docs/api.md, "Partner tokens").

    def token_request(self) -> httpx.Request:
        form = {"grant_type": "client_credentials", **({"scope": self._scope} if self._scope else {})}
        return httpx.Request("POST", f"{self.base_url}/v1/oauth/token", data=form, headers=self._token_headers())

    def revoke_request(self, token: str) -> httpx.Request:
        return httpx.Request("POST", f"{self.base_url}/v1/oauth/revoke", data={"token": token},
                             headers=self._token_headers())

    def _token_headers(self) -> dict[str, str]:
        return {"Authorization": self._authorization, "Accept": "application/json", "User-Agent": self._user_agent}

    @staticmethod
    def token_answer(response: httpx.Response) -> AccessToken:
        _raise_oauth_error(response)
        return decode(response, AccessToken)

    @staticmethod
    def revoke_answer(response: httpx.Response) -> None:
        _raise_oauth_error(response)
        if response.status_code != 200:
            raise_for(response)

    # Decisions (docs/api.md, "Decisions").

    @staticmethod
    def decide(subject_id: str, purpose: str, scopes: Iterable[str], min_position: int | None,
               at: datetime | None) -> Call:
        body = {"subject_id": subject_id, "purpose": purpose, "scopes": list(scopes),
                **_optional(min_position=min_position, at=at)}
        return Call("POST", "/v1/decisions", Decision, body=body)

    @staticmethod
    def decide_batch(questions: Iterable[Question | tuple[str, str, Iterable[str]]], min_position: int | None,
                     at: datetime | None) -> Call:
        items = [msgspec.to_builtins(q if isinstance(q, Question) else Question(q[0], q[1], list(q[2])))
                 for q in questions]
        return Call("POST", "/v1/decisions/batch", BatchDecisions,
                    body={"items": items, **_optional(min_position=min_position, at=at)})

    @staticmethod
    def permissions(subject_id: str, min_position: int | None) -> Call:
        return Call("GET", f"/v1/subjects/{quote(subject_id, safe='')}/permissions", Permissions,
                    params=_optional(min_position=min_position))

    def request(self, call: Call, token: str) -> httpx.Request:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": self._user_agent}
        content = None
        if call.body is not None:
            content = _encode(call.body)
            headers["Content-Type"] = "application/json"
        return httpx.Request(call.method, f"{self.base_url}{call.path}", params=call.params, content=content,
                             headers=headers)

    @staticmethod
    def token_refused(response: httpx.Response) -> bool:
        """A 401 for the token itself (expired early, revoked, signed under a rotated key): worth one
        retry with a new token. A 403 is about rights, which a new token does not change."""
        return response.status_code == 401


def _raise_oauth_error(response: httpx.Response) -> None:
    """The token endpoints answer errors as RFC 6749 §5.2 `{"error": ...}`, not as problem documents."""
    if response.status_code in (400, 401):
        error = _json_or_none(response)
        if isinstance(error, dict) and isinstance(error.get("error"), str):
            raise TokenRequestError(response.status_code, error["error"], error.get("error_description"))


def _optional(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return None


def decode(response: httpx.Response, answer: type[T]) -> T:
    """The answer as `answer`, or the error the service sent."""
    if response.status_code != 200:
        raise_for(response)
    try:
        return msgspec.json.decode(response.content, type=answer)
    except msgspec.DecodeError:
        raise _unexpected(response) from None


def raise_for(response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "")
    problem = _json_or_none(response) if "json" in content_type else None
    if not isinstance(problem, dict) or not isinstance(problem.get("code"), str):
        raise _unexpected(response)
    raise ProblemError(
        status=response.status_code, code=problem["code"], title=str(problem.get("title", "")),
        detail=problem.get("detail"), type_=problem.get("type"), retry_after=_retry_after(response.headers),
        request_id=response.headers.get("x-request-id"), body=problem)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: rare enough here to leave to the caller's own backoff
        return None


def _unexpected(response: httpx.Response) -> UnexpectedResponse:
    return UnexpectedResponse(response.status_code, response.headers.get("content-type"),
                              response.text[:200])
