"""Log lines: JSON lines for machines, readable text on a terminal; one access line per request.

`consent serve` configures the root logger with `logging_config` and gives uvicorn the same, so that
its own lines look alike. The app itself never configures logging: whoever hosts it decides where lines
go (a test, a host's own setup), which is also why the access line is an ordinary log record.

No line carries a subject id, a path parameter, a query, a body or a token: the access line names the
route by its template (consent/api/observability.py).
"""

from __future__ import annotations

import atexit
import logging
import logging.config
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import msgspec

from consent.app.telemetry import current_request

ACCESS_LOGGER = "consent.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_FORMATS = ("auto", "json", "text")
_encode = msgspec.json.Encoder().encode


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class AccessRecord(logging.LogRecord):
    """One request's access line. Built for the hot path: LogRecord's own constructor looks up the caller's
    file and the process name for every record, and its attributes grow the record's dict one by one; here
    the dict is a copy of a template that has every key already (formatters read the record's __dict__)."""

    _TEMPLATE = {**logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, "HTTP request", (), None).__dict__,
                 "request_id": b"", "route": "", "method": "", "status": 0, "seconds": 0.0, "partner": None}

    def __init__(self, request_id: bytes, route: str, method: str, status: int, seconds: float,
                 partner: str | None) -> None:
        fields = self._TEMPLATE.copy()
        created = time.time()
        fields["created"] = created
        fields["msecs"] = (created - int(created)) * 1000
        fields["relativeCreated"] = (created - logging._startTime) * 1000
        fields["thread"] = threading.get_ident()
        fields["threadName"] = threading.current_thread().name
        fields["process"] = _pid
        fields["request_id"] = request_id
        fields["route"] = route
        fields["method"] = method
        fields["status"] = status
        fields["seconds"] = seconds
        fields["partner"] = partner
        self.__dict__ = fields

    def summary(self) -> str:
        return f"{self.method} {self.route} {self.status} {self.seconds * 1000:.2f}ms"

    def getMessage(self) -> str:  # noqa: N802 - logging's name
        """For text formatters: every field in the message."""
        partner = f" partner={self.partner}" if self.partner is not None else ""
        return f"{self.summary()} request_id={self.request_id.decode('ascii')}{partner}"

    def json(self, when: str) -> str:
        return access_json(when, self.request_id, self.route, self.method, self.status, self.seconds, self.partner)


def access_json(when: str, request_id: bytes, route: str, method: str, status: int, seconds: float,
                partner: str | None) -> str:
    """An access line in JSON, built as text: every value is of a fixed alphabet that JSON needs no escape for
    (request ids of A-Z a-z 0-9 . _ -, route templates of this service, HTTP methods of a fixed list, partner
    ids of a-z 0-9 _ -, numbers), so no encoder runs."""
    with_partner = f',"partner":"{partner}"' if partner is not None else ""
    return (f'{{"time":"{when}","level":"INFO","logger":"{ACCESS_LOGGER}","message":"{method} {route} {status}",'
            f'"request_id":"{request_id.decode("ascii")}","route":"{route}","method":"{method}","status":{status},'
            f'"duration_ms":{seconds * 1000:.3f}{with_partner}}}')


_MILLISECONDS = [f"{n:03d}" for n in range(1000)]  # a lookup costs less than a format


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message; an access line's fields; the request id of
    any other line written while a request is handled; the exception's traceback, if any."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def time_text(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # formatting the date is the costly part: once a second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{_MILLISECONDS[int((created - second) * 1000)]}Z"

    def format(self, record: logging.LogRecord) -> str:
        if type(record) is AccessRecord:  # the hot path
            return record.json(self.time_text(record.created))
        line: dict[str, Any] = {"time": self.time_text(record.created), "level": record.levelname,
                                "logger": record.name, "message": record.getMessage()}
        facts = current_request()
        if facts is not None:
            line["request_id"] = facts.request_id.decode("ascii")
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _encode(line).decode()


class BatchingStderrHandler(logging.StreamHandler):
    """Lines to stderr. Access lines are written out every `interval` seconds rather than one system call a
    line (that made the larger part of their cost); any other line at once, with those before it. (Uvicorn
    ends with its "Finished server process" line, then kills its own process with the signal it got: no
    exit handler runs after that.)

    Like a StreamHandler it keeps working once closed: a later logging.config.dictConfig (Litestar runs one
    at start-up) closes every handler it did not make, though the root logger still holds them."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(open(sys.stderr.fileno(), "w", buffering=1 << 16, encoding="utf-8",  # noqa: SIM115
                              errors="backslashreplace", closefd=False))
        threading.Thread(target=_flush_every, args=(weakref.ref(self), interval), name="consent-log-flush",
                         daemon=True).start()
        # At exit too: logging.shutdown flushes only the handlers no dictConfig has closed.
        atexit.register(_flush_at_exit, weakref.ref(self))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            if type(record) is not AccessRecord:  # rare lines go out at once, and take the access lines along
                self.stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise into the caller
            self.handleError(record)


AccessWriter = Callable[[bytes, str, str, int, float, "str | None"], None]


def direct_access_writer() -> AccessWriter | None:
    """A writer that puts each access line straight into the buffer of `consent serve`'s own stderr handler,
    when that handler alone would receive the line: the logging module's dispatch (record, logger walk,
    handler) cost more than the rest of the line (measured: ~15 of ~105 us of server CPU a request). None
    when anything else listens (a test's handler, a host's own setup, a filter, a text format): access lines
    then go through logging like any other line."""
    access = logging.getLogger(ACCESS_LOGGER)
    if not access.isEnabledFor(logging.INFO):
        return None
    handlers: list[logging.Handler] = []
    logger: logging.Logger | None = access
    while logger is not None:
        if logger.filters:
            return None
        handlers += logger.handlers
        logger = logger.parent if logger.propagate else None
    if len(handlers) != 1 or type(handlers[0]) is not BatchingStderrHandler:
        return None
    handler = handlers[0]
    formatter = handler.formatter
    if type(formatter) is not JsonFormatter or handler.filters or handler.level > logging.INFO:
        return None

    def write(request_id: bytes, route: str, method: str, status: int, seconds: float, partner: str | None) -> None:
        line = access_json(formatter.time_text(time.time()), request_id, route, method, status, seconds, partner)
        with handler.lock:  # the flushing thread writes the buffer out under the same lock
            handler.stream.write(line + "\n")

    return write


def _flush_at_exit(handler: weakref.ref[BatchingStderrHandler]) -> None:
    if (alive := handler()) is not None:
        alive.flush()


def _flush_every(handler: weakref.ref[BatchingStderrHandler], interval: float) -> None:
    """Until the handler is gone."""
    while (alive := handler()) is not None:
        alive.flush()
        del alive
        time.sleep(interval)


def wants_json(log_format: str, stream: Any = None) -> bool:
    """"json" or "text" as asked; "auto": JSON unless the stream (stderr) is a terminal."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"the log format is one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    if log_format != "auto":
        return log_format == "json"
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def logging_config(log_format: str = "auto", level: str = "INFO") -> dict[str, Any]:
    """A logging.config.dictConfig for `consent serve` and its uvicorn: every line to stderr, in one format."""
    formatter = {"()": "consent.logs.JsonFormatter"} if wants_json(log_format) else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"consent": formatter},
        "handlers": {"stderr": {"()": "consent.logs.BatchingStderrHandler", "formatter": "consent"}},
        "root": {"level": level, "handlers": ["stderr"]},
        # Uvicorn's loggers keep no handlers of their own: their lines reach the root's.
        "loggers": {**{name: {"level": level, "handlers": [], "propagate": True}
                       for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
                    # httpx (`consent catalog`, libraries) notes every request at INFO, URL and all: a URL may
                    # carry a token in its query.
                    **{name: {"level": "WARNING"} for name in ("httpx", "httpcore")}},
    }


def configure_logging() -> None:
    """A `consent` command's root logger, in CONSENT_LOG_FORMAT: read before the other settings, so that a
    bad value is refused by them (here it means auto). Like logging.basicConfig, nothing when the root logger
    has handlers already: then whoever runs the command (a test, say) has configured logging."""
    if logging.getLogger().handlers:
        return
    log_format = os.environ.get("CONSENT_LOG_FORMAT", "").strip() or "auto"
    logging.config.dictConfig(logging_config(log_format if log_format in LOG_FORMATS else "auto"))
