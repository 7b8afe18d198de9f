"""Partner clients, async and sync: a token from the client credentials, then decisions and permissions.

Both only send what `PartnerProtocol` builds and decode what it decodes; what differs is `await`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import httpx

from consent_client._protocol import Call, PartnerProtocol, TokenCache, decode
from consent_client.models import BatchDecisions, Decision, Permissions, Question

USER_AGENT = "consent-client-python/0.1"
# Renew a token this long before it expires (less for short-lived tokens: see TokenCache).
REFRESH_MARGIN = 60.0

BatchQuestion = Question | tuple[str, str, Iterable[str]]


class _PartnerBase:
    def __init__(self, base_url: str, client_id: str, client_secret: str, scopes: Iterable[str] | None,
                 refresh_margin: float) -> None:
        self._protocol = PartnerProtocol(base_url, client_id, client_secret, scopes, USER_AGENT)
        self._tokens = TokenCache(refresh_margin)


class AsyncPartnerClient(_PartnerBase):
    """A partner's view of the service, for asyncio code.

    `async with AsyncPartnerClient(url, client_id, client_secret) as consent:` then
    `await consent.decide("user-42", "marketing", ["profile.email"])`. Pass `http` to reuse an
    `httpx.AsyncClient` of your own (proxies, TLS, timeouts); it is then yours to close.
    `scopes` asks for a token with fewer OAuth scopes than the credential has."""

    def __init__(self, base_url: str, client_id: str, client_secret: str, *, scopes: Iterable[str] | None = None,
                 http: httpx.AsyncClient | None = None, timeout: float = 10.0,
                 refresh_margin: float = REFRESH_MARGIN) -> None:
        super().__init__(base_url, client_id, client_secret, scopes, refresh_margin)
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self._token_lock = asyncio.Lock()

    async def decide(self, subject_id: str, purpose: str, scopes: Iterable[str], *, min_position: int | None = None,
                     at: datetime | None = None) -> Decision:
        """May this partner use `scopes` of `subject_id` for `purpose`, and until when?"""
        return await self._call(self._protocol.decide(subject_id, purpose, scopes, min_position, at))

    async def decide_batch(self, questions: Iterable[BatchQuestion], *, min_position: int | None = None,
                           at: datetime | None = None) -> BatchDecisions:
        """Up to 1000 questions, `Question`s or `(subject_id, purpose, scopes)` tuples, answered in order."""
        return await self._call(self._protocol.decide_batch(questions, min_position, at))

    async def permissions(self, subject_id: str, *, min_position: int | None = None) -> Permissions:
        """Every purpose this partner may use the subject's data for now, with the scopes and limits."""
        return await self._call(self._protocol.permissions(subject_id, min_position))

    async def revoke_token(self) -> None:
        """Give up the current token (RFC 7009), e.g. at shutdown; the next call fetches a new one."""
        token = self._tokens.current()
        if token is not None:
            self._tokens.forget(token)
            self._protocol.revoke_answer(await self._http.send(self._protocol.revoke_request(token)))

    async def _call(self, call: Call) -> Any:
        token, fresh = await self._token()
        response = await self._http.send(self._protocol.request(call, token))
        if self._protocol.token_refused(response) and not fresh:
            self._tokens.forget(token)
            token, _ = await self._token()
            response = await self._http.send(self._protocol.request(call, token))
        return decode(response, call.answer)

    async def _token(self) -> tuple[str, bool]:
        """The token to send, and whether it was fetched just now (a refusal of it is final)."""
        async with self._token_lock:  # concurrent calls at expiry fetch one token, not one each
            token = self._tokens.current()
            if token is not None:
                return token, False
            requested_at = self._tokens.now()
            answer = self._protocol.token_answer(await self._http.send(self._protocol.token_request()))
            return self._tokens.keep(answer, requested_at), True

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncPartnerClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


class PartnerClient(_PartnerBase):
    """The same as AsyncPartnerClient for blocking code (scripts, WSGI apps, threads); thread-safe."""

    def __init__(self, base_url: str, client_id: str, client_secret: str, *, scopes: Iterable[str] | None = None,
                 http: httpx.Client | None = None, timeout: float = 10.0,
                 refresh_margin: float = REFRESH_MARGIN) -> None:
        super().__init__(base_url, client_id, client_secret, scopes, refresh_margin)
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._token_lock = threading.Lock()

    def decide(self, subject_id: str, purpose: str, scopes: Iterable[str], *, min_position: int | None = None,
               at: datetime | None = None) -> Decision:
        return self._call(self._protocol.decide(subject_id, purpose, scopes, min_position, at))

    def decide_batch(self, questions: Iterable[BatchQuestion], *, min_position: int | None = None,
                     at: datetime | None = None) -> BatchDecisions:
        return self._call(self._protocol.decide_batch(questions, min_position, at))

    def permissions(self, subject_id: str, *, min_position: int | None = None) -> Permissions:
        return self._call(self._protocol.permissions(subject_id, min_position))

    def revoke_token(self) -> None:
        token = self._tokens.current()
        if token is not None:
            self._tokens.forget(token)
            self._protocol.revoke_answer(self._http.send(self._protocol.revoke_request(token)))

    def _call(self, call: Call) -> Any:
        token, fresh = self._token()
        response = self._http.send(self._protocol.request(call, token))
        if self._protocol.token_refused(response) and not fresh:
            self._tokens.forget(token)
            token, _ = self._token()
            response = self._http.send(self._protocol.request(call, token))
        return decode(response, call.answer)

    def _token(self) -> tuple[str, bool]:
        with self._token_lock:
            token = self._tokens.current()
            if token is not None:
                return token, False
            requested_at = self._tokens.now()
            answer = self._protocol.token_answer(self._http.send(self._protocol.token_request()))
            return self._tokens.keep(answer, requested_at), True

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> PartnerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
