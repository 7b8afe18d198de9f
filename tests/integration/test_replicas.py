"""Two service processes over one PostgreSQL and one NATS: what one commits, the other honours."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import pytest

from tests.conftest import ADMIN, NATS_URL, empty_tables
from tests.integration.test_decisions_api import partner_headers, setup_catalog
from tests.integration.test_events_faults import free_port, ready, start_service, wait_until

MARKETING = {"title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P30D"}


@pytest.fixture
async def replicas(postgresql_url, nats_names):
    await empty_tables(postgresql_url)
    stream, prefix = nats_names
    ports = [free_port(), free_port()]
    services = [start_service(postgresql_url, NATS_URL, stream, prefix, port) for port in ports]
    clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=ADMIN) for port in ports]
    try:
        for port in ports:
            await wait_until(lambda port=port: ready(f"http://127.0.0.1:{port}"), what="replica ready")
        yield clients
    finally:
        for client in clients:
            await client.aclose()
        for service in services:
            service.kill()
            service.wait(timeout=10)


async def test_catalog_changes_reach_the_other_replica(replicas):
    a, b = replicas
    await a.put("/v1/scopes/orders", json={"title": "O", "description": "", "sensitivity": "low"})
    await a.put("/v1/purposes/marketing", json=MARKETING)
    await a.put("/v1/partners/acme", json={"name": "Acme", "status": "active", "data_uses": {"marketing": ["orders"]}})

    async def b_knows() -> bool:
        return (await b.get("/v1/partners/acme")).status_code == 200

    await wait_until(b_knows, timeout=5, what="replica B to learn the catalog")
    # A consent write through B validates against what A defined.
    granted = await b.post("/v1/subjects/u/consents", json={
        "changes": [{"purpose": "marketing", "partner": "acme", "action": "grant"}]})
    assert granted.status_code == 200, granted.text

    await a.post("/v1/partners/acme/suspend")
    question = {"subject_id": "u", "purpose": "marketing", "scopes": ["orders"], "partner": "acme"}

    async def b_denies() -> bool:
        answer = (await b.post("/v1/decisions", json=question)).json()
        return answer["denied"] == [{"scope": "orders", "reason": "partner_inactive"}]

    await wait_until(b_denies, timeout=5, what="replica B to see the suspension")


async def test_min_position_from_a_means_no_stale_answer_on_b(replicas):
    a, b = replicas
    await a.put("/v1/scopes/orders", json={"title": "O", "description": "", "sensitivity": "low"})
    await a.put("/v1/purposes/marketing", json=MARKETING)
    await wait_until(lambda: _has_purpose(b), timeout=5, what="replica B to learn the purpose")
    question = {"subject_id": "z", "purpose": "marketing", "scopes": ["orders"]}
    stale = 0
    for n in range(40):
        action = "grant" if n % 2 == 0 else "withdraw"
        written = (await a.post("/v1/subjects/z/consents", json={
            "changes": [{"purpose": "marketing", "action": action}]})).json()
        answer = (await b.post("/v1/decisions", json={**question, "min_position": written["position"]})).json()
        assert answer["position"] >= written["position"]
        stale += answer["decision"] != ("permit" if action == "grant" else "deny")
    assert stale == 0


async def test_without_min_position_b_follows_within_the_propagation_bound(replicas):
    a, b = replicas
    await a.put("/v1/scopes/orders", json={"title": "O", "description": "", "sensitivity": "low"})
    await a.put("/v1/purposes/marketing", json=MARKETING)
    await wait_until(lambda: _has_purpose(b), timeout=5, what="replica B to learn the purpose")
    question = {"subject_id": "p", "purpose": "marketing", "scopes": ["orders"]}
    delays = []
    for n in range(20):
        action = "grant" if n % 2 == 0 else "withdraw"
        expected = "permit" if action == "grant" else "deny"
        await b.post("/v1/decisions", json=question)  # B holds the subject in its cache
        await a.post("/v1/subjects/p/consents", json={"changes": [{"purpose": "marketing", "action": action}]})
        started = time.perf_counter()
        while (await b.post("/v1/decisions", json=question)).json()["decision"] != expected:
            assert time.perf_counter() - started < 2.0, "replica B did not follow within 2 s"
        delays.append((time.perf_counter() - started) * 1000)
    print(f"propagation A->B seen by polling B: p50 {statistics.median(delays):.1f} ms, max {max(delays):.1f} ms")


async def _has_purpose(client) -> bool:
    return (await client.get("/v1/purposes/marketing")).status_code == 200


async def test_a_restarted_replica_answers_the_new_state_once_ready(postgresql_url, nats_names):
    await empty_tables(postgresql_url)
    stream, prefix = nats_names
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    a_service = start_service(postgresql_url, NATS_URL, stream, prefix, ports[0])
    b_service = start_service(postgresql_url, NATS_URL, stream, prefix, ports[1])
    a = httpx.AsyncClient(base_url=bases[0], headers=ADMIN)
    b = httpx.AsyncClient(base_url=bases[1], headers=ADMIN)
    try:
        for base in bases:
            await wait_until(lambda base=base: ready(base), what="replica ready")
        await a.put("/v1/scopes/orders", json={"title": "O", "description": "", "sensitivity": "low"})
        await a.put("/v1/purposes/marketing", json=MARKETING)
        await a.post("/v1/subjects/r/consents", json={"changes": [{"purpose": "marketing", "action": "grant"}]})
        question = {"subject_id": "r", "purpose": "marketing", "scopes": ["orders"]}
        await wait_until(lambda: _has_purpose(b), timeout=5, what="replica B to learn the purpose")
        assert (await b.post("/v1/decisions", json=question)).json()["decision"] == "permit"

        b_service.kill()
        b_service.wait(timeout=10)
        await a.post("/v1/subjects/r/consents", json={"changes": [{"purpose": "marketing", "action": "withdraw"}]})
        b_service = start_service(postgresql_url, NATS_URL, stream, prefix, ports[1])
        await wait_until(lambda: ready(bases[1]), what="replica B ready again")
        answer = (await b.post("/v1/decisions", json=question)).json()
        assert answer["denied"] == [{"scope": "orders", "reason": "consent_withdrawn"}]
    finally:
        await a.aclose()
        await b.aclose()
        for service in (a_service, b_service):
            service.kill()
            service.wait(timeout=10)


async def test_credential_and_token_revocations_reach_the_other_replica(replicas):
    """B has used the credential (so it holds it as valid in memory); revocations through A still reach it."""
    a, b = replicas
    await a.put("/v1/scopes/orders", json={"title": "O", "description": "", "sensitivity": "low"})
    await a.put("/v1/purposes/marketing", json=MARKETING)
    await a.put("/v1/partners/acme", json={"name": "Acme", "status": "active", "data_uses": {"marketing": ["orders"]}})
    await wait_until(lambda: _has_partner(b), timeout=5, what="replica B to learn the partner")
    issued = (await a.post("/v1/partners/acme/credentials")).json()
    form = {"client_id": issued["client_id"], "client_secret": issued["client_secret"]}
    tokens = [(await b.post("/v1/oauth/token", data={"grant_type": "client_credentials", **form},
                            headers={"Authorization": ""})).json()["access_token"] for _ in range(2)]
    question = {"subject_id": "u", "purpose": "marketing", "scopes": ["orders"]}

    async def status_on_b(access_token: str) -> int:
        return (await b.post("/v1/decisions", json=question,
                             headers={"Authorization": f"Bearer {access_token}"})).status_code

    assert [await status_on_b(t) for t in tokens] == [200, 200]

    revoked = await a.post("/v1/oauth/revoke", data={**form, "token": tokens[0]}, headers={"Authorization": ""})
    assert revoked.status_code == 200
    started = time.perf_counter()
    await wait_until(lambda: _refused(status_on_b, tokens[0]), timeout=2, what="B to refuse the revoked token")
    token_lag = time.perf_counter() - started
    assert await status_on_b(tokens[1]) == 200

    assert (await a.delete(f"/v1/partners/acme/credentials/{issued['client_id']}")).status_code == 204
    await wait_until(lambda: _refused(status_on_b, tokens[1]), timeout=2, what="B to refuse the credential's tokens")
    print(f"token revocation seen on B after {token_lag * 1000:.1f} ms")


async def _refused(status, access_token: str) -> bool:
    return await status(access_token) == 401


async def _has_partner(client) -> bool:
    return (await client.get("/v1/partners/acme")).status_code == 200


async def live_replicas(client: httpx.AsyncClient) -> int:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("consent_replicas_live "):
            return int(float(line.split()[1]))
    raise AssertionError("no consent_replicas_live gauge")


async def test_the_partner_rate_limit_holds_for_the_deployment_and_follows_its_replicas(postgresql_url, nats_names):
    """20 requests a second for the deployment: two replicas take 10 each; one dies, the other takes all 20."""
    await empty_tables(postgresql_url)
    stream, prefix = nats_names
    ports = [free_port(), free_port()]
    services = [start_service(postgresql_url, NATS_URL, stream, prefix, port, partner_rate_limit="20")
                for port in ports]
    a, b = (httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=ADMIN) for port in ports)
    try:
        for port in ports:
            await wait_until(lambda port=port: ready(f"http://127.0.0.1:{port}"), what="replica ready")
        await setup_catalog(a)
        await wait_until(lambda: _knows(b, "/v1/partners/acme"), timeout=5, what="B to learn the catalog")
        acme, _ = await partner_headers(a, "acme")  # the shared signing key: valid on both
        await wait_until(lambda: _counts(a, b, 2), timeout=10, what="each replica to hear the other")
        question = {"subject_id": "u", "purpose": "marketing", "scopes": ["orders"]}

        async def burst(client: httpx.AsyncClient, size: int = 30) -> tuple[int, float]:
            started = time.monotonic()
            answers = await asyncio.gather(*(client.post("/v1/decisions", headers=acme, json=question)
                                             for _ in range(size)))
            assert {answer.status_code for answer in answers} <= {200, 429}
            return sum(answer.status_code == 200 for answer in answers), time.monotonic() - started

        await asyncio.sleep(1.0)  # full buckets
        (on_a, took_a), (on_b, took_b) = await asyncio.gather(burst(a), burst(b))
        refill = 10 * max(took_a, took_b)  # each replica refills at its share, 10/s
        assert 10 <= on_a <= 10 + refill + 1 and 10 <= on_b <= 10 + refill + 1, (on_a, on_b, refill)

        services[1].kill()  # no goodbye: A notices the silence
        started = time.monotonic()
        await wait_until(lambda: _counts(a, None, 1), timeout=8, what="A to count itself alone")
        alone_after = time.monotonic() - started
        await asyncio.sleep(1.0)
        alone, took = await burst(a)
        assert 20 <= alone <= 20 + 20 * took + 1, (alone, took)
        print(f"\nshared: {on_a} + {on_b} of 60 allowed; alone after {alone_after:.1f} s: {alone} of 30")
    finally:
        await a.aclose()
        await b.aclose()
        for service in services:
            service.kill()
            service.wait(timeout=10)


async def _knows(client: httpx.AsyncClient, path: str) -> bool:
    return (await client.get(path)).status_code == 200


async def _counts(a: httpx.AsyncClient, b: httpx.AsyncClient | None, live: int) -> bool:
    return all([await live_replicas(client) == live for client in (a, b) if client is not None])
