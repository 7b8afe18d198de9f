"""The partner clients against a real `consent serve` (embedded default): tokens, decisions, problems."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import TOKEN_TTL, Admin, new_subject
from consent_client import (
    AsyncPartnerClient,
    BatchDecisions,
    Decision,
    Denial,
    PartnerClient,
    Permission,
    ProblemError,
    Question,
    TokenRequestError,
)
from consent_client._protocol import basic_credentials


class Traffic:
    """What the client sent, seen from an httpx event hook: which paths, with which bearer tokens."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def record(self, request: httpx.Request) -> None:
        self.sent.append((request.url.path, request.headers.get("authorization", "")))

    def to(self, path: str) -> list[str]:
        return [authorization for sent_path, authorization in self.sent if sent_path == path]


@pytest.fixture
async def traffic_and_client(embedded: Admin, acme_credential):
    traffic = Traffic()
    async with httpx.AsyncClient(event_hooks={"request": [traffic.record]}) as http:
        yield traffic, AsyncPartnerClient(embedded.base, *acme_credential, http=http)


async def test_a_decision_is_typed_and_says_permit_or_deny_with_reasons(embedded: Admin, acme_credential):
    granted, stranger = new_subject(), new_subject()
    embedded.consent(granted, days=30)
    async with AsyncPartnerClient(embedded.base, *acme_credential) as consent:
        partial = await consent.decide(granted, "marketing", ["profile.email", "orders.history"])
        permit = await consent.decide(granted, "marketing", ["profile.email"])
        denied = await consent.decide(stranger, "marketing", ["profile.email"])

    assert isinstance(partial, Decision) and partial.decision == "partial" and not partial.allowed
    assert partial.permitted == ["profile.email"]
    assert partial.denied == [Denial(scope="orders.history", reason="scope_not_approved")]
    assert permit.decision == "permit" and permit.allowed and permit.denied == []
    # Retention ends with the grant (30 days), before the purpose's own 90.
    assert isinstance(permit.retain_until, datetime)
    assert timedelta(days=29) < permit.retain_until - datetime.now(UTC) <= timedelta(days=30)
    assert permit.purpose_version == 1 and isinstance(permit.evaluated_at, datetime)
    assert denied.decision == "deny" and not denied.allowed and denied.retain_until is None
    assert denied.denied == [Denial(scope="profile.email", reason="no_consent")]


async def test_a_batch_answers_in_order_and_permissions_list_the_purposes(embedded: Admin, acme_credential):
    granted, withdrawn = new_subject(), new_subject()
    embedded.consent(granted)
    embedded.consent(withdrawn)
    embedded.consent(withdrawn, action="withdraw")
    async with AsyncPartnerClient(embedded.base, *acme_credential) as consent:
        batch = await consent.decide_batch([
            Question(withdrawn, "marketing", ["profile.email"]),
            (granted, "marketing", ["profile.email"]),
        ])
        permissions = await consent.permissions(granted)
        none = await consent.permissions(withdrawn)

    assert isinstance(batch, BatchDecisions)
    assert [r.decision for r in batch.results] == ["deny", "permit"]
    assert batch.results[0].denied == [Denial("profile.email", "consent_withdrawn")]
    assert batch.position == max(r.position for r in batch.results)
    [permission] = permissions.permissions
    assert isinstance(permission, Permission)
    assert (permission.purpose, permission.scopes) == ("marketing", ["profile.email"])
    assert permission.retain_until is not None
    assert none.permissions == []


async def test_the_consistency_token_is_passed_through(embedded: Admin, acme_credential):
    subject = new_subject()
    written_at = embedded.consent(subject)
    async with AsyncPartnerClient(embedded.base, *acme_credential) as consent:
        decision = await consent.decide(subject, "marketing", ["profile.email"], min_position=written_at)
        batch = await consent.decide_batch([(subject, "marketing", ["profile.email"])], min_position=written_at)
        permissions = await consent.permissions(subject, min_position=written_at)
        assert decision.allowed and decision.position >= written_at
        assert batch.results[0].allowed and batch.position >= written_at
        assert permissions.permissions and permissions.position >= written_at

        # Each route really sends it: a position the log has not reached is refused by the server.
        beyond = written_at + 1_000_000
        for ask in (lambda: consent.decide(subject, "marketing", ["profile.email"], min_position=beyond),
                    lambda: consent.decide_batch([(subject, "marketing", ["profile.email"])], min_position=beyond),
                    lambda: consent.permissions(subject, min_position=beyond)):
            with pytest.raises(ProblemError) as refused:
                await ask()
            assert (refused.value.status, refused.value.code) == (422, "unknown_position")
            assert str(beyond) in refused.value.detail


async def test_time_travel_passes_at(embedded: Admin, acme_credential):
    subject = new_subject()
    before = datetime.now(UTC) - timedelta(seconds=1)
    embedded.consent(subject)
    async with AsyncPartnerClient(embedded.base, *acme_credential) as consent:
        then = await consent.decide(subject, "marketing", ["profile.email"], at=before)
        now = await consent.decide(subject, "marketing", ["profile.email"])
    assert then.decision == "deny" and abs(then.evaluated_at - before) < timedelta(seconds=1)
    assert now.decision == "permit"


async def test_problems_carry_their_code_status_title_and_detail(embedded: Admin):
    decisions_only = embedded.credential(scopes=["decisions:read"])
    async with AsyncPartnerClient(embedded.base, *decisions_only) as consent:
        with pytest.raises(ProblemError) as no_scope:
            await consent.permissions(new_subject())
        with pytest.raises(ProblemError) as malformed:
            await consent.decide(new_subject(), "marketing", [])

    assert (no_scope.value.status, no_scope.value.code) == (403, "insufficient_scope")
    assert no_scope.value.title and no_scope.value.detail and no_scope.value.request_id
    assert "insufficient_scope" in str(no_scope.value)
    assert (malformed.value.status, malformed.value.code) == (400, "validation_failed")
    assert malformed.value.body["code"] == "validation_failed"


async def test_a_wrong_secret_is_a_token_error_with_the_oauth_code(embedded: Admin, acme_credential):
    client_id, _ = acme_credential
    async with AsyncPartnerClient(embedded.base, client_id, "not-the-secret") as consent:
        with pytest.raises(TokenRequestError) as refused:
            await consent.decide(new_subject(), "marketing", ["profile.email"])
    assert (refused.value.status, refused.value.code) == (401, "invalid_client")


def test_basic_credentials_are_form_encoded_first():
    # RFC 6749 §2.3.1, which plain HTTP Basic helpers skip: the server unquotes each half after the split.
    encoded = basic_credentials("client:1", "p+ss%word").removeprefix("Basic ")
    assert base64.b64decode(encoded) == b"client%3A1:p%2Bss%25word"


async def test_the_token_is_reused_then_renewed_before_it_expires(traffic_and_client):
    traffic, consent = traffic_and_client
    subject = new_subject()
    for _ in range(3):
        await consent.decide(subject, "marketing", ["profile.email"])
    assert len(traffic.to("/v1/oauth/token")) == 1
    first = traffic.to("/v1/decisions")
    assert len(set(first)) == 1

    # Renewed a second before expiry (the least margin), so never sent expired: no call was refused
    # and retried, which would show as a fifth decision request.
    await asyncio.sleep(TOKEN_TTL - 1 + 0.1)
    await consent.decide(subject, "marketing", ["profile.email"])
    assert len(traffic.to("/v1/oauth/token")) == 2
    sent = traffic.to("/v1/decisions")
    assert len(sent) == 4 and sent[-1] != first[0]


async def test_concurrent_calls_share_one_token_request(traffic_and_client):
    traffic, consent = traffic_and_client
    answers = await asyncio.gather(*(consent.decide(new_subject(), "marketing", ["profile.email"])
                                     for _ in range(20)))
    assert all(a.decision == "deny" for a in answers)
    assert len(traffic.to("/v1/oauth/token")) == 1


async def test_a_revoked_token_is_replaced_once_and_the_call_succeeds(embedded: Admin, acme_credential,
                                                                      traffic_and_client):
    traffic, consent = traffic_and_client
    subject = new_subject()
    embedded.consent(subject)
    await consent.decide(subject, "marketing", ["profile.email"])
    token = traffic.to("/v1/decisions")[0].removeprefix("Bearer ")
    # Revoked behind the client's back (another process of the partner, say).
    revoked = httpx.post(f"{embedded.base}/v1/oauth/revoke", data={"token": token}, auth=acme_credential)
    assert revoked.status_code == 200

    decision = await consent.decide(subject, "marketing", ["profile.email"])
    assert decision.allowed
    sent = traffic.to("/v1/decisions")
    assert len(sent) == 3 and sent[1] == f"Bearer {token}" and sent[2] != sent[1]
    assert len(traffic.to("/v1/oauth/token")) == 2


async def test_revoke_token_gives_it_up_and_the_next_call_gets_another(traffic_and_client):
    traffic, consent = traffic_and_client
    await consent.permissions(new_subject())
    await consent.revoke_token()
    assert traffic.to("/v1/oauth/revoke")
    await consent.permissions(new_subject())
    assert len(traffic.to("/v1/oauth/token")) == 2
    assert len(traffic.to("/v1/oauth/revoke")) == 1


async def test_a_narrower_scope_is_asked_for(embedded: Admin, acme_credential):
    async with AsyncPartnerClient(embedded.base, *acme_credential, scopes=["permissions:read"]) as consent:
        assert (await consent.permissions(new_subject())).permissions == []
        with pytest.raises(ProblemError) as refused:
            await consent.decide(new_subject(), "marketing", ["profile.email"])
    assert refused.value.code == "insufficient_scope"


def test_the_sync_client_answers_the_same(embedded: Admin, acme_credential):
    subject = new_subject()
    written_at = embedded.consent(subject)
    tokens = []
    with httpx.Client(event_hooks={"request": [lambda r: tokens.append(r.url.path)]}) as http:
        consent = PartnerClient(embedded.base, *acme_credential, http=http)
        decision = consent.decide(subject, "marketing", ["profile.email", "orders.history"], min_position=written_at)
        batch = consent.decide_batch([(subject, "marketing", ["profile.email"])])
        permissions = consent.permissions(subject)
        with pytest.raises(ProblemError) as refused:
            consent.decide(subject, "marketing", ["profile.email"], min_position=written_at + 1_000_000)
        consent.close()  # leaves a client it did not make open
        assert not http.is_closed
    assert decision.decision == "partial" and decision.position >= written_at
    assert batch.results[0].allowed
    assert [p.purpose for p in permissions.permissions] == ["marketing"]
    assert refused.value.code == "unknown_position"
    assert tokens.count("/v1/oauth/token") == 1


def test_the_sync_client_reports_a_wrong_secret(embedded: Admin, acme_credential):
    with PartnerClient(embedded.base, acme_credential[0], "wrong") as consent, \
            pytest.raises(TokenRequestError) as refused:
        consent.permissions(new_subject())
    assert refused.value.code == "invalid_client" and refused.value.status == 401
