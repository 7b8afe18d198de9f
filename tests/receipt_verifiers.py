"""How a relying party verifies a receipt with the published JWKS alone, in joserfc and in PyJWT, with the least
configuration each needs (README, "Consent receipts and export")."""

from __future__ import annotations

import jwt
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet
from jwt.algorithms import OKPAlgorithm


def with_joserfc(receipt: str, jwks: dict, algorithms: tuple[str, ...] = ("Ed25519",)) -> dict:
    # joserfc allows only the algorithms it recommends (HS256, RS256, ES256) unless told which.
    return jose_jwt.decode(receipt, KeySet.import_key_set(jwks), algorithms=list(algorithms)).claims


def with_pyjwt(receipt: str, jwks: dict, algorithms: tuple[str, ...] = ("Ed25519",)) -> dict:
    # PyJWT (up to 2.15 at least) knows EdDSA over Ed25519 only by RFC 8037's name, `EdDSA`: RFC 9864's is
    # taught once per process. Its PyJWK refuses a JWK whose `alg` it does not know: the key is read directly.
    try:
        jwt.get_algorithm_by_name("Ed25519")
    except NotImplementedError:
        jwt.register_algorithm("Ed25519", OKPAlgorithm())
    kid = jwt.get_unverified_header(receipt)["kid"]
    [jwk] = [key for key in jwks["keys"] if key["kid"] == kid]
    return jwt.decode(receipt, OKPAlgorithm.from_jwk(jwk), algorithms=list(algorithms))
