"""The privacy center over HTTP, on both databases: entry links, sessions, the form, CSRF, GPC, erasure.
The same page in a real browser (keyboard, accessibility) is tests/integration/test_privacy_center_browser.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from tests.conftest import ADMIN, FakeClock, user_headers
from tests.integration.test_decisions_api import setup_catalog

LINK = "/v1/subjects/{}/privacy-center/sessions"


async def enter(client, subject_id: str = "u-1") -> dict[str, str]:
    """Open a fresh entry link for the subject; the session cookie, as a browser would send it."""
    link = await client.post(LINK.format(subject_id), headers=user_headers(subject_id))
    assert link.status_code == 201, link.text
    answer = await client.get(link.json()["url"], follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/privacy-center"
    cookie = answer.headers["set-cookie"]
    client.cookies.clear()
    return {"Cookie": cookie.split(";")[0]}


async def page(client, session: dict[str, str], **headers: str):
    answer = await client.get("/privacy-center", headers={**session, **headers})
    assert answer.status_code == 200, answer.text
    return answer


def form_token(html: str, name: str = "csrf") -> str:
    return re.search(rf'name="{name}" value="([^"]+)"', html).group(1)


def switches(html: str) -> dict[str, bool]:
    """Each switch on the page by `purpose:partner`, and whether it is on."""
    found = re.findall(r'<input type="checkbox"[^>]*value="([^"]+)"[^>]*?( checked)?>', html)
    return {key: bool(checked) for key, checked in found}


async def save(client, session, html: str, on: set[str], csrf: str | None = None):
    shown = switches(html)
    body = [("csrf", csrf if csrf is not None else form_token(html)),
            ("idempotency_key", form_token(html, "idempotency_key"))]
    body += [("shown", key) for key in shown] + [("choice", key) for key in on]
    return await client.post("/privacy-center", headers={**session, "Content-Type":
                             "application/x-www-form-urlencoded"}, content=_encoded(body), follow_redirects=False)


def _encoded(pairs: list[tuple[str, str]]) -> bytes:
    import urllib.parse
    return urllib.parse.urlencode(pairs).encode()


async def test_the_subject_or_an_admin_gets_a_single_use_link_with_a_safe_cookie(client):
    await setup_catalog(client)
    link = await client.post(LINK.format("u-1"), headers=ADMIN)
    assert link.status_code == 201
    expires_at = datetime.fromisoformat(link.json()["expires_at"])
    assert timedelta(seconds=290) < expires_at - datetime.now(UTC) <= timedelta(seconds=300)
    url = link.json()["url"]
    assert re.fullmatch(r"/privacy-center/enter/[A-Za-z0-9_-]{43}", url)
    opened = await client.get(url, follow_redirects=False)
    cookie = opened.headers["set-cookie"].lower()
    assert opened.status_code == 303
    for attribute in ("httponly", "samesite=lax", "path=/privacy-center", "max-age=1800"):
        assert attribute in cookie
    assert "secure" not in cookie  # no https public URL configured
    client.cookies.clear()
    again = await client.get(url, follow_redirects=False)
    unknown = await client.get("/privacy-center/enter/" + "x" * 43, follow_redirects=False)
    assert again.status_code == unknown.status_code == 410 and again.text == unknown.text
    assert "set-cookie" not in again.headers and "Traceback" not in again.text


async def test_a_link_expires(database_url, settings):
    clock = FakeClock(datetime.now(UTC))
    async with AsyncTestClient(create_app(settings, clock=clock)) as client:
        link = await client.post(LINK.format("u-1"), headers=ADMIN)
        clock.advance(seconds=301)
        assert (await client.get(link.json()["url"], follow_redirects=False)).status_code == 410


async def test_secure_cookies_behind_an_https_public_url(settings):
    https = msgspec.structs.replace(settings, public_url="https://consent.example")
    async with AsyncTestClient(create_app(https)) as client:
        link = await client.post(LINK.format("u-1"), headers=ADMIN)
        assert link.json()["url"].startswith("https://consent.example/privacy-center/enter/")
        opened = await client.get(link.json()["url"].removeprefix("https://consent.example"),
                                  follow_redirects=False)
        assert "secure" in opened.headers["set-cookie"].lower()


async def test_without_a_session_the_page_says_to_come_back_through_the_platform(client):
    answer = await client.get("/privacy-center")
    assert answer.status_code == 401 and "text/html" in answer.headers["content-type"]
    assert "Open the privacy center again from the platform" in answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


async def test_the_page_shows_each_purpose_with_its_controls_and_saves_through_the_api_rules(client):
    await setup_catalog(client)
    session = await enter(client)
    shown = await page(client, session)
    assert 'data-purpose="marketing"' in shown.text and "Kept for 30 days." in shown.text
    assert shown.headers["cache-control"] == "no-store"
    assert switches(shown.text) == {"marketing:_": False, "marketing:acme": False, "marketing:globex": False}
    saved = await save(client, session, shown.text, on={"marketing:acme", "marketing:_"})
    assert saved.status_code == 303 and saved.headers["location"] == "/privacy-center?m=saved"
    after = await page(client, session)
    assert switches(after.text) == {"marketing:_": True, "marketing:acme": True, "marketing:globex": False}
    assert "Your choices were saved." in (await client.get("/privacy-center?m=saved", headers=session)).text
    consents = (await client.get("/v1/subjects/u-1/consents", headers=ADMIN)).json()["consents"]
    assert {(c["partner"], c["status"]) for c in consents} == {(None, "granted"), ("acme", "granted")}
    history = (await client.get("/v1/subjects/u-1/history", headers=ADMIN)).json()["events"]
    assert {e["data"]["source"] for e in history} == {"web"}
    assert history[0]["data"]["evidence"]["collection_point"] == "privacy-center"
    assert "Marketing (version 1)" in history[0]["data"]["evidence"]["text_shown"]
    # Switched off again: a withdrawal, shown in the history with its receipt.
    await save(client, session, after.text, on={"marketing:_"})
    consents = (await client.get("/v1/subjects/u-1/consents", headers=ADMIN)).json()["consents"]
    assert {(c["partner"], c["status"]) for c in consents} == {(None, "granted"), ("acme", "withdrawn")}
    final = await page(client, session)
    assert len(re.findall(r"<li data-event-id=", final.text)) == 3
    assert final.text.index("You withdrew") < final.text.index("You allowed")  # newest first


async def test_the_same_form_sent_twice_applies_once(client):
    await setup_catalog(client)
    session = await enter(client)
    shown = await page(client, session)
    await save(client, session, shown.text, on={"marketing:acme"})
    await save(client, session, shown.text, on={"marketing:acme"})
    assert (await client.get("/v1/subjects/u-1/consents", headers=ADMIN)).json()["version"] == 1


async def test_a_form_without_its_csrf_token_changes_nothing(client):
    await setup_catalog(client)
    session = await enter(client)
    shown = await page(client, session)
    for csrf in ("", "0" * 64):
        refused = await save(client, session, shown.text, on={"marketing:acme"}, csrf=csrf)
        assert refused.status_code == 403 and "This form has expired" in refused.text
    other = await enter(client, "u-2")
    foreign = await save(client, other, shown.text, on={"marketing:acme"})  # u-1's token, u-2's session
    assert foreign.status_code == 403
    for subject_id in ("u-1", "u-2"):
        assert (await client.get(f"/v1/subjects/{subject_id}/consents", headers=ADMIN)).json()["version"] == 0


async def test_global_privacy_control_is_recorded_once_and_shown(client):
    await setup_catalog(client)
    session = await enter(client)
    for _ in range(2):
        answer = await page(client, session, **{"Sec-GPC": "1"})
        assert "Global Privacy Control" in answer.text
    history = (await client.get("/v1/subjects/u-1/history", headers=ADMIN)).json()["events"]
    assert [e["type"] for e in history] == ["subject.global_opt_out"]


async def test_a_session_reaches_its_own_subject_only(client):
    await setup_catalog(client)
    await client.post("/v1/subjects/u-2/consents", headers=ADMIN,
                      json={"changes": [{"purpose": "marketing", "action": "grant"}]})
    theirs = (await client.get("/v1/subjects/u-2/history", headers=ADMIN)).json()["events"][0]["event_id"]
    session = await enter(client, "u-1")
    assert "u-2" not in (await page(client, session)).text
    assert (await client.get(f"/privacy-center/receipts/{theirs}", headers=session)).status_code == 404
    export = await client.get("/privacy-center/export", headers=session)
    assert export.json()["subject_id"] == "u-1" and "attachment" in export.headers["content-disposition"]


async def test_receipts_download_and_the_second_language(client):
    await setup_catalog(client)
    session = await enter(client)
    await save(client, session, (await page(client, session)).text, on={"marketing:_"})
    event_id = re.search(r'data-event-id="([^"]+)"', (await page(client, session)).text).group(1)
    receipt = await client.get(f"/privacy-center/receipts/{event_id}", headers=session)
    assert receipt.status_code == 200 and receipt.json()["receipt"].count(".") == 2
    french = await page(client, session, **{"Accept-Language": "fr-CH, fr;q=0.9, en;q=0.8"})
    assert '<html lang="fr">' in french.text and "Vos choix de confidentialité" in french.text
    assert "Conservé 30 jours." in french.text


async def test_erasure_needs_confirmation_and_ends_every_session(client):
    await setup_catalog(client)
    session, other_tab = await enter(client), await enter(client)
    confirm = await client.get("/privacy-center/erase", headers=session)
    assert 'data-action="erase-confirm"' in confirm.text
    assert (await client.post("/privacy-center/erase", headers=session, data={"csrf": "x"})).status_code == 403
    erased = await client.post("/privacy-center/erase", headers=session, data={"csrf": form_token(confirm.text)})
    assert erased.status_code == 200 and "Your data has been erased." in erased.text
    assert "max-age=0" in erased.headers["set-cookie"].lower()
    for cookie in (session, other_tab):
        assert (await client.get("/privacy-center", headers=cookie)).status_code == 401
    history = (await client.get("/v1/subjects/u-1/history", headers=ADMIN)).json()["events"]
    assert history[-1]["type"] == "subject.erased"


async def test_an_erasure_through_the_api_ends_the_sessions_too(client):
    session = await enter(client)
    assert (await client.post("/v1/subjects/u-1/erase", headers=ADMIN)).status_code == 200
    assert (await client.get("/privacy-center", headers=session)).status_code == 401


async def test_signing_out_ends_the_session(client):
    session = await enter(client)
    shown = await page(client, session)
    out = await client.post("/privacy-center/logout", headers=session, data={"csrf": form_token(shown.text)})
    assert out.status_code == 200 and "You are signed out." in out.text
    assert (await client.get("/privacy-center", headers=session)).status_code == 401


@pytest.mark.parametrize("path", ["/privacy-center", "/privacy-center/erase", "/privacy-center/logout",
                                  "/privacy-center/export"])
async def test_no_session_no_access(client, path):
    method = client.post if path in ("/privacy-center/erase", "/privacy-center/logout") else client.get
    answer = await method(path, headers={"Cookie": "consent_privacy_center=forged"})
    assert answer.status_code == 401


async def test_a_form_with_more_fields_than_any_page_is_a_400_page(client):
    session = await enter(client)
    flood = ("shown=x%3A_&" * 3000).encode()
    answer = await client.post("/privacy-center", headers={**session, "Content-Type":
                               "application/x-www-form-urlencoded"}, content=flood, follow_redirects=False)
    assert answer.status_code == 400 and "nothing was changed" in answer.text
