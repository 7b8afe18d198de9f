"""Receipt claims (pure) and the receipt key file."""

from __future__ import annotations

import json
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jwt
import msgspec
import pytest
from joserfc.errors import SecurityWarning

from consent.adapters.receipt_keys import RECEIPT_TYP, ReceiptKeyError, ReceiptKeys, add_new_key, read_key_file
from consent.app.ports import RecordedEvent
from consent.app.receipts import (
    ReceiptSettings,
    has_receipt,
    high_sensitivity_scopes,
    receipt_claims,
    scopes_that_matter,
)
from consent.cli import main
from consent.domain.catalog import Catalog, Purpose, Scope
from consent.domain.events import ConsentGranted, SubjectErased
from tests.receipt_verifiers import with_joserfc, with_pyjwt

NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


def catalog(**sensitivities: str) -> Catalog:
    result = Catalog()
    for scope_id, sensitivity in sensitivities.items():
        scope_id = scope_id.replace("__", ".")
        result.scopes[scope_id] = Scope(scope_id, scope_id, "", sensitivity)  # type: ignore[arg-type]
    result.purposes["marketing"] = Purpose("marketing", "Marketing", "", "consent", "P30D", False, 2)
    return result


def test_a_scope_takes_the_sensitivity_of_the_nearest_defined_scope_and_reaches_those_it_covers():
    scopes = catalog(orders="high", orders__count="low", orders__lines__items="high", profile="low")
    assert high_sensitivity_scopes(scopes, ("orders.history",)) == ["orders.history"]  # from `orders`
    assert high_sensitivity_scopes(scopes, ("orders.count",)) == []  # its own, nearer, says low
    assert high_sensitivity_scopes(scopes, ("profile",)) == []
    assert high_sensitivity_scopes(scopes, ("orders",)) == ["orders", "orders.lines.items"]
    assert high_sensitivity_scopes(scopes, None) == ["orders", "orders.lines.items"]
    assert scopes_that_matter(scopes, ("orders.count",)) == ["orders", "orders.count"]
    assert scopes_that_matter(scopes, ("profile",)) == ["profile"]


def test_claims_depend_on_the_event_and_catalog_only():
    event = ConsentGranted(occurred_at=NOW, purpose="marketing", partner=None, scopes=("orders",),
                           purpose_version=2, source="web")
    recorded = RecordedEvent(event_id=uuid.uuid4(), stream_id="subject:u:1", stream_version=4, position=9,
                             event=event, recorded_at=NOW)
    settings = ReceiptSettings(issuer="/consent", controller_name="Example")
    claims = receipt_claims(recorded, catalog(orders="high"), settings)
    assert claims == receipt_claims(recorded, catalog(orders="high"), settings)
    assert (claims["sub"], claims["iat"], claims["jti"]) == ("u:1", int(NOW.timestamp()), str(recorded.event_id))
    assert claims["services"][0]["purposes"][0]["policyVersion"] == 2
    assert receipt_claims(recorded, catalog(orders="low"), settings)["sensitive"] is False


def test_the_same_key_signs_the_same_claims_alike_and_verifies(tmp_path: Path):
    path = tmp_path / "keys.json"
    kid, kept = add_new_key(path)
    assert kept == 0
    keys = ReceiptKeys.from_file(path)
    assert keys.kid == kid
    claims = {"jti": "x", "iat": 1}
    assert keys.sign(claims) == ReceiptKeys.from_file(path).sign(claims)
    jwks = msgspec.to_builtins(keys.jwks)
    assert "d" not in jwks["keys"][0]
    assert jwt.get_unverified_header(keys.sign(claims))["alg"] == jwks["keys"][0]["alg"] == "Ed25519"
    assert with_joserfc(keys.sign(claims), jwks) == with_pyjwt(keys.sign(claims), jwks) == claims


def test_a_key_of_an_earlier_build_is_published_without_alg_and_verifies_its_old_and_new_receipts(tmp_path: Path):
    """Earlier builds wrote `alg: EdDSA` in the key file and signed receipts as `EdDSA`. Such a key now signs as
    `Ed25519`, so it is published without `alg`: a JWK naming one would refuse the other's receipts."""
    path = tmp_path / "keys.json"
    add_new_key(path)
    document = json.loads(path.read_text())
    document["keys"][0]["alg"] = "EdDSA"  # as an earlier build wrote it
    path.write_text(json.dumps(document))
    old_kid = document["keys"][0]["kid"]
    claims = {"jti": "x", "iat": 1}
    old_receipt = jwt.encode(claims, read_key_file(path)[0].key, algorithm="EdDSA",
                             headers={"kid": old_kid, "typ": RECEIPT_TYP})
    keys = ReceiptKeys.from_file(path)
    jwks = msgspec.to_builtins(keys.jwks)
    assert "alg" not in jwks["keys"][0]
    new_receipt = keys.sign(claims)
    assert jwt.get_unverified_header(new_receipt)["alg"] == "Ed25519"
    assert with_joserfc(new_receipt, jwks) == with_pyjwt(new_receipt, jwks) == claims
    assert with_pyjwt(old_receipt, jwks, algorithms=("EdDSA",)) == claims
    with pytest.warns(SecurityWarning, match="deprecated"):  # joserfc's word on the old name
        assert with_joserfc(old_receipt, jwks, algorithms=("EdDSA",)) == claims
    # A rotation keeps what the file says of the old key; the new key is published with its `alg`.
    new_kid, _ = add_new_key(path)
    published = {key["kid"]: key.get("alg") for key in msgspec.to_builtins(ReceiptKeys.from_file(path).jwks)["keys"]}
    assert published == {new_kid: "Ed25519", old_kid: None}
    assert with_pyjwt(old_receipt, msgspec.to_builtins(ReceiptKeys.from_file(path).jwks), ("EdDSA",)) == claims


def test_rotation_puts_the_new_key_first_and_keeps_the_file_private(tmp_path: Path):
    path = tmp_path / "keys.json"
    assert main(["keys", "new-receipt-key", str(path)]) == 0
    first = json.loads(path.read_text())["keys"][0]["kid"]
    assert main(["keys", "new-receipt-key", str(path)]) == 0
    kids = [k["kid"] for k in json.loads(path.read_text())["keys"]]
    assert len(kids) == 2 and kids[1] == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [k.kid for k in ReceiptKeys.from_file(path).jwks.keys] == kids


@pytest.mark.parametrize("content, complaint", [
    ("not json", "cannot read"),
    ('{"keys": []}', "at least one key"),
    ('{"keys": [{"kty": "RSA", "kid": "a"}]}', "not an OKP Ed25519"),
    ('{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}', "kid"),
    ('{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "a"}]}', "no private part"),
    ('{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "d": "secret-ish", "kid": "a"}]}', "malformed"),
])
def test_a_bad_key_file_is_refused_without_quoting_key_material(tmp_path: Path, content: str, complaint: str):
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ReceiptKeyError, match=complaint) as refused:
        ReceiptKeys.from_file(path)
    assert "secret-ish" not in str(refused.value)
    # The command refuses to rotate a file it cannot read, rather than overwrite it.
    assert main(["keys", "new-receipt-key", str(path)]) == 1
    assert path.read_text() == content


def test_an_erasure_is_not_a_receipt_event():
    erased = RecordedEvent(event_id=uuid.uuid4(), stream_id="subject:u", stream_version=2, position=3,
                           event=SubjectErased(occurred_at=NOW), recorded_at=NOW)
    assert not has_receipt(erased)
