"""Receipts under RFC 9864's algorithm name, verified with the served JWKS in joserfc and PyJWT; receipts that
earlier builds issued as `EdDSA` keep verifying with the same JWKS."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import msgspec
import pytest
from joserfc.errors import SecurityWarning
from litestar.testing import AsyncTestClient

from consent.adapters.receipt_keys import RECEIPT_TYP, add_new_key, read_key_file
from consent.api.app import create_app
from tests.conftest import ADMIN
from tests.integration.test_receipts import change, jwk_set, put_catalog
from tests.receipt_verifiers import with_joserfc, with_pyjwt

GRANT = {"purpose": "marketing", "partner": "acme", "scopes": ["orders"], "action": "grant"}


async def test_a_new_receipt_verifies_with_joserfc_and_pyjwt_from_the_served_jwks(client):
    await put_catalog(client)
    [item] = (await change(client, "u-1", GRANT))["receipts"]
    receipt = item["receipt"]
    jwks = await jwk_set(client)
    assert jwt.get_unverified_header(receipt) == {"alg": "Ed25519", "kid": jwks["keys"][0]["kid"], "typ": RECEIPT_TYP}
    assert [key["alg"] for key in jwks["keys"]] == ["Ed25519"]
    claims = with_joserfc(receipt, jwks)
    assert claims == with_pyjwt(receipt, jwks)
    assert (claims["jti"], claims["sub"], claims["type"]) == (item["event_id"], "u-1", "subject.granted")
    # Fetched again with the same key: the very receipt the change returned.
    again = await client.get(f"/v1/subjects/u-1/receipts/{item['event_id']}", headers=ADMIN)
    assert again.json() == item


@pytest.fixture
def earlier_key_file(tmp_path: Path) -> Path:
    """A key file as earlier builds wrote it: the key named `alg: EdDSA`, the name their receipts carried."""
    path = tmp_path / "receipt-keys.json"
    add_new_key(path)
    document = json.loads(path.read_text())
    document["keys"][0]["alg"] = "EdDSA"
    path.write_text(json.dumps(document))
    return path


async def test_a_receipt_an_earlier_build_issued_still_verifies_and_is_re_signed_when_fetched(settings,
                                                                                            earlier_key_file):
    settings = msgspec.structs.replace(settings, receipt_keys=str(earlier_key_file))
    [signing_key] = read_key_file(earlier_key_file)
    async with AsyncTestClient(create_app(settings)) as client:
        await put_catalog(client)
        [item] = (await change(client, "u-1", GRANT))["receipts"]
        claims = jwt.decode(item["receipt"], options={"verify_signature": False})
        # What an earlier build returned for this event: the same claims, the same key, the name `EdDSA`.
        issued = jwt.encode(claims, signing_key.key, algorithm="EdDSA",
                            headers={"kid": signing_key.kid, "typ": RECEIPT_TYP})
        jwks = await jwk_set(client)
        again = (await client.get(f"/v1/subjects/u-1/receipts/{item['event_id']}", headers=ADMIN)).json()

    # The key signed under both names: published without `alg`, so that it verifies both.
    assert [(key["kid"], key.get("alg")) for key in jwks["keys"]] == [(signing_key.kid, None)]
    assert with_pyjwt(issued, jwks, algorithms=("EdDSA",)) == claims
    # A relying party's code of before, through PyJWT's JWK set, still verifies it.
    pyjwk = jwt.PyJWKSet.from_dict(jwks)[signing_key.kid]
    assert jwt.decode(issued, pyjwk, algorithms=["EdDSA"]) == claims
    with pytest.warns(SecurityWarning, match="deprecated"):
        assert with_joserfc(issued, jwks, algorithms=("EdDSA",)) == claims
    # Fetched again, it is signed anew, under the current name: the same claims, and it verifies too.
    assert jwt.get_unverified_header(again["receipt"])["alg"] == "Ed25519"
    assert again == item
    assert with_joserfc(again["receipt"], jwks) == with_pyjwt(again["receipt"], jwks) == claims
