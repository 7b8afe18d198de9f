"""Entry to the privacy center: single-use links that open browser sessions, each bound to one subject.

A platform asks for a link for its user (POST /v1/subjects/{id}/privacy-center/sessions) and sends the user
to it; opening it trades the code for a session cookie. Codes and session tokens are random (256 bits) and
stored only as their SHA-256, in the database, so every replica honours them and a copy of the database
opens nothing. CSRF tokens are derived from the session token, so they need no storage and die with it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from consent.app.ports import Clock, RecordedEvent
from consent.domain.events import SubjectErased
from consent.domain.streams import SUBJECT_PREFIX


class SessionStore(Protocol):
    async def add_link(self, code_hash: bytes, subject_id: str, expires_at: datetime, now: datetime) -> None: ...

    async def take_link(self, code_hash: bytes, now: datetime) -> str | None:
        """The link's subject, marking the link used, if it is unused and unexpired; else None."""
        ...

    async def add_session(self, session_hash: bytes, subject_id: str, expires_at: datetime,
                          now: datetime) -> None: ...

    async def find_session(self, session_hash: bytes, now: datetime) -> str | None: ...

    async def end_session(self, session_hash: bytes) -> None: ...

    async def end_sessions_of(self, subject_id: str) -> None: ...


class Link(NamedTuple):
    code: str
    expires_at: datetime


class Session(NamedTuple):
    token: str
    subject_id: str
    expires_at: datetime


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class PrivacyCenterSessions:
    def __init__(self, store: SessionStore, clock: Clock, link_ttl: int, session_ttl: int) -> None:
        self._store = store
        self._clock = clock
        self._link_ttl = timedelta(seconds=link_ttl)
        self._session_ttl = timedelta(seconds=session_ttl)

    async def new_link(self, subject_id: str) -> Link:
        code, now = secrets.token_urlsafe(32), self._clock.now()
        expires_at = now + self._link_ttl
        await self._store.add_link(_hash(code), subject_id, expires_at, now)
        return Link(code, expires_at)

    async def enter(self, code: str) -> Session | None:
        """A session for the link's subject; None for a code that is unknown, used or expired (alike)."""
        now = self._clock.now()
        subject_id = await self._store.take_link(_hash(code), now)
        if subject_id is None:
            return None
        token = secrets.token_urlsafe(32)
        expires_at = now + self._session_ttl
        await self._store.add_session(_hash(token), subject_id, expires_at, now)
        return Session(token, subject_id, expires_at)

    async def subject_of(self, token: str) -> str | None:
        return await self._store.find_session(_hash(token), self._clock.now())

    async def end(self, token: str) -> None:
        await self._store.end_session(_hash(token))

    async def end_all(self, subject_id: str) -> None:
        await self._store.end_sessions_of(subject_id)

    async def on_events(self, events: list[RecordedEvent]) -> None:
        """An erasure, however it was asked for, ends every session of the subject."""
        for item in events:
            if isinstance(item.event, SubjectErased) and item.stream_id.startswith(SUBJECT_PREFIX):
                await self.end_all(item.stream_id[len(SUBJECT_PREFIX):])


def csrf_token(session_token: str) -> str:
    """The form token of a session: an HMAC under the session token, checked in constant time."""
    return hmac.new(session_token.encode(), b"privacy-center csrf", hashlib.sha256).hexdigest()


def csrf_valid(session_token: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token(session_token), presented)
