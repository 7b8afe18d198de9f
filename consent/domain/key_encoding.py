"""How a master key is written in the settings and key files: base64 of KEY_SIZE random bytes. Pure, so that the
settings can check CONSENT_MASTER_KEY at start-up without importing the cipher adapter (which imports the
settings); the cipher (consent/adapters/cipher.py) uses the same size for the keys it makes."""

from __future__ import annotations

import base64
import binascii

KEY_SIZE = 32  # bytes: AES-256, for master keys and the data keys they wrap


def decode_master_key(text: str, name: str) -> bytes:
    """A master key as configured: base64 (standard or URL-safe, padding optional) of 32 random bytes.
    ValueError, naming the setting or file (`name`) and never the key, when it is not one."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} is not base64") from None
    if len(key) != KEY_SIZE:
        raise ValueError(f"{name} must be base64 of exactly {KEY_SIZE} bytes (e.g. `openssl rand -base64 32`)")
    return key
