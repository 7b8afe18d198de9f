"""An unexpected error is logged with its type and stack, never its message (which can quote request data)."""

import logging

from consent.api.errors import log_unexpected


def test_unexpected_errors_are_logged_without_their_message(caplog):
    sent = "alice@example.org"  # request data; the stack's source lines hold code only
    try:
        raise ValueError(f"subject {sent} sent something odd")
    except ValueError as error:
        with caplog.at_level(logging.ERROR, logger="consent.api"):
            log_unexpected(error)
    text = caplog.text
    assert "ValueError" in text and "test_error_logging.py" in text
    assert "alice@example.org" not in text
