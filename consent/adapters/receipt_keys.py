"""Receipt signing keys: Ed25519 JWKs in a JWKS file. The first key signs; every key is published,
so receipts signed before a rotation still verify. Keys are parsed once, at start-up."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from msgspec import Struct

# Explicit typing (RFC 8725 §3.11): a receipt is never mistaken for another kind of JWT.
RECEIPT_TYP = "consent-receipt+jwt"
_encode_claims = msgspec.json.Encoder().encode


class PublicJwk(Struct, frozen=True):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str = "EdDSA"
    use: str = "sig"


class Jwks(Struct, frozen=True):
    keys: list[PublicJwk]


class ReceiptKeyError(ValueError):
    """The key file is missing, unreadable or holds something other than Ed25519 private JWKs."""


class ReceiptKeys:
    """Signs receipts with the first key; `jwks` publishes the public half of every key."""

    def __init__(self, keys: list[tuple[str, Ed25519PrivateKey]]) -> None:
        if not keys:
            raise ReceiptKeyError("no receipt signing key")
        self.kid, self._key = keys[0]
        # The JOSE header as PyJWT writes it (keys sorted, no spaces), encoded once.
        self._header = _b64(json.dumps({"alg": "EdDSA", "kid": self.kid, "typ": RECEIPT_TYP},
                                       separators=(",", ":"), sort_keys=True).encode())
        self.jwks = Jwks(keys=[public_jwk(kid, key) for kid, key in keys])

    @classmethod
    def from_file(cls, path: str | Path) -> ReceiptKeys:
        return cls(read_key_file(Path(path)))

    @classmethod
    def generated(cls) -> ReceiptKeys:
        key = Ed25519PrivateKey.generate()
        return cls([(thumbprint(key), key)])

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS (RFC 7515), built here: PyJWT's encode costs a third more than the signature itself,
        on every consent write. Ed25519 signatures are deterministic: the same claims, the same receipt."""
        signing_input = self._header + b"." + _b64(_encode_claims(claims))
        return (signing_input + b"." + _b64(self._key.sign(signing_input))).decode()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def public_jwk(kid: str, key: Ed25519PrivateKey) -> PublicJwk:
    public = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return PublicJwk(kty="OKP", crv="Ed25519", x=public["x"], kid=kid)


def thumbprint(key: Ed25519PrivateKey) -> str:
    """RFC 7638 JWK thumbprint of the public key: a `kid` that names the key itself."""
    x = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)["x"]
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def read_key_file(path: Path) -> list[tuple[str, Ed25519PrivateKey]]:
    """(kid, key) of each JWK in the file, in order. Errors name the file and the entry, never key material."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ReceiptKeyError(f"receipt key file {path}: cannot read it as JSON ({type(error).__name__})") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ReceiptKeyError(f'receipt key file {path}: expected a JWKS, {{"keys": [...]}}, with at least one key')
    keys: list[tuple[str, Ed25519PrivateKey]] = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or (entry.get("kty"), entry.get("crv")) != ("OKP", "Ed25519"):
            raise ReceiptKeyError(f"receipt key file {path}: key {n} is not an OKP Ed25519 JWK")
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or kid in {k for k, _ in keys}:
            raise ReceiptKeyError(f"receipt key file {path}: key {n} needs a `kid` of its own")
        if "d" not in entry:
            raise ReceiptKeyError(f"receipt key file {path}: key {kid!r} has no private part `d`")
        try:
            key = OKPAlgorithm.from_jwk(entry)
        except (jwt.InvalidKeyError, ValueError):
            raise ReceiptKeyError(f"receipt key file {path}: key {kid!r} is malformed") from None
        keys.append((kid, key))  # type: ignore[arg-type] - `d` present: a private key
    return keys


def add_new_key(path: Path) -> tuple[str, int]:
    """Put a new key first in the file (creating it), keeping the older ones to verify with.

    Returns the new kid and how many older keys were kept. Written to a temporary file, readable
    by the owner only, then renamed over the old one, so a reader never sees half a file."""
    older = read_key_file(path) if path.exists() else []
    key = Ed25519PrivateKey.generate()
    kid = thumbprint(key)
    entries = [{**OKPAlgorithm.to_jwk(k, as_dict=True), "kid": k_id, "alg": "EdDSA", "use": "sig"}
               for k_id, k in [(kid, key), *older]]
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as out:  # mkstemp creates it 0600
            json.dump({"keys": entries}, out, indent=2)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return kid, len(older)


def load_or_generate(path: str | None) -> ReceiptKeys:
    """The keys of CONSENT_RECEIPT_KEYS, or one made up for this process (with a warning)."""
    if path is not None:
        return ReceiptKeys.from_file(path)
    logging.getLogger("consent").warning(
        "CONSENT_RECEIPT_KEYS is not set: receipts are signed with a key of this process only, which no other "
        "replica publishes and which is gone after a restart")
    return ReceiptKeys.generated()
