"""Settings: every bad value refused at start, naming its variable and the form it expects."""

from __future__ import annotations

import json
import typing

import msgspec
import pytest

from consent.adapters.receipt_keys import load_or_generate, new_key_set
from consent.config import SHARED_KEYS, Settings, SettingsError
from consent.config_fields import fields_of

POSTGRESQL = "postgresql+asyncpg://consent@db.example/consent"


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("CONSENT_TOKEN_TTL", "abc", "CONSENT_TOKEN_TTL must be a whole number of seconds >= 1, not 'abc'"),
    ("CONSENT_TOKEN_TTL", "0", "CONSENT_TOKEN_TTL must be a whole number of seconds >= 1, not '0'"),
    ("CONSENT_TOKEN_TTL", "-900", "CONSENT_TOKEN_TTL must be a whole number of seconds >= 1, not '-900'"),
    ("CONSENT_CREDENTIAL_OVERLAP", "-1", "CONSENT_CREDENTIAL_OVERLAP must be a whole number of seconds >= 0"),
    ("CONSENT_PARTNER_RATE_LIMIT", "-5", "CONSENT_PARTNER_RATE_LIMIT must be a whole number >= 0, not '-5'"),
    ("CONSENT_PARTNER_RATE_LIMIT", "ten", "CONSENT_PARTNER_RATE_LIMIT must be a whole number >= 0, not 'ten'"),
    ("CONSENT_SUBJECT_CACHE_SIZE", "1.5", "CONSENT_SUBJECT_CACHE_SIZE must be a whole number >= 0, not '1.5'"),
    ("CONSENT_WRITE_CACHE_SIZE", "-1", "CONSENT_WRITE_CACHE_SIZE must be a whole number >= 0"),
    ("CONSENT_READY_MAX_LAG", "lots", "CONSENT_READY_MAX_LAG must be a whole number >= 0"),
    ("CONSENT_MAX_BODY_BYTES", "0", "CONSENT_MAX_BODY_BYTES must be a whole number of bytes >= 1, not '0'"),
    ("CONSENT_SCHEDULER_INTERVAL", "-1", "CONSENT_SCHEDULER_INTERVAL must be a number of seconds >= 0, not '-1'"),
    ("CONSENT_SCHEDULER_INTERVAL", "nan", "CONSENT_SCHEDULER_INTERVAL must be a number of seconds >= 0"),
    ("CONSENT_CHECKPOINT_INTERVAL", "inf", "CONSENT_CHECKPOINT_INTERVAL must be a number of seconds >= 0"),
    ("CONSENT_CHECKPOINT_INTERVAL", "soon", "CONSENT_CHECKPOINT_INTERVAL must be a number of seconds >= 0"),
    ("CONSENT_USER_TOKEN_LEEWAY", "-0.5", "CONSENT_USER_TOKEN_LEEWAY must be a number of seconds >= 0"),
    ("CONSENT_USER_JWKS_CACHE_SECONDS", "5m", "CONSENT_USER_JWKS_CACHE_SECONDS must be a number of seconds"),
    ("CONSENT_FAST_DECISIONS", "maybe", "CONSENT_FAST_DECISIONS must be 1/0, true/false, yes/no or on/off"),
    ("CONSENT_FAST_WRITES", "2", "CONSENT_FAST_WRITES must be 1/0, true/false, yes/no or on/off (any case), not '2'"),
    ("CONSENT_ALLOW_EPHEMERAL_KEYS", "y", "CONSENT_ALLOW_EPHEMERAL_KEYS must be 1/0, true/false"),
    ("CONSENT_RELAY", "threads", "CONSENT_RELAY must be one of inline, process, off, not 'threads'"),
    ("CONSENT_DATABASE_URL", "mysql://db/consent", "CONSENT_DATABASE_URL must be a SQLAlchemy URL postgresql"),
    ("CONSENT_CORS_ORIGINS", "https://a.example/path", "CONSENT_CORS_ORIGINS: 'https://a.example/path' is not"),
    ("CONSENT_PSEUDONYM_KEY", "too-short", "CONSENT_PSEUDONYM_KEY must be text of at least 32 characters"),
    ("CONSENT_MASTER_KEY", "not base64!", "CONSENT_MASTER_KEY is not base64"),
    ("CONSENT_MASTER_KEYS_OLD", "c2hvcnQ=", "CONSENT_MASTER_KEYS_OLD must be base64 of exactly 32 bytes"),
    ("CONSENT_RECEIPT_KEYS", "{not json", "CONSENT_RECEIPT_KEYS: cannot read it as JSON"),
    ("CONSENT_RECEIPT_KEYS", '{"keys": []}', "CONSENT_RECEIPT_KEYS: expected a JWKS"),
])
def test_a_bad_value_is_refused_naming_the_variable_and_the_expected_form(variable, value, expected):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({variable: value})
    assert str(refused.value).startswith(expected)
    assert isinstance(refused.value, ValueError)  # what callers that predate SettingsError catch


@pytest.mark.parametrize(("variable", "value"), [
    ("CONSENT_PSEUDONYM_KEY", "short-secret-value"),
    ("CONSENT_MASTER_KEY", "secret-not-a-key"),
    ("CONSENT_DATABASE_URL", "mysql://consent:secret-password@db/consent"),
    ("CONSENT_RECEIPT_KEYS", '{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "d": "secret-d"}]}'),
])
def test_a_refused_secret_is_not_repeated_in_the_error(variable, value):
    with pytest.raises(SettingsError, match=variable) as refused:
        Settings.from_env({variable: value})
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "Yes", "on", " On "])
def test_every_spelling_of_yes_turns_a_switch_on(word):
    settings = Settings.from_env({"CONSENT_FAST_DECISIONS": word, "CONSENT_FAST_WRITES": word,
                                  "CONSENT_ALLOW_EPHEMERAL_KEYS": word})
    assert settings.fast_decisions is settings.fast_writes is settings.allow_ephemeral_keys is True


@pytest.mark.parametrize("word", ["0", "false", "False", "NO", "off"])
def test_every_spelling_of_no_turns_a_switch_off(word):
    settings = Settings.from_env({"CONSENT_FAST_DECISIONS": word, "CONSENT_FAST_WRITES": word})
    assert settings.fast_decisions is settings.fast_writes is False


def test_an_unset_or_empty_variable_leaves_the_default():
    assert Settings.from_env({}) == Settings()
    empty = {field.variable: "" for field in fields_of(Settings)} | {"CONSENT_TOKEN_TTL": "  "}
    assert Settings.from_env(empty) == Settings()


def test_every_field_is_read_from_its_own_variable():
    """The declaration is the one list: a field added to Settings is read from CONSENT_<FIELD> with no more code."""
    samples = {bool: ("on", True), int: (" 7 ", 7), float: ("2.5", 2.5), str: (" some text ", "some text")}
    for field in fields_of(Settings):
        if typing.get_origin(field.kind) is typing.Literal:
            text = value = typing.get_args(field.kind)[-1]
        elif typing.get_origin(field.kind) is tuple:
            text, value = "a, b,", ("a", "b")
        else:
            text, value = samples[field.kind]
        try:
            settings = Settings.from_env({field.variable: text})
        except SettingsError as error:  # a form of its own (a URL, a key): refused, but by its own name
            assert str(error).startswith(field.variable), error
        else:
            assert getattr(settings, field.name) == value, field.variable


@pytest.mark.parametrize(("field", "value", "variable"), [
    ("token_ttl", 0, "CONSENT_TOKEN_TTL"),
    ("partner_rate_limit", -1, "CONSENT_PARTNER_RATE_LIMIT"),
    ("scheduler_interval", -0.1, "CONSENT_SCHEDULER_INTERVAL"),
    ("fast_decisions", "no", "CONSENT_FAST_DECISIONS"),  # a truthy string is not a yes
    ("subject_cache_size", True, "CONSENT_SUBJECT_CACHE_SIZE"),
    ("relay", "threads", "CONSENT_RELAY"),
    ("nats_stream", "", "CONSENT_NATS_STREAM"),
    ("sandbox_subject_prefix", "", "CONSENT_SANDBOX_SUBJECT_PREFIX"),  # "" would make every subject sandbox
])
def test_values_given_in_code_are_checked_the_same(field, value, variable):
    with pytest.raises(SettingsError, match=variable):
        Settings(**{field: value})
    with pytest.raises(SettingsError, match=variable):
        msgspec.structs.replace(Settings(), **{field: value})


def test_receipt_keys_inline_are_the_jwks_itself():
    inline = new_key_set()
    settings = Settings.from_env({"CONSENT_RECEIPT_KEYS": inline})
    assert load_or_generate(settings.receipt_keys).kid == json.loads(inline)["keys"][0]["kid"]
    # A path is read at start (the file may be written after the settings are made).
    assert Settings.from_env({"CONSENT_RECEIPT_KEYS": "/etc/consent/receipt-keys.json"}).receipt_keys


def test_postgresql_needs_the_shared_keys_unless_ephemeral_keys_are_allowed():
    names = ["CONSENT_MASTER_KEY", "CONSENT_TOKEN_SIGNING_KEY", "CONSENT_RECEIPT_KEYS", "CONSENT_PSEUDONYM_KEY"]
    bare = Settings(database_url=POSTGRESQL)
    assert bare.missing_shared_keys() == names
    with pytest.raises(SettingsError) as refused:
        bare.require_shared_keys()
    assert all(name in str(refused.value) for name in names) and "consent keys init" in str(refused.value)
    assert "CONSENT_ALLOW_EPHEMERAL_KEYS=1" in str(refused.value)

    msgspec.structs.replace(bare, allow_ephemeral_keys=True).require_shared_keys()
    Settings().require_shared_keys()  # the embedded default keeps its keys beside its file
    keyed = Settings(database_url=POSTGRESQL, master_key="dGVzdCBtYXN0ZXIga2V5OiAzMiBieXRlcyBsb25nISE=",
                     token_signing_key="signing-key", pseudonym_key="p" * 32, receipt_keys=new_key_set())
    assert keyed.missing_shared_keys() == [] and set(SHARED_KEYS) <= set(msgspec.structs.asdict(keyed))
    keyed.require_shared_keys()
    with pytest.raises(SettingsError, match="CONSENT_RECEIPT_KEYS not set"):
        msgspec.structs.replace(keyed, receipt_keys=None).require_shared_keys()


def test_the_settings_repr_masks_every_secret_and_the_database_password():
    """Settings end up in tracebacks and test reports."""
    from consent.config import SECRET_FIELDS

    secrets = {"admin_keys": ("admin-key-canary",), "user_token_secret": "user-secret-canary-0123456789",
               "token_signing_key": "signing-canary", "pseudonym_key": "pseudonym-canary-" + "x" * 32,
               "master_key": MASTER_KEY_FOR_REPR, "master_keys_old": (MASTER_KEY_FOR_REPR,)}
    shown = repr(Settings(database_url="postgresql+asyncpg://consent:db-password-canary@db:5432/consent",
                          allow_ephemeral_keys=True, **secrets))
    assert set(secrets) <= SECRET_FIELDS
    for leaked in ("admin-key-canary", "user-secret-canary", "signing-canary", "pseudonym-canary",
                   MASTER_KEY_FOR_REPR, "db-password-canary"):
        assert leaked not in shown
    assert "master_key='***'" in shown and "consent:***@db:5432" in shown and "token_ttl=900" in shown


MASTER_KEY_FOR_REPR = "dGVzdCBtYXN0ZXIga2V5OiAzMiBieXRlcyBsb25nISE="
