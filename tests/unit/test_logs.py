"""Log lines: the JSON formatter, the access record under any formatter, and the choice of format."""

from __future__ import annotations

import io
import json
import logging

import pytest

from consent.app.telemetry import RequestFacts, begin_request, end_request
from consent.logs import (
    ACCESS_LOGGER,
    TEXT_FORMAT,
    AccessRecord,
    JsonFormatter,
    configure_logging,
    logging_config,
    wants_json,
)


def record(message: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("consent.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_json_line_has_time_level_logger_message_and_escapes_what_it_must():
    line = json.loads(JsonFormatter().format(record('said "%s"\nthen \\ left', "hé")))
    assert line["level"] == "WARNING" and line["logger"] == "consent.test"
    assert line["message"] == 'said "hé"\nthen \\ left'
    assert line["time"].endswith("Z") and len(line["time"]) == len("2026-03-03T12:00:00.000Z")
    assert "request_id" not in line


def test_lines_written_during_a_request_carry_its_id_and_tracebacks_stay_in_one_line():
    token = begin_request(RequestFacts(b"req-7"))
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError as error:
            text = JsonFormatter().format(record("failed", exc_info=(type(error), error, error.__traceback__)))
    finally:
        end_request(token)
    assert "\n" not in text
    line = json.loads(text)
    assert line["request_id"] == "req-7" and "RuntimeError: boom" in line["exception"]


def test_the_access_record_works_with_any_formatter():
    access = AccessRecord(b"req-1", "/v1/decisions", "POST", 200, 0.00042, "acme")
    line = json.loads(JsonFormatter().format(access))
    assert line == {"time": line["time"], "level": "INFO", "logger": ACCESS_LOGGER, "message": "POST /v1/decisions 200",
                    "request_id": "req-1", "route": "/v1/decisions", "method": "POST", "status": 200,
                    "duration_ms": 0.42, "partner": "acme"}
    text = logging.Formatter(TEXT_FORMAT).format(access)
    assert text.endswith("INFO consent.access POST /v1/decisions 200 0.42ms request_id=req-1 partner=acme")
    # A host's own format may name any attribute of a LogRecord.
    every = logging.Formatter("%(process)d %(processName)s %(thread)d %(threadName)s %(module)s %(filename)s "
                              "%(funcName)s %(lineno)d %(pathname)s %(relativeCreated)d %(msecs)d %(levelno)d")
    assert every.format(AccessRecord(b"r", "unmatched", "GET", 404, 0.001, None))
    anonymous = json.loads(JsonFormatter().format(AccessRecord(b"r", "unmatched", "GET", 404, 0.001, None)))
    assert "partner" not in anonymous and anonymous["route"] == "unmatched"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_unless_on_a_terminal_or_asked_otherwise():
    assert wants_json("auto", io.StringIO()) and not wants_json("auto", _Terminal())
    assert wants_json("json", _Terminal()) and not wants_json("text", io.StringIO())
    with pytest.raises(ValueError, match="auto, json, text"):
        wants_json("xml")
    assert logging_config("json")["formatters"]["consent"] == {"()": "consent.logs.JsonFormatter"}
    assert logging_config("text")["formatters"]["consent"] == {"format": TEXT_FORMAT}
    assert logging_config("json")["loggers"]["uvicorn.error"] == {"level": "INFO", "handlers": [],
                                                                  "propagate": True}


def test_the_host_keeps_its_own_logging_configuration():
    root = logging.getLogger()
    before = list(root.handlers)
    assert before  # the test run's own handlers
    configure_logging()
    assert root.handlers == before


def test_consent_serve_writes_access_lines_directly_and_the_same_as_through_logging():
    """Under `consent serve`'s own logging the access line skips the logging module (its dispatch cost more
    than the line); the line is the one logging would write. Any other listener keeps the logging path."""
    import subprocess
    import sys

    script = """
import logging, logging.config
from consent.logs import AccessRecord, direct_access_writer, logging_config
logging.config.dictConfig(logging_config("json"))
write = direct_access_writer()
assert write is not None
write(b"req-1", "/v1/decisions", "POST", 200, 0.00042, "acme")
logging.getLogger("consent.access").handle(AccessRecord(b"req-1", "/v1/decisions", "POST", 200, 0.00042, "acme"))
logging.getLogger().handlers[0].flush()
logging.getLogger("consent").addHandler(logging.NullHandler())
assert direct_access_writer() is None, "another handler listens: the lines must reach it"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    direct, logged = (json.loads(line) for line in done.stderr.splitlines()[:2])
    direct.pop("time"), logged.pop("time")
    assert direct == logged == {"level": "INFO", "logger": "consent.access", "message": "POST /v1/decisions 200",
                                "request_id": "req-1", "route": "/v1/decisions", "method": "POST", "status": 200,
                                "duration_ms": 0.42, "partner": "acme"}
