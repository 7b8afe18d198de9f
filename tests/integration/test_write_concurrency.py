"""Concurrent writers on one subject: no lost update, versions without gaps, conflicts only where asked for."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tests.conftest import ADMIN


@pytest.fixture(params=[True, False], ids=["fast", "litestar"])
def settings(settings, request):
    """Every test here runs against both answers to POST .../consents: the thin ASGI layer and Litestar's."""
    return msgspec.structs.replace(settings, fast_writes=request.param)


MARKETING = {"title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P30D"}


async def test_concurrent_writes_without_if_match_all_land(client):
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    await client.put("/v1/purposes/news", headers=ADMIN, json=MARKETING)

    async def toggle(n: int) -> int:
        change = {"purpose": "marketing" if n % 2 else "news", "action": "grant",
                  "expires_at": f"2099-01-01T00:00:{n:02d}Z"}
        answer = await client.post("/v1/subjects/busy/consents", headers=ADMIN, json={"changes": [change]})
        return answer.status_code

    statuses = await asyncio.gather(*(toggle(n) for n in range(16)))
    assert statuses.count(200) + statuses.count(409) == 16
    history = (await client.get("/v1/subjects/busy/history", headers=ADMIN)).json()["events"]
    assert [e["stream_version"] for e in history] == list(range(1, len(history) + 1))
    assert len(history) == statuses.count(200)  # every answered write is in the log, nothing else
    state = (await client.get("/v1/subjects/busy/consents", headers=ADMIN)).json()
    assert state["version"] == len(history)


async def test_if_match_loser_gets_409_and_writes_nothing(client):
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    first = await client.post("/v1/subjects/race/consents", headers=ADMIN,
                              json={"changes": [{"purpose": "marketing", "action": "grant"}]})
    version = first.json()["version"]
    answers = await asyncio.gather(*(
        client.post("/v1/subjects/race/consents", headers={**ADMIN, "If-Match": f'"{version}"'},
                    json={"changes": [{"purpose": "marketing", "action": action}]})
        for action in ("withdraw", "object", "withdraw", "object")))
    assert [a.status_code for a in answers].count(200) == 1
    assert all(a.json()["code"] == "version_conflict" for a in answers if a.status_code == 409)
    history = (await client.get("/v1/subjects/race/history", headers=ADMIN)).json()["events"]
    assert len(history) == 2


async def test_many_concurrent_writers_on_one_subject_all_succeed_without_if_match(client):
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)

    async def grant(n: int):
        return await client.post("/v1/subjects/hot/consents", headers=ADMIN, json={"changes": [
            {"purpose": "marketing", "action": "grant" if n % 2 else "withdraw"}]})

    answers = await asyncio.gather(*(grant(n) for n in range(32)))
    assert [a.status_code for a in answers] == [200] * 32
