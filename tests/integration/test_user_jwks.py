"""End-user tokens from an identity provider: RS256/ES256 verified against its JWKS (issue 6, item 4).

Real keys from `cryptography`; the JWKS is served by a small HTTP server started here, or read from a file.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from litestar.testing import AsyncTestClient

from consent.adapters.jwks import JwksKeys, read_jwks
from consent.api.app import create_app
from consent.config import Settings
from tests.conftest import ADMIN, ADMIN_KEY, SHARED_KEYS, USER_TOKEN_SECRET, user_headers
from tests.integration.test_auth_api import assert_forbidden, assert_unauthorized

ISSUER = "https://idp.example/"
AUDIENCE = "consent-api"


class SigningKey:
    """An identity provider's key pair and the JWK it publishes."""

    def __init__(self, kid: str, private, algorithm: str, to_jwk) -> None:
        self.kid, self.private, self.algorithm = kid, private, algorithm
        self.jwk = {**to_jwk(private.public_key(), as_dict=True), "kid": kid, "use": "sig", "alg": algorithm}
        self.public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo)


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256",
                      RSAAlgorithm.to_jwk)


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, ec.generate_private_key(ec.SECP256R1()), "ES256", ECAlgorithm.to_jwk)


RSA, EC, ROTATED, STRANGER = rsa_key("rsa-1"), ec_key("ec-1"), rsa_key("rsa-2"), rsa_key("stranger")


def claims(**overrides) -> dict:
    now = int(time.time())
    values = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "iat": now, "nbf": now, "exp": now + 300, **overrides}
    return {name: value for name, value in values.items() if value is not None}  # None leaves a claim out


def idp_token(key: SigningKey = RSA, kid: str | None = None, algorithm: str | None = None, **overrides) -> str:
    return jwt.encode(claims(**overrides), key.private, algorithm=algorithm or key.algorithm,
                      headers={"kid": kid or key.kid})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict, payload: dict, secret: bytes | None) -> str:
    """A token PyJWT would refuse to make: HMAC keyed with public key material, or no signature at all."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()) if secret else ""
    return f"{signing_input}.{signature}"


class IdentityProvider:
    """Serves a JWKS over HTTP on a free local port and counts the fetches."""

    def __init__(self, keys: list[SigningKey], delay: float = 0.0) -> None:
        self.keys, self.delay, self.fetches = keys, delay, 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                provider.fetches += 1
                time.sleep(provider.delay)
                body = json.dumps({"keys": [key.jwk for key in provider.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider([RSA, EC])
    yield provider
    provider.close()


def idp_settings(database_url: str, jwks_url: str, **overrides) -> Settings:
    return Settings(**{**SHARED_KEYS, "database_url": database_url, "admin_keys": (ADMIN_KEY,),
                       "user_token_secret": USER_TOKEN_SECRET, "user_jwks_url": jwks_url,
                       "user_token_issuer": ISSUER, "user_token_audience": AUDIENCE,
                       # Every unknown key id fetches again, so that rotation shows at once.
                       "user_jwks_min_refetch_seconds": 0.0, **overrides})


@pytest.fixture
def settings(database_url: str, idp: IdentityProvider) -> Settings:
    return idp_settings(database_url, idp.url)


def write_jwks(path: Path, keys: list[SigningKey]) -> None:
    path.write_text(json.dumps({"keys": [key.jwk for key in keys]}))


# Accepted


@pytest.mark.parametrize("key", [RSA, EC], ids=["RS256", "ES256"])
async def test_idp_token_reaches_its_own_subject_only(client, key):
    user = bearer(idp_token(key))
    own = await client.get("/v1/subjects/u-1/consents", headers=user)
    assert own.status_code == 200, own.text
    assert own.json()["subject_id"] == "u-1"
    assert (await client.get("/v1/subjects/u-1/history", headers=user)).status_code == 200
    assert_forbidden(await client.get("/v1/subjects/u-2/consents", headers=user))
    assert_forbidden(await client.get("/v1/subjects/u-2/history", headers=user))
    assert_forbidden(await client.put("/v1/scopes/profile", headers=user,
                                      json={"title": "P", "description": "", "sensitivity": "low"}))


@pytest.mark.parametrize("source", ["file url", "file path"])
async def test_jwks_from_a_file(database_url, tmp_path, source):
    path = tmp_path / "jwks.json"
    write_jwks(path, [RSA])
    settings = idp_settings(database_url, path.as_uri() if source == "file url" else str(path))
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await client.get("/v1/subjects/u-1/consents", headers=bearer(idp_token(RSA)))).status_code == 200
        assert_unauthorized(await client.get("/v1/subjects/u-1/consents", headers=bearer(idp_token(EC))))
        # The provider rotates: the file now holds the EC key only.
        write_jwks(path, [EC])
        assert (await client.get("/v1/subjects/u-1/consents", headers=bearer(idp_token(EC)))).status_code == 200


async def test_key_rotation_at_the_provider_is_picked_up(client, idp):
    rotated = bearer(idp_token(ROTATED, sub="u-1"))
    assert_unauthorized(await client.get("/v1/subjects/u-1/consents", headers=rotated))
    idp.keys = [ROTATED, RSA]  # a new kid appears in the JWKS
    assert (await client.get("/v1/subjects/u-1/consents", headers=rotated)).status_code == 200


async def test_key_removed_at_the_provider_stops_at_the_cache_lifetime(database_url, idp):
    settings = idp_settings(database_url, idp.url, user_jwks_cache_seconds=0.3)
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await client.get("/v1/subjects/u-1/consents", headers=bearer(idp_token(RSA)))).status_code == 200
        idp.keys = [EC]
        await asyncio.sleep(0.4)
        fresh = idp_token(RSA, jti="another")  # not the token verified and cached above
        assert_unauthorized(await client.get("/v1/subjects/u-1/consents", headers=bearer(fresh)))


async def test_within_the_leeway_clock_skew_is_forgiven(client):
    now = int(time.time())
    for token in (idp_token(exp=now - 10), idp_token(nbf=now + 10), idp_token(iat=now + 10)):
        assert (await client.get("/v1/subjects/u-1/consents", headers=bearer(token))).status_code == 200


async def test_hs256_tokens_keep_working_alongside(client):
    assert (await client.get("/v1/subjects/u-1/consents", headers=user_headers("u-1"))).status_code == 200
    assert (await client.get("/v1/purposes", headers=ADMIN)).status_code == 200


async def test_cached_idp_token_stops_at_its_expiry(database_url, idp):
    async with AsyncTestClient(create_app(idp_settings(database_url, idp.url, user_token_leeway=0.0))) as client:
        token = idp_token(exp=int(time.time()) + 2)
        assert (await client.get("/v1/subjects/u-1/consents", headers=bearer(token))).status_code == 200
        await asyncio.sleep(jwt.decode(token, options={"verify_signature": False})["exp"] - time.time() + 0.05)
        assert_unauthorized(await client.get("/v1/subjects/u-1/consents", headers=bearer(token)))


# Refused


def bad_tokens() -> dict[str, str]:
    now = int(time.time())
    good = idp_token()
    forged_payload = b64(json.dumps(claims(sub="u-2")).encode())
    return {
        "expired": idp_token(exp=now - 120),
        "not yet valid": idp_token(nbf=now + 120),
        "issued in the future": idp_token(iat=now + 120),
        "wrong iss": idp_token(iss="https://evil.example/"),
        "no iss": idp_token(iss=None),
        "wrong aud": idp_token(aud="another-api"),
        "no aud": idp_token(aud=None),
        "no exp": idp_token(exp=None),
        "no sub": idp_token(sub=None),
        "overlong sub": idp_token(sub="u" * 129),
        "empty sub": idp_token(sub=""),
        "numeric sub": jwt.encode({**claims(), "sub": 42}, RSA.private, algorithm="RS256",
                                  headers={"kid": RSA.kid}),
        "unknown kid": idp_token(STRANGER),
        "known kid, other key": idp_token(STRANGER, kid=RSA.kid),
        "no kid": jwt.encode(claims(), RSA.private, algorithm="RS256"),
        "tampered payload": ".".join([good.split(".")[0], forged_payload, good.split(".")[2]]),
        "alg none": hand_made({"alg": "none", "kid": RSA.kid}, claims(), None),
        "HS256 keyed with the public key's PEM": hand_made({"alg": "HS256", "kid": RSA.kid}, claims(),
                                                           RSA.public_pem),
        "HS256 keyed with the JWK": hand_made({"alg": "HS256", "kid": RSA.kid}, claims(),
                                              json.dumps(RSA.jwk).encode()),
        "RS256 header on the EC key": idp_token(RSA, kid=EC.kid),
        "ES256 header on the RSA key": idp_token(EC, kid=RSA.kid),
        "RS384 on the RSA key": idp_token(RSA, algorithm="RS384"),
        "PS256 on the RSA key": idp_token(RSA, algorithm="PS256"),
    }


async def test_bad_idp_tokens_are_401(client):
    for name, token in bad_tokens().items():
        for answer in (await client.get("/v1/subjects/u-1/consents", headers=bearer(token)),
                       await client.get("/v1/purposes", headers=bearer(token))):
            assert answer.status_code == 401, f"{name}: {answer.status_code} {answer.text}"
            assert_unauthorized(answer)


async def test_without_a_jwks_idp_tokens_are_401(client_without_jwks):
    assert_unauthorized(await client_without_jwks.get("/v1/subjects/u-1/consents", headers=bearer(idp_token())))


@pytest.fixture
async def client_without_jwks(database_url):
    settings = Settings(database_url=database_url, admin_keys=(ADMIN_KEY,), user_token_secret=USER_TOKEN_SECRET,
                        **SHARED_KEYS)
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


# The provider: fetched off the event loop, rate-limited, survives an outage


async def test_provider_down_at_start_up_does_not_stop_the_service(database_url):
    closed = IdentityProvider([RSA])
    closed.close()  # nothing listens on its port any more
    async with AsyncTestClient(create_app(idp_settings(database_url, closed.url))) as client:
        assert (await client.get("/v1/purposes", headers=ADMIN)).status_code == 200
        assert (await client.get("/v1/subjects/u-1/consents", headers=user_headers("u-1"))).status_code == 200
        assert_unauthorized(await client.get("/v1/subjects/u-1/consents", headers=bearer(idp_token())))


async def test_a_flood_of_unknown_kids_does_not_hammer_the_provider(database_url, idp):
    settings = idp_settings(database_url, idp.url, user_jwks_min_refetch_seconds=3600.0)
    async with AsyncTestClient(create_app(settings)) as client:
        assert idp.fetches == 1  # at start-up
        for n in range(20):
            token = idp_token(STRANGER, kid=f"random-{n}")
            assert_unauthorized(await client.get("/v1/subjects/u-1/consents", headers=bearer(token)))
        assert idp.fetches == 1


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_unknown_kids_fetch_at_most_once_per_interval(idp):
    clock = FakeMonotonic()
    keys = JwksKeys(idp.url, lifetime=300, min_refetch=10, now=clock)
    assert await keys.refresh()
    assert (await keys.get(RSA.kid)).key_id == RSA.kid
    for n in range(50):
        assert await keys.get(f"made-up-{n}") is None
    assert idp.fetches == 1
    clock.now += 10
    idp.keys = [ROTATED]
    assert await keys.get(ROTATED.kid) is not None  # one fetch, and the new key is there
    assert [await keys.get(f"again-{n}") for n in range(50)] == [None] * 50
    assert idp.fetches == 2
    clock.now += 300  # the lifetime is over: the next use fetches, and the removed key is gone
    assert await keys.get(RSA.kid) is None
    assert idp.fetches == 3


async def test_a_failed_fetch_keeps_the_known_keys(idp):
    clock = FakeMonotonic()
    keys = JwksKeys(idp.url, lifetime=300, min_refetch=10, now=clock)
    assert await keys.refresh()
    idp.close()
    clock.now += 400
    assert await keys.get(RSA.kid) is not None  # stale, the provider unreachable: still the last good keys
    assert idp.fetches == 1


async def test_fetching_does_not_block_the_event_loop():
    slow = IdentityProvider([RSA], delay=0.5)
    try:
        keys = JwksKeys(slow.url, lifetime=300, min_refetch=0)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        assert await keys.get(RSA.kid) is not None
        ticker.cancel()
        assert ticks >= 20  # the loop kept running during the half-second fetch
    finally:
        slow.close()


def test_only_rs256_and_es256_signing_keys_are_kept(tmp_path):
    symmetric = {"kty": "oct", "kid": "hmac", "k": b64(b"0123456789abcdef0123456789abcdef")}
    p384 = {**ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True),
            "kid": "p384"}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [
        RSA.jwk, EC.jwk, symmetric, p384, {**ROTATED.jwk, "use": "enc"}, {**STRANGER.jwk, "alg": "RS512"},
        {k: v for k, v in ROTATED.jwk.items() if k != "kid"}, "not a key"]}))
    keys = read_jwks(str(path))
    assert {kid: key.algorithm_name for kid, key in keys.items()} == {"rsa-1": "RS256", "ec-1": "ES256"}


# Configuration


@pytest.mark.parametrize("missing", ["CONSENT_USER_TOKEN_ISSUER", "CONSENT_USER_TOKEN_AUDIENCE"])
def test_a_jwks_without_issuer_or_audience_refuses_to_start(missing):
    env = {"CONSENT_USER_JWKS_URL": "https://idp.example/jwks.json", "CONSENT_USER_TOKEN_ISSUER": ISSUER,
           "CONSENT_USER_TOKEN_AUDIENCE": AUDIENCE}
    del env[missing]
    with pytest.raises(ValueError, match="CONSENT_USER_TOKEN_ISSUER and CONSENT_USER_TOKEN_AUDIENCE"):
        Settings.from_env(env)


def test_jwks_settings_from_the_environment():
    settings = Settings.from_env({"CONSENT_USER_JWKS_URL": "https://idp.example/jwks.json",
                                  "CONSENT_USER_TOKEN_ISSUER": ISSUER, "CONSENT_USER_TOKEN_AUDIENCE": AUDIENCE,
                                  "CONSENT_USER_TOKEN_LEEWAY": "5"})
    assert (settings.user_jwks_url, settings.user_token_issuer, settings.user_token_audience,
            settings.user_token_leeway) == ("https://idp.example/jwks.json", ISSUER, AUDIENCE, 5.0)
    assert Settings.from_env({}).user_token_leeway == 30.0
    with pytest.raises(ValueError, match="https://, http:// or file://"):
        Settings.from_env({"CONSENT_USER_JWKS_URL": "ftp://idp.example/jwks.json",
                           "CONSENT_USER_TOKEN_ISSUER": ISSUER, "CONSENT_USER_TOKEN_AUDIENCE": AUDIENCE})
