"""Crypto-shredding primitives: AES-256-GCM data keys, sealed values, and master keys that wrap data keys.

- A data key seals a value: AES-256-GCM with a fresh random 96-bit nonce every time. The associated
  data names where the value lives (its stream, event and field), so a ciphertext moved to another
  subject's event, or to another field, fails to open.
- A master key wraps a data key: AES-256-GCM too, bound to the subject and the data key's id, so a
  wrapped key copied onto another subject's row fails to unwrap.
Delete a data key and every value it sealed is unreadable for good: that is how a subject is erased
from an append-only log.

A master key is known by an id derived from it (a fingerprint), so rotating needs no naming scheme:
the id stored beside each wrapped key says which configured master key unwraps it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consent.domain.key_encoding import KEY_SIZE  # AES-256

NONCE_SIZE = 12  # 96 bits, GCM's native nonce size
ENVELOPE = "v1"  # the `enc` marker of a sealed value, and the version of its layout


class CipherError(Exception):
    """A ciphertext did not authenticate: the wrong key, altered bytes, or a value moved elsewhere."""


class UnknownMasterKey(Exception):
    """A data key is wrapped by a master key this process was not given."""

    def __init__(self, master_key_id: str) -> None:
        super().__init__(f"master key {master_key_id} is not configured")
        self.master_key_id = master_key_id


class DataKey:
    """One subject's data key, ready to use (AESGCM keeps the expanded key schedule)."""

    __slots__ = ("aead", "key_id", "material")

    def __init__(self, key_id: str, material: bytes) -> None:
        self.key_id = key_id
        self.material = material
        self.aead = AESGCM(material)


def new_data_key() -> DataKey:
    return DataKey(secrets.token_hex(8), AESGCM.generate_key(bit_length=KEY_SIZE * 8))


def seal(key: DataKey, plaintext: bytes, associated: bytes) -> dict[str, str]:
    """A JSON-ready envelope, stored where the plaintext would have been."""
    nonce = os.urandom(NONCE_SIZE)
    return {"enc": ENVELOPE, "kid": key.key_id, "nonce": _b64(nonce),
            "ct": _b64(key.aead.encrypt(nonce, plaintext, associated))}


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and value.get("enc") == ENVELOPE


def open_sealed(key: DataKey, envelope: dict[str, Any], associated: bytes) -> bytes:
    try:
        nonce, ciphertext = base64.b64decode(envelope["nonce"]), base64.b64decode(envelope["ct"])
        if len(nonce) != NONCE_SIZE:
            raise CipherError("malformed envelope")
        return key.aead.decrypt(nonce, ciphertext, associated)
    except (InvalidTag, KeyError, TypeError, ValueError, binascii.Error):
        raise CipherError("the sealed value does not open with this key here") from None


def new_master_key() -> str:
    """A fresh master key as configured: base64 of KEY_SIZE random bytes."""
    return base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii")


def master_key_id(key: bytes) -> str:
    """A fingerprint that names a master key in the database without revealing anything about it."""
    return hashlib.sha256(b"consent master key id\x00" + key).hexdigest()[:16]


class MasterKeys:
    """The current master key, which wraps every new data key, and older ones kept only to unwrap."""

    def __init__(self, current: bytes, old: Iterable[bytes] = ()) -> None:
        self.current_id = master_key_id(current)
        self._current = AESGCM(current)
        self._by_id = {master_key_id(key): AESGCM(key) for key in old}
        self._by_id[self.current_id] = self._current
        self.ids = frozenset(self._by_id)

    def wrap(self, subject_id: str, key: DataKey) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._current.encrypt(nonce, key.material, _wrap_context(subject_id, key.key_id))

    def seal(self, context: bytes, plaintext: bytes) -> bytes:
        """Any other secret the service keeps (a webhook's signing secret), bound to `context`."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._current.encrypt(nonce, plaintext, b"consent secret v1\x00" + context)

    def open(self, context: bytes, sealed: bytes, sealed_by: str) -> bytes:
        master = self._by_id.get(sealed_by)
        if master is None:
            raise UnknownMasterKey(sealed_by)
        try:
            return master.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], b"consent secret v1\x00" + context)
        except (InvalidTag, ValueError):
            raise CipherError("the secret does not open here") from None

    def unwrap(self, subject_id: str, key_id: str, wrapped: bytes, wrapped_by: str) -> DataKey:
        master = self._by_id.get(wrapped_by)
        if master is None:
            raise UnknownMasterKey(wrapped_by)
        try:
            material = master.decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], _wrap_context(subject_id, key_id))
        except (InvalidTag, ValueError):
            raise CipherError("the data key does not unwrap for this subject") from None
        return DataKey(key_id, material)


def _wrap_context(subject_id: str, key_id: str) -> bytes:
    # NUL occurs in neither id, so the two cannot be shifted into each other.
    return b"consent data key v1\x00" + subject_id.encode() + b"\x00" + key_id.encode()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
