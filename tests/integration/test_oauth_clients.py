"""Standard OAuth 2.0 clients: HTTP Basic client authentication (RFC 6749 §2.3.1) beside form credentials,
and the authorization server metadata that tells a client library where and how (RFC 8414)."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus, urlsplit

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from consent.app.partner_access import PARTNER_SCOPES
from tests.conftest import ADMIN
from tests.integration.test_decisions_api import setup_catalog

METADATA = "/.well-known/oauth-authorization-server"
GRANT = {"grant_type": "client_credentials"}


async def credential(client) -> tuple[str, str]:
    await setup_catalog(client)
    issued = await client.post("/v1/partners/acme/credentials", headers=ADMIN)
    assert issued.status_code == 201, issued.text
    return issued.json()["client_id"], issued.json()["client_secret"]


def basic(user: str, password: str) -> dict[str, str]:
    """An Authorization header as RFC 6749 §2.3.1 builds it: each part form-urlencoded, then base64."""
    pair = f"{quote_plus(user)}:{quote_plus(password)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def raw_basic(decoded: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(decoded).decode()}


async def works(client, access_token: str) -> bool:
    answer = await client.get("/v1/purposes", headers={"Authorization": f"Bearer {access_token}"})
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


async def test_a_client_library_authenticates_with_http_basic(client):
    client_id, secret = await credential(client)
    auth = httpx.BasicAuth(client_id, secret)  # what httpx, requests and most OAuth libraries send
    issued = await client.post("/v1/oauth/token", data=GRANT, auth=auth)
    assert issued.status_code == 200, issued.text
    assert issued.headers["cache-control"] == "no-store" and issued.headers["pragma"] == "no-cache"
    access_token = issued.json()["access_token"]
    assert await works(client, access_token)
    revoked = await client.post("/v1/oauth/revoke", data={"token": access_token}, auth=auth)
    assert revoked.status_code == 200, revoked.text
    assert not await works(client, access_token)


async def test_basic_credentials_are_form_urlencoded_before_base64(client):
    client_id, secret = await credential(client)
    # Every character percent-encoded, as a client may: the server decodes what RFC 6749 §2.3.1 encodes.
    encoded_id, encoded_secret = ("".join(f"%{byte:02X}" for byte in part.encode()) for part in (client_id, secret))
    issued = await client.post("/v1/oauth/token", data=GRANT | {"scope": "catalog:read"},
                               headers=raw_basic(f"{encoded_id}:{encoded_secret}".encode()))
    assert issued.status_code == 200, issued.text
    assert issued.json()["scope"] == "catalog:read"
    # '+' is a space in form-urlencoding: a secret with its last character swapped for '+' is another secret.
    plus = await client.post("/v1/oauth/token", data=GRANT, headers=raw_basic(f"{client_id}:{secret[:-1]}+".encode()))
    assert plus.status_code == 401 and plus.json()["error"] == "invalid_client"
    # The form's client_id may come along, if it is the same client (some libraries send it).
    same = await client.post("/v1/oauth/token", data=GRANT | {"client_id": client_id}, headers=basic(client_id, secret))
    assert same.status_code == 200, same.text


async def test_a_wrong_basic_secret_is_401_with_a_basic_challenge(client):
    client_id, secret = await credential(client)
    answer = await client.post("/v1/oauth/token", data=GRANT, headers=basic(client_id, secret + "x"))
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    assert answer.headers["www-authenticate"].startswith('Basic realm="')


@pytest.mark.parametrize("route", ["/v1/oauth/token", "/v1/oauth/revoke"])
async def test_basic_and_form_credentials_at_once_are_refused(client, route):
    client_id, secret = await credential(client)
    form = GRANT | {"token": "t", "client_id": client_id, "client_secret": secret}
    answer = await client.post(route, data=form, headers=basic(client_id, secret))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    other_id = await client.post(route, data=GRANT | {"token": "t", "client_id": "cl_other"},
                                 headers=basic(client_id, secret))
    assert other_id.status_code == 400 and other_id.json()["error"] == "invalid_request"


MALFORMED_BASIC = {
    "not base64": "Basic !!!not-base64!!!",
    "nothing": "Basic",
    "no colon": "Basic " + base64.b64encode(b"cl_client-without-secret").decode(),
    "empty id": "Basic " + base64.b64encode(b":secret").decode(),
    "empty secret": "Basic " + base64.b64encode(b"cl_abc:").decode(),
    "not UTF-8": "Basic " + base64.b64encode(b"cl_\xff:\xfe").decode(),
    "overlong": "Basic " + base64.b64encode(b"cl_a:" + b"s" * 5000).decode(),
}


@pytest.mark.parametrize("route", ["/v1/oauth/token", "/v1/oauth/revoke"])
@pytest.mark.parametrize("header", MALFORMED_BASIC.values(), ids=MALFORMED_BASIC.keys())
async def test_malformed_basic_credentials_are_401_invalid_client(client, route, header):
    answer = await client.post(route, data=GRANT | {"token": "t"}, headers={"Authorization": header})
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_client"
    assert answer.headers["www-authenticate"].startswith('Basic realm="')


async def test_form_credentials_still_work_and_other_schemes_are_no_client_authentication(client):
    client_id, secret = await credential(client)
    form = GRANT | {"client_id": client_id, "client_secret": secret}
    answer = await client.post("/v1/oauth/token", data=form, headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.text


async def test_the_metadata_document_tells_a_client_where_and_how(client):
    client_id, secret = await credential(client)
    answer = await client.get(METADATA)  # no credentials
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "max-age=300, public"
    document = answer.json()
    issuer = document["issuer"]
    assert urlsplit(issuer).scheme in ("http", "https") and urlsplit(issuer).netloc  # absolute
    assert document["token_endpoint"] == f"{issuer}/v1/oauth/token"
    assert document["revocation_endpoint"] == f"{issuer}/v1/oauth/revoke"
    assert document["grant_types_supported"] == ["client_credentials"]
    assert document["scopes_supported"] == list(PARTNER_SCOPES)
    for methods in ("token_endpoint_auth_methods_supported", "revocation_endpoint_auth_methods_supported"):
        assert document[methods] == ["client_secret_basic", "client_secret_post"]
    assert document["response_types_supported"] == []

    # A client that knows only the issuer follows the document.
    auth = httpx.BasicAuth(client_id, secret)
    issued = await client.post(urlsplit(document["token_endpoint"]).path, data=GRANT, auth=auth)
    assert issued.status_code == 200, issued.text
    access_token = issued.json()["access_token"]
    revoked = await client.post(urlsplit(document["revocation_endpoint"]).path, data={"token": access_token},
                                auth=auth)
    assert revoked.status_code == 200 and not await works(client, access_token)
    assert (await client.get(urlsplit(document["service_documentation"]).path)).status_code == 200


async def test_the_issuer_is_the_configured_public_url(settings):
    configured = msgspec.structs.replace(settings, public_url="https://consent.example/")
    async with AsyncTestClient(create_app(configured)) as client:
        document = (await client.get(METADATA)).json()
    assert document["issuer"] == "https://consent.example"
    assert document["token_endpoint"] == "https://consent.example/v1/oauth/token"
