"""Receipt signing keys: Ed25519 JWKs in a JWKS, given inline (CONSENT_RECEIPT_KEYS starting with `{`, as
`consent keys init` prints it) or in a file. The first key signs; every key is published, so receipts signed
before a rotation still verify. Keys are parsed once, at start-up."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from msgspec import Struct

# Explicit typing (RFC 8725 §3.11): a receipt is never mistaken for another kind of JWT.
RECEIPT_TYP = "consent-receipt+jwt"
# The JOSE `alg` of receipts: RFC 9864's name for EdDSA over Ed25519. Earlier builds wrote `EdDSA`, RFC 8037's
# name for any EdDSA curve, which RFC 9864 deprecates (joserfc refuses it unless allowed; PyJWT 2.x knows only it).
RECEIPT_ALG = "Ed25519"
_encode_claims = msgspec.json.Encoder().encode


class SigningKey(NamedTuple):
    kid: str
    key: Ed25519PrivateKey
    # The `alg` its JWK names. A key that names another (`EdDSA`) or none was made by an earlier build and
    # has signed receipts under both names: it is published without `alg`, so that either verifies with it.
    alg: str | None = RECEIPT_ALG


class PublicJwk(Struct, frozen=True, omit_defaults=True):
    kty: str
    crv: str
    x: str
    kid: str
    use: str
    # Absent for a key of an earlier build (see `SigningKey`): it verifies receipts under `EdDSA` and `Ed25519`.
    alg: str | None = None


class Jwks(Struct, frozen=True):
    keys: list[PublicJwk]


class ReceiptKeyError(ValueError):
    """The key file is missing, unreadable or holds something other than Ed25519 private JWKs."""


class ReceiptKeys:
    """Signs receipts with the first key; `jwks` publishes the public half of every key."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ReceiptKeyError("no receipt signing key")
        self.kid, self._key = keys[0].kid, keys[0].key
        # The JOSE header as PyJWT writes it (keys sorted, no spaces), encoded once. Every key signs as
        # RECEIPT_ALG, whichever name its JWK has (the signature is the same Ed25519 either way).
        self._header = _b64(json.dumps({"alg": RECEIPT_ALG, "kid": self.kid, "typ": RECEIPT_TYP},
                                       separators=(",", ":"), sort_keys=True).encode())
        self.jwks = Jwks(keys=[public_jwk(entry) for entry in keys])

    @classmethod
    def from_file(cls, path: str | Path) -> ReceiptKeys:
        return cls(read_key_file(Path(path)))

    @classmethod
    def generated(cls) -> ReceiptKeys:
        key = Ed25519PrivateKey.generate()
        return cls([SigningKey(thumbprint(key), key)])

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS (RFC 7515), built here: PyJWT's encode costs a third more than the signature itself,
        on every consent write. Ed25519 signatures are deterministic: the same claims, the same receipt."""
        signing_input = self._header + b"." + _b64(_encode_claims(claims))
        return (signing_input + b"." + _b64(self._key.sign(signing_input))).decode()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def public_jwk(entry: SigningKey) -> PublicJwk:
    public = OKPAlgorithm.to_jwk(entry.key.public_key(), as_dict=True)
    return PublicJwk(kty="OKP", crv="Ed25519", x=public["x"], kid=entry.kid, use="sig",
                     alg=RECEIPT_ALG if entry.alg == RECEIPT_ALG else None)


def thumbprint(key: Ed25519PrivateKey) -> str:
    """RFC 7638 JWK thumbprint of the public key: a `kid` that names the key itself."""
    x = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)["x"]
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def is_inline(setting: str) -> bool:
    """Whether CONSENT_RECEIPT_KEYS holds the JWKS itself rather than the path of its file."""
    return setting.lstrip().startswith("{")


def read_key_file(path: Path) -> list[SigningKey]:
    """Each JWK in the file, in order. Errors name the file and the entry, never key material."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ReceiptKeyError(f"receipt key file {path}: cannot read it ({type(error).__name__})") from None
    return parse_key_set(text, f"receipt key file {path}")


def parse_key_set(text: str, where: str) -> list[SigningKey]:
    """Each JWK of a JWKS text, in order; `where` names it in errors (never key material)."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ReceiptKeyError(f"{where}: cannot read it as JSON ({type(error).__name__})") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ReceiptKeyError(f'{where}: expected a JWKS, {{"keys": [...]}}, with at least one key')
    keys: list[SigningKey] = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or (entry.get("kty"), entry.get("crv")) != ("OKP", "Ed25519"):
            raise ReceiptKeyError(f"{where}: key {n} is not an OKP Ed25519 JWK")
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or kid in {k.kid for k in keys}:
            raise ReceiptKeyError(f"{where}: key {n} needs a `kid` of its own")
        if "d" not in entry:
            raise ReceiptKeyError(f"{where}: key {kid!r} has no private part `d`")
        try:
            key = OKPAlgorithm.from_jwk(entry)
        except (jwt.InvalidKeyError, ValueError):
            raise ReceiptKeyError(f"{where}: key {kid!r} is malformed") from None
        alg = entry.get("alg") if isinstance(entry.get("alg"), str) else None
        keys.append(SigningKey(kid, key, alg))  # type: ignore[arg-type] - `d` present: a private key
    return keys


def private_jwks(keys: list[SigningKey]) -> dict[str, list[dict[str, str]]]:
    """The JWKS of these keys with their private parts, as CONSENT_RECEIPT_KEYS holds them. Each keeps its
    `alg` as read (an earlier build's key stays marked as one: see `SigningKey`)."""
    return {"keys": [{**OKPAlgorithm.to_jwk(k.key, as_dict=True), "kid": k.kid, **({"alg": k.alg} if k.alg else {}),
                      "use": "sig"} for k in keys]}


def new_key_set() -> str:
    """A JWKS of one new private key, on one line: a value for CONSENT_RECEIPT_KEYS."""
    key = Ed25519PrivateKey.generate()
    return json.dumps(private_jwks([SigningKey(thumbprint(key), key)]), separators=(",", ":"))


def add_new_key(path: Path) -> tuple[str, int]:
    """Put a new key first in the file (creating it), keeping the older ones to verify with.

    Returns the new kid and how many older keys were kept. Written to a temporary file, readable
    by the owner only, then renamed over the old one, so a reader never sees half a file."""
    older = read_key_file(path) if path.exists() else []
    key = Ed25519PrivateKey.generate()
    kid = thumbprint(key)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as out:  # mkstemp creates it 0600
            json.dump(private_jwks([SigningKey(kid, key), *older]), out, indent=2)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return kid, len(older)


def load_or_generate(setting: str | None) -> ReceiptKeys:
    """The keys of CONSENT_RECEIPT_KEYS (inline or a file), or one made up for this process (with a warning)."""
    if setting is not None and is_inline(setting):
        return ReceiptKeys(parse_key_set(setting, "CONSENT_RECEIPT_KEYS"))
    if setting is not None:
        return ReceiptKeys.from_file(setting)
    logging.getLogger("consent").warning(
        "CONSENT_RECEIPT_KEYS is not set: receipts are signed with a key of this process only, which no other "
        "replica publishes and which is gone after a restart")
    return ReceiptKeys.generated()
