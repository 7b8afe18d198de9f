"""The webhook senders' HTTP client: a POST, the answer's status and headers, nothing more.

httpx spent about half of a sender's CPU (py-spy on a sender process delivering as fast as it could, ~490 a second,
BENCHMARKS.md): more than the claims, the signatures and the ledger together. A delivery needs little of a
general client: one method, no redirects, cookies, proxies or decompression, and the answer's body is never
used. This one speaks HTTP/1.1 over asyncio streams, keeps connections alive per destination, and parses
answers with httptools (the parser uvicorn serves with).

The caller bounds the whole exchange in time; here an answer's body is read (and dropped) only to keep its
connection, up to MAX_DRAIN bytes and DRAIN_WAIT seconds, else the connection is closed.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import NamedTuple
from urllib.parse import quote, urlsplit

import httptools

from consent.adapters.url_guard import DEFAULT_PORTS, Destination

MAX_DRAIN = 64 * 1024  # bytes of an answer's body read to keep the connection alive
DRAIN_WAIT = 1.0  # seconds to wait for the rest of an answer once its status and headers are in
IDLE_LIMIT = 15.0  # seconds a connection may wait for its next request (receivers close idle ones too)
READ_SIZE = 65536
# RFC 3986's characters that may stand as they are in a request target; anything else is percent-encoded.
_TARGET_SAFE = "/?#[]@!$&'()*+,;=:-._~%"


class DeliveryError(Exception):
    """The exchange failed below HTTP: no connection, a reset, a broken answer."""


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # names lower-cased


class _Key(NamedTuple):
    host: str  # the address connected to (or the name, for an allowed host)
    port: int
    tls_name: str | None  # the name TLS checks the certificate against, None for http://


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()

    def usable(self) -> bool:
        """Not ended by the receiver meanwhile: neither closed (EOF) nor reset (an error waiting in the reader)."""
        return not (self.writer.is_closing() or self.reader.at_eof() or self.reader.exception() is not None)


class _Parsed:
    """httptools' callbacks: what an answer says, as it arrives."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.headers_done = self.complete = False
        self.body_bytes = 0
        self.keep_alive = self.interim = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code() if self.parser is not None else 0
        if 100 <= status < 200 and status != 101:  # an interim answer: the final one follows
            self.headers, self.interim = {}, True
            return
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True
        # llhttp forgets the answer's framing once the message is done: asked afterwards, it always says no.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()


class _Stale(Exception):
    """A kept connection that the receiver had closed: the request goes again on a new one."""


class WebhookHttp:
    def __init__(self, keep_per_destination: int = 64) -> None:
        self._idle: dict[_Key, list[_Connection]] = {}
        self._keep = keep_per_destination
        self._tls = ssl.create_default_context()

    async def post(self, destination: Destination, headers: dict[str, str], body: bytes) -> Answer:
        parts = urlsplit(destination.url)
        tls = parts.scheme == "https"
        key = _Key(destination.address or destination.host, parts.port or DEFAULT_PORTS[parts.scheme],
                   destination.host if tls else None)
        target = quote(parts.path or "/", safe=_TARGET_SAFE) + (
            "?" + quote(parts.query, safe=_TARGET_SAFE) if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"host: {parts.netloc}", f"content-length: {len(body)}",
                 *(f"{name}: {value}" for name, value in headers.items())]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        kept = self._kept(key)
        if kept is not None:
            try:
                return await self._exchange(key, kept, request, reused=True)
            except _Stale:
                pass
        return await self._exchange(key, await self._connect(key), request, reused=False)

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _kept(self, key: _Key) -> _Connection | None:
        connections = self._idle.get(key)
        now = time.monotonic()
        while connections:
            connection = connections.pop()
            if now - connection.idle_since < IDLE_LIMIT and connection.usable():
                return connection
            connection.close()
        return None

    async def _connect(self, key: _Key) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                key.host, key.port, ssl=self._tls if key.tls_name else None, server_hostname=key.tls_name,
                limit=READ_SIZE)
        except (OSError, ssl.SSLError, UnicodeError) as error:
            raise DeliveryError(type(error).__name__) from None
        return _Connection(reader, writer)

    async def _exchange(self, key: _Key, connection: _Connection, request: bytes, reused: bool) -> Answer:
        parsed = _Parsed()
        parser = parsed.parser = httptools.HttpResponseParser(parsed)
        received = False
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            while not parsed.headers_done:
                data = await connection.reader.read(READ_SIZE)
                if not data:
                    if reused and not received:
                        raise _Stale
                    raise DeliveryError("the receiver closed the connection before answering")
                received = True
                parser.feed_data(data)
            answer = Answer(parser.get_status_code(), parsed.headers)
            if await self._drained(connection, parser, parsed) and parsed.keep_alive:
                self._keep_alive(key, connection)
            else:
                connection.close()
            return answer
        except _Stale:
            connection.close()
            raise
        except (OSError, ssl.SSLError, httptools.HttpParserError) as error:
            connection.close()
            if reused and not received and isinstance(error, OSError):  # reset by the receiver meanwhile
                raise _Stale from None
            raise DeliveryError(type(error).__name__) from None
        except BaseException:  # cancelled, or the caller's time ran out: the connection's state is unknown
            connection.close()
            raise

    @staticmethod
    async def _drained(connection: _Connection, parser: httptools.HttpResponseParser, parsed: _Parsed) -> bool:
        """The rest of the answer read, if it is short and quick: the connection can serve again."""
        deadline = time.monotonic() + DRAIN_WAIT
        while not parsed.complete:
            left = deadline - time.monotonic()
            if parsed.body_bytes > MAX_DRAIN or left <= 0:
                return False
            try:
                data = await asyncio.wait_for(connection.reader.read(READ_SIZE), left)
            except TimeoutError:
                return False
            if not data:
                return False
            parser.feed_data(data)
        return True

    def _keep_alive(self, key: _Key, connection: _Connection) -> None:
        connections = self._idle.setdefault(key, [])
        if len(connections) >= self._keep:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        connections.append(connection)
