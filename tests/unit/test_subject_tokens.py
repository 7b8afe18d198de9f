"""Every id placed in a NATS subject is one token, read back exactly by a URL decoder."""

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.adapters.cloudevents import subject_token


@pytest.mark.parametrize("value, token", [
    ("orders", "orders"),
    ("cl_AbC-9", "cl_AbC-9"),  # slugs and client ids are written as they are
    ("profile.email", "profile%2Eemail"),
    ("a b*c>d", "a%20b%2Ac%3Ed"),
    ("50%", "50%25"),  # the escape character itself, so that no two ids share a token
    ("é", "%C3%A9"),
])
def test_a_token_is_the_id_with_every_other_character_percent_encoded(value: str, token: str):
    assert subject_token(value) == token


@given(st.text(min_size=1, max_size=64))
def test_any_id_is_one_token_that_decodes_back_to_it(value: str):
    token = subject_token(value)
    assert not any(c in token for c in ".*> \t\r\n")
    assert unquote(token) == value
