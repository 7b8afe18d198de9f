"""The privacy center: the end user's own page, served by the service (docs/api.md, "Privacy center").

The platform asks for an entry link (`POST /v1/subjects/{id}/privacy-center/sessions`, the subject's own
token or admin) and sends its user there. Opening the link sets a session cookie scoped to /privacy-center;
every page then acts for that subject only, through the same use cases as the API. Pages are plain HTML
forms (no script), protected by a CSRF token bound to the session, and every answer carries a CSP that
allows this origin alone, `Cache-Control: no-store`, and no subject id in any log line.
"""

from __future__ import annotations

import hashlib
import secrets
import urllib.parse
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath

from consent.api.deps import Caller
from consent.api.errors import ERRORS
from consent.api.guards import own_subject
from consent.api.privacy_center_pages import (
    STYLE,
    blocks_in_words,
    history_in_words,
    html,
    message,
    security_headers,
)
from consent.api.privacy_center_strings import language
from consent.app.privacy_center import csrf_token, csrf_valid
from consent.app.privacy_page import changes_from_form, evidence_for, page_blocks
from consent.domain.errors import DomainError
from consent.domain.ids import check_subject

COOKIE = "consent_privacy_center"
PATH = "/privacy-center"
_SUBJECT = "consent.privacy_center.subject"  # the scope key where the session guard leaves the subject
_HISTORY_SHOWN = 200  # the newest events on the page; the export holds them all


class PrivacyCenterLink(msgspec.Struct):
    url: str
    expires_at: datetime


class SessionLinkController(Controller):
    path = "/v1/subjects/{subject_id:str}/privacy-center"
    tags = ["privacy center"]
    guards = [own_subject]

    @post("/sessions", status_code=201, responses=ERRORS,
          summary="An entry link to the subject's privacy center: single use, short-lived (the subject, or admin)")
    async def new_session(self, request: Request, subject_id: FromPath[str], principal: Caller) -> PrivacyCenterLink:
        check_subject(subject_id)
        container = request.app.state.container
        link = await container.privacy_center.new_link(subject_id)
        base = (container.settings.public_url or "").rstrip("/")
        return PrivacyCenterLink(url=f"{base}{PATH}/enter/{link.code}", expires_at=link.expires_at)


class PrivacyCenterError(Exception):
    """Answered as a page in the visitor's language: a status and the key of its message."""

    def __init__(self, status: int, key: str) -> None:
        self.status, self.key = status, key


async def session_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """The page's subject, from the session cookie, before anything of the request is read."""
    token = connection.cookies.get(COOKIE)
    subject_id = await connection.app.state.container.privacy_center.subject_of(token) if token else None
    if subject_id is None:
        raise PrivacyCenterError(401, "no_session")
    connection.scope[_SUBJECT] = (subject_id, token)  # type: ignore[literal-required]


def _session(request: Request) -> tuple[str, str]:
    return request.scope[_SUBJECT]  # type: ignore[literal-required]


def _page_error(request: Request, error: Exception) -> Response:
    t = language(request.headers.get("accept-language"))
    headers = {**_headers(request), "Cache-Control": "no-store"}  # the app's default is not applied here
    if isinstance(error, PrivacyCenterError):
        return message(t, t[error.key], error.status, headers)
    status = error.status if isinstance(error, DomainError) else 500
    return message(t, t["error"], status if status < 500 else 503, headers, back=True)


def _headers(request: Request) -> dict[str, str]:
    return security_headers(request.app.state.container.settings.privacy_center_frame_ancestors)


async def _form(request: Request) -> dict[str, list[str]]:
    body = await request.body()
    try:
        return urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=2000)
    except ValueError:  # more fields than any page of ours has
        raise PrivacyCenterError(400, "error") from None


def _check_csrf(token: str, form: dict[str, list[str]]) -> None:
    if not csrf_valid(token, (form.get("csrf") or [None])[0]):
        raise PrivacyCenterError(403, "forbidden")


def _ended(request: Request, response: Response) -> Response:
    """The session cookie cleared, on the same path and attributes it was set with."""
    response.set_cookie(_cookie(request, "", max_age=0))
    return response


def _cookie(request: Request, value: str, max_age: int) -> Cookie:
    settings = request.app.state.container.settings
    return Cookie(key=COOKIE, value=value, path=PATH, httponly=True, samesite="lax", max_age=max_age,
                  secure=(settings.public_url or "").startswith("https://"))


class PrivacyCenterController(Controller):
    path = PATH
    include_in_schema = False
    exception_handlers = {PrivacyCenterError: _page_error, DomainError: _page_error}

    @get("/style.css", media_type="text/css")
    async def style(self, request: Request) -> Response:
        return Response(STYLE, media_type="text/css", headers=_headers(request))

    @get("/enter/{code:str}")
    async def enter(self, request: Request, code: FromPath[str]) -> Response:
        container = request.app.state.container
        # Unknown, used or expired: one answer, which tells a visitor (or a guesser) nothing more.
        session = await container.privacy_center.enter(code) if len(code) <= 100 else None
        if session is None:
            raise PrivacyCenterError(410, "expired_link")
        response = Response(b"", status_code=303, headers={**_headers(request), "Location": PATH})
        response.set_cookie(_cookie(request, session.token, container.settings.privacy_center_session_ttl))
        return response

    @get("/", guards=[session_guard])
    async def page(self, request: Request) -> Response:
        subject_id, token = _session(request)
        container = request.app.state.container
        t = language(request.headers.get("accept-language"))
        notices = []
        state = await container.subject_service.state(subject_id)
        if (request.headers.get("sec-gpc") or "").strip() == "1":
            if not state.global_opt_out:  # recorded once, as on the API
                await container.subject_service.record_global_opt_out(subject_id, "subject")
                state = await container.subject_service.state(subject_id)
            notices.append(t["gpc"])
        elif state.global_opt_out:
            notices.append(t["opted_out"])
        if request.query_params.get("m") in ("saved", "nothing_changed"):
            notices.append(t[request.query_params["m"]])
        catalog, controller = container.catalog_service.catalog, container.settings.controller_name
        history = await _whole_history(container, subject_id)
        return html("page.html", 200, _headers(request), t=t, notices=notices, csrf=csrf_token(token),
                    idempotency_key=secrets.token_urlsafe(16),
                    blocks=blocks_in_words(page_blocks(catalog, state, container.clock.now()), t, controller),
                    history=history_in_words(history, catalog, t, controller)[:_HISTORY_SHOWN])

    @post("/", guards=[session_guard], status_code=303)
    async def save(self, request: Request) -> Response:
        subject_id, token = _session(request)
        form = await _form(request)
        _check_csrf(token, form)
        container = request.app.state.container
        catalog = container.catalog_service.catalog
        state = await container.subject_service.state(subject_id)
        changes = changes_from_form(page_blocks(catalog, state, container.clock.now()), set(form.get("shown", [])),
                                    set(form.get("choice", [])))
        done = "nothing_changed"
        if changes:
            key = (form.get("idempotency_key") or [""])[0][:100]
            request_hash = hashlib.sha256(msgspec.json.encode(changes)).hexdigest()
            idempotency = (hashlib.sha256(f"privacy-center:{subject_id}:{key}".encode()).hexdigest(),
                           request_hash) if key else None
            evidence = evidence_for(catalog, changes) if container.subject_keys.master is not None else None
            await container.subject_service.change_consents(subject_id, changes, "web", evidence, "subject",
                                                            idempotency=idempotency)
            done = "saved"
        return Response(b"", status_code=303, headers={**_headers(request), "Location": f"{PATH}?m={done}"})

    @post("/logout", guards=[session_guard])
    async def logout(self, request: Request) -> Response:
        _, token = _session(request)
        _check_csrf(token, await _form(request))
        await request.app.state.container.privacy_center.end(token)
        t = language(request.headers.get("accept-language"))
        return _ended(request, message(t, t["signed_out"], 200, _headers(request)))

    @get("/receipts/{event_id:uuid}", guards=[session_guard])
    async def receipt(self, request: Request, event_id: FromPath[UUID]) -> Response:
        subject_id, _ = _session(request)
        found = await request.app.state.container.records.receipt(subject_id, event_id)
        return _download(request, msgspec.json.encode(found), f"receipt-{event_id}.json")

    @get("/export", guards=[session_guard])
    async def export(self, request: Request) -> Response:
        subject_id, _ = _session(request)
        document = await request.app.state.container.records.export(subject_id)
        return _download(request, msgspec.json.encode(document), "my-data.json")

    @get("/erase", guards=[session_guard])
    async def confirm_erase(self, request: Request) -> Response:
        _, token = _session(request)
        return html("erase.html", 200, _headers(request), t=language(request.headers.get("accept-language")),
                    csrf=csrf_token(token))

    @post("/erase", guards=[session_guard])
    async def erase(self, request: Request) -> Response:
        subject_id, token = _session(request)
        _check_csrf(token, await _form(request))
        container = request.app.state.container
        await container.subject_service.erase_subject(subject_id, "subject")
        await container.privacy_center.end_all(subject_id)  # also done for every erasure (consent/bootstrap.py)
        t = language(request.headers.get("accept-language"))
        return _ended(request, message(t, t["erased"], 200, _headers(request)))


async def _whole_history(container: Any, subject_id: str) -> list:
    events, after = [], 0
    while True:
        page = await container.subject_service.history(subject_id, after, 1000)
        events += page.events
        if page.next_after is None:
            return events
        after = page.next_after


def _download(request: Request, body: bytes, filename: str) -> Response[Any]:
    return Response(body, media_type=MediaType.JSON, headers={
        **_headers(request), "Content-Disposition": f'attachment; filename="{filename}"'})
