"""Crypto-shredding primitives: sealing, key wrapping, and what readers see once a key is gone."""

from __future__ import annotations

import base64
import os
import stat
import uuid
from types import SimpleNamespace

import msgspec
import pytest

from consent.adapters.cipher import (
    CipherError,
    MasterKeys,
    UnknownMasterKey,
    is_sealed,
    new_data_key,
    open_sealed,
    seal,
)
from consent.adapters.master_key import key_file, master_keys
from consent.adapters.subject_keys import (
    KeyRow,
    MasterKeyUnavailable,
    SubjectKeys,
    has_personal_data,
    opened,
    sealer,
)
from consent.config import Settings
from consent.domain.errors import DomainError
from consent.domain.events import ERASED, ConsentGranted, Evidence, event_data
from consent.domain.key_encoding import decode_master_key
from tests.unit.test_subject import NOW

CANARY = {"collection_point": "signup", "ip_address": "203.0.113.9", "user_note": "canary@example.com"}


def master(seed: int = 1) -> bytes:
    return bytes([seed]) * 32


def row(stream_id: str, data: dict, event_id: uuid.UUID | None = None) -> SimpleNamespace:
    return SimpleNamespace(stream_id=stream_id, event_id=event_id or uuid.uuid4(), data=data)


def test_a_sealed_value_opens_with_its_key_and_context():
    key = new_data_key()
    envelope = seal(key, b"secret evidence", b"context")
    assert is_sealed(envelope) and envelope["kid"] == key.key_id and set(envelope) == {"enc", "kid", "nonce", "ct"}
    assert b"secret" not in msgspec.json.encode(envelope)
    assert open_sealed(key, envelope, b"context") == b"secret evidence"


def test_every_seal_takes_a_fresh_nonce():
    key = new_data_key()
    first, second = seal(key, b"same", b"c"), seal(key, b"same", b"c")
    assert first["nonce"] != second["nonce"] and first["ct"] != second["ct"]
    assert len(base64.b64decode(first["nonce"])) == 12


def test_the_wrong_key_does_not_open():
    envelope = seal(new_data_key(), b"secret", b"c")
    with pytest.raises(CipherError):
        open_sealed(new_data_key(), envelope, b"c")


@pytest.mark.parametrize("part", ["ct", "nonce"])
def test_altered_bytes_do_not_open(part):
    key = new_data_key()
    envelope = seal(key, b"secret evidence", b"c")
    raw = bytearray(base64.b64decode(envelope[part]))
    raw[0] ^= 1
    with pytest.raises(CipherError):
        open_sealed(key, {**envelope, part: base64.b64encode(bytes(raw)).decode()}, b"c")
    with pytest.raises(CipherError):
        open_sealed(key, {**envelope, part: "not base64!"}, b"c")


def test_associated_data_binds_a_sealed_field_to_its_subject_event_and_field():
    key = new_data_key()
    event_id = uuid.uuid4()
    stored = sealer(key)({"purpose": "marketing", "evidence": CANARY}, "subject:alice", event_id)
    assert stored["purpose"] == "marketing" and is_sealed(stored["evidence"])
    keys, keyrow = SubjectKeys(MasterKeys(master())), KeyRow(key.key_id, b"", "unused")
    keys._remember("alice", key)
    keys._remember("mallory", key)  # even the same key: the ciphertext is bound to where it was written
    assert opened(keys, {"alice": keyrow}, row("subject:alice", stored, event_id))["evidence"] == CANARY
    with pytest.raises(CipherError):  # copied into another subject's stream
        opened(keys, {"mallory": keyrow}, row("subject:mallory", stored, event_id))
    with pytest.raises(CipherError):  # or onto another event of the same subject
        opened(keys, {"alice": keyrow}, row("subject:alice", stored))


def test_a_value_reads_as_erased_once_its_key_is_deleted_or_replaced():
    keys = SubjectKeys(MasterKeys(master()))
    key, new_row = keys.for_write("alice", None)
    event_id = uuid.uuid4()
    stored = sealer(key)({"evidence": CANARY, "scopes": ["orders"]}, "subject:alice", event_id)
    kept = KeyRow(new_row["key_id"], new_row["wrapped_key"], new_row["master_key_id"])
    assert opened(keys, {"alice": kept}, row("subject:alice", stored, event_id))["evidence"] == CANARY
    assert opened(keys, {}, row("subject:alice", stored, event_id)) == {"evidence": ERASED, "scopes": ["orders"]}
    _, replacement = keys.for_write("alice", None)  # a grant after erasure: a new key
    newer = KeyRow(replacement["key_id"], replacement["wrapped_key"], replacement["master_key_id"])
    assert opened(keys, {"alice": newer}, row("subject:alice", stored, event_id))["evidence"] == ERASED


def test_data_without_personal_fields_is_stored_and_read_as_it_is():
    data = event_data(ConsentGranted(occurred_at=NOW, purpose="m", partner=None, scopes=None, purpose_version=1,
                                     source="web"))
    assert sealer(new_data_key())(data, "subject:a", uuid.uuid4()) == data
    assert opened(SubjectKeys(None), {}, row("subject:a", data)) is data
    with_evidence = ConsentGranted(occurred_at=NOW, purpose="m", partner=None, scopes=None, purpose_version=1,
                                   source="web", evidence=Evidence(user_agent="UA"))
    assert not has_personal_data([ConsentGranted(**{**msgspec.structs.asdict(with_evidence), "evidence": None})])
    assert has_personal_data([with_evidence])


def test_master_keys_wrap_bound_to_the_subject_and_keep_old_keys_readable():
    old, new = MasterKeys(master(1)), MasterKeys(master(2), old=[master(1)])
    key = new_data_key()
    wrapped = old.wrap("alice", key)
    assert len(wrapped) == 12 + 32 + 16 and key.material not in wrapped
    assert new.unwrap("alice", key.key_id, wrapped, old.current_id).material == key.material
    with pytest.raises(CipherError):
        new.unwrap("bob", key.key_id, wrapped, old.current_id)  # a wrapped key copied onto another subject
    with pytest.raises(CipherError):
        new.unwrap("alice", "other-key-id", wrapped, old.current_id)
    with pytest.raises(UnknownMasterKey):
        MasterKeys(master(2)).unwrap("alice", key.key_id, wrapped, old.current_id)
    assert old.current_id != new.current_id and len(new.current_id) == 16


def test_a_cached_key_is_used_only_while_the_stored_row_names_it():
    keys = SubjectKeys(MasterKeys(master()))
    first, row1 = keys.for_write("alice", None)
    other = SubjectKeys(MasterKeys(master()))
    second, row2 = other.for_write("alice", None)  # e.g. made by another replica after an erasure
    stored = KeyRow(row2["key_id"], row2["wrapped_key"], row2["master_key_id"])
    assert keys.unwrapped("alice", stored).material == second.material != first.material
    assert keys.for_write("alice", stored) == (keys.unwrapped("alice", stored), None)  # no new row


def test_without_a_master_key_personal_data_is_refused_and_stored_keys_are_unavailable():
    keys = SubjectKeys(None)
    with pytest.raises(DomainError) as refused:
        keys.for_write("alice", None)
    assert refused.value.code == "master_key_missing" and refused.value.status == 422
    with pytest.raises(MasterKeyUnavailable) as unavailable:
        keys.unwrapped("alice", KeyRow("k", b"w" * 60, "abc"))
    assert unavailable.value.status == 503 and "abc" in unavailable.value.detail


def test_the_cache_is_bounded():
    keys = SubjectKeys(MasterKeys(master()), capacity=2)
    for subject in ("a", "b", "c"):
        keys.for_write(subject, None)
    assert list(keys._cache) == ["b", "c"]


@pytest.mark.parametrize("text", ["", "not base64", base64.b64encode(b"short").decode(),
                                  base64.b64encode(bytes(33)).decode()])
def test_a_master_key_must_be_base64_of_32_bytes(text):
    with pytest.raises(ValueError, match="CONSENT_MASTER_KEY"):
        decode_master_key(text, "CONSENT_MASTER_KEY")
    with pytest.raises(ValueError, match="CONSENT_MASTER_KEY"):
        Settings.from_env({"CONSENT_MASTER_KEY": text or "x"})


def test_settings_read_the_master_keys():
    current, old = base64.b64encode(master(3)).decode(), base64.urlsafe_b64encode(master(4)).decode().rstrip("=")
    settings = Settings.from_env({"CONSENT_MASTER_KEY": current, "CONSENT_MASTER_KEYS_OLD": f" {old} ,"})
    keys = master_keys(settings)
    assert keys is not None and keys.ids == {MasterKeys(master(3)).current_id, MasterKeys(master(4)).current_id}
    assert keys.current_id == MasterKeys(master(3)).current_id


def test_without_a_master_key_postgresql_has_none_and_sqlite_keeps_one_beside_its_file(tmp_path):
    assert master_keys(Settings(database_url="postgresql+asyncpg://db/consent")) is None
    url = f"sqlite+aiosqlite:///{tmp_path / 'consent.db'}"
    first = master_keys(Settings(database_url=url))
    path = key_file(url)
    assert path == tmp_path / "consent.db.master-key" and path.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert master_keys(Settings(database_url=url)).current_id == first.current_id  # reused after a restart
    assert key_file("sqlite+aiosqlite:///:memory:") is None
    assert master_keys(Settings(database_url="sqlite+aiosqlite:///:memory:")) is not None
