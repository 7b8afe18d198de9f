"""The webhook senders' HTTP client (consent/adapters/webhook_http.py) against real servers on loopback: raw asyncio
servers started here, which count the connections they accept and record every request byte for byte, and answer
exactly what each test writes on the wire (keep-alive or not, chunked, oversized, stalled, garbage, TLS)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consent.adapters.url_guard import Destination
from consent.adapters.webhook_http import DRAIN_WAIT, MAX_DRAIN, Answer, DeliveryError, WebhookHttp
from tests.integration.webhook_receiver import eventually, free_port

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
LIMIT = 5.0  # seconds: the caller bounds every exchange (asyncio.timeout), so a hang fails instead of blocking


class Turn(NamedTuple):
    connection: int  # 1 for the first connection the server accepted
    request: int  # 1 for the first request on that connection
    writer: asyncio.StreamWriter


Respond = Callable[[Turn], Awaitable[bool]]  # writes an answer (or not); True keeps reading the connection


class Wire:
    """A raw HTTP/1.1 server on 127.0.0.1, plain or TLS."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.accepted = 0
        self.ended_by_client = 0  # connections the client closed (or reset) while the server waited to read
        self.requests: list[bytes] = []  # head and body, as received
        self.sni: list[str | None] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ended_here: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()

    async def start(self, tls: ssl.SSLContext | None = None) -> Wire:
        if tls is not None:
            tls.sni_callback = lambda _socket, name, _context: self.sni.append(name)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def end_connections(self, how: Callable[[asyncio.StreamWriter], None]) -> None:
        """Ends every open connection from the server's side, `how` being `close` or `reset`."""
        for writer in self._writers:
            self._ended_here.add(writer)
            how(writer)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._handlers.add(asyncio.current_task())
        self._writers.add(writer)
        self.accepted += 1
        connection, request = self.accepted, 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.ended_by_client += writer not in self._ended_here
                    return
                length = re.search(rb"\r\ncontent-length: *(\d+)", head.lower())
                self.requests.append(head + await reader.readexactly(int(length.group(1)) if length else 0))
                request += 1
                if not await self.respond(Turn(connection, request, writer)):
                    return
        except (OSError, asyncio.IncompleteReadError):
            return  # the client went away mid-answer: nothing left to serve
        finally:
            writer.close()
            self._writers.discard(writer)


def close(writer: asyncio.StreamWriter) -> None:
    writer.close()


def reset(writer: asyncio.StreamWriter) -> None:
    """Closed with a TCP reset rather than a FIN, as a server that aborts its connections does."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def reply(raw: bytes) -> Respond:
    """Always the same answer, the connection left open for the next request whatever the answer says."""

    async def respond(turn: Turn) -> bool:
        turn.writer.write(raw)
        await turn.writer.drain()
        return True

    return respond


async def hang_up(_turn: Turn) -> bool:
    """The request read, the connection closed without a word."""
    return False


async def reset_on_receipt(turn: Turn) -> bool:
    """The request read, the connection reset without a word."""
    reset(turn.writer)
    return False


def scripted(turns: dict[tuple[int, int], Respond], otherwise: Respond) -> Respond:
    """A special answer for some (connection, request) turns, `otherwise` for the rest."""

    async def respond(turn: Turn) -> bool:
        return await turns.get((turn.connection, turn.request), otherwise)(turn)

    return respond


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Wire]]]:
    wires: list[Wire] = []

    async def start(respond: Respond, tls: ssl.SSLContext | None = None) -> Wire:
        wires.append(await Wire(respond).start(tls))
        return wires[-1]

    yield start
    for wire in wires:
        await wire.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., WebhookHttp]]:
    made: list[WebhookHttp] = []

    def make(**options: int) -> WebhookHttp:
        made.append(WebhookHttp(**options))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
def client(clients) -> WebhookHttp:
    return clients()


def at(wire: Wire, path: str = "/hooks") -> Destination:
    return Destination(f"http://127.0.0.1:{wire.port}{path}", "127.0.0.1", "127.0.0.1")


async def post(client: WebhookHttp, destination: Destination, body: bytes = b'{"n": 1}',
               headers: dict[str, str] | None = None) -> Answer:
    async with asyncio.timeout(LIMIT):
        return await client.post(destination, headers or {}, body)


# The request on the wire, and the answer handed back


async def test_the_request_goes_out_as_written_and_the_answer_comes_back_with_lower_cased_headers(serve, client):
    wire = await serve(reply(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nX-Request-Id: r-1\r\n\r\n"))
    # The pinned address is connected to; the URL's name and port still make the Host header.
    destination = Destination(f"http://hooks.example:{wire.port}/in/bound?topic=consents&v=1", "hooks.example",
                              "127.0.0.1")
    body = b'{"type": "consent.granted"}\r\n\r\ntrailing'  # a blank line inside the body must not end it

    answer = await post(client, destination, body, {"content-type": "application/json", "webhook-id": "msg_1"})

    assert answer == Answer(202, {"content-length": "0", "x-request-id": "r-1"})
    assert wire.requests == [
        b"POST /in/bound?topic=consents&v=1 HTTP/1.1\r\n"
        b"host: hooks.example:%d\r\n"
        b"content-length: %d\r\n"
        b"content-type: application/json\r\n"
        b"webhook-id: msg_1\r\n"
        b"\r\n" % (wire.port, len(body)) + body]


async def test_a_target_outside_ascii_is_percent_encoded(serve, client):
    wire = await serve(reply(OK))

    await post(client, at(wire, "/hooks/café €?q=ü"))

    assert wire.requests[0].startswith(b"POST /hooks/caf%C3%A9%20%E2%82%AC?q=%C3%BC HTTP/1.1\r\n")


async def test_a_destination_without_an_address_is_reached_by_its_name(serve, client):
    wire = await serve(reply(OK))

    answer = await post(client, Destination(f"http://localhost:{wire.port}/hooks", "localhost", None))

    assert answer.status == 200
    assert b"\r\nhost: localhost:%d\r\n" % wire.port in wire.requests[0]


# Keep-alive


@pytest.mark.parametrize("kept", [
    OK,
    b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
], ids=["http-1.1", "http-1.0-keep-alive"])
async def test_posts_to_one_destination_share_a_kept_connection(serve, client, kept):
    wire = await serve(reply(kept))

    for _ in range(3):
        assert (await post(client, at(wire))).status == 200

    assert (wire.accepted, len(wire.requests)) == (1, 3)


@pytest.mark.parametrize("ending", [
    b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
], ids=["connection-close", "http-1.0"])
async def test_an_answer_that_ends_its_connection_makes_the_next_post_open_a_new_one(serve, client, ending):
    # The server keeps its end open: only what the answer says can make the client let the connection go.
    wire = await serve(reply(ending))

    for _ in range(2):
        assert (await post(client, at(wire))).status == 200

    assert wire.accepted == 2
    await eventually(lambda: wire.ended_by_client == 2, timeout=2, what="the client closing both connections")


# A kept connection the receiver closed


@pytest.mark.parametrize("how", [close, reset])
async def test_a_kept_connection_the_receiver_ended_while_idle_is_replaced_without_an_error(serve, client, how):
    wire = await serve(reply(OK))
    await post(client, at(wire))
    wire.end_connections(how)  # as receivers and load balancers end idle connections
    await asyncio.sleep(0.05)  # the end reaches the client before its next post

    assert (await post(client, at(wire))).status == 200
    assert (wire.accepted, len(wire.requests)) == (2, 2)


@pytest.mark.parametrize("drop", [hang_up, reset_on_receipt])
async def test_a_request_the_receiver_drops_on_a_kept_connection_goes_again_on_a_new_one(serve, client, drop):
    # The receiver ends the kept connection as the request arrives (its idle timeout racing the sender).
    wire = await serve(scripted({(1, 2): drop}, otherwise=reply(OK)))
    await post(client, at(wire))

    assert (await post(client, at(wire), b'{"n": 2}')).status == 200
    assert wire.accepted == 2
    assert wire.requests[2] == wire.requests[1]  # the very request dropped, sent again


async def test_a_dropped_request_goes_again_only_once(serve, client):
    wire = await serve(scripted({(1, 1): reply(OK)}, otherwise=hang_up))
    await post(client, at(wire))

    with pytest.raises(DeliveryError):
        await post(client, at(wire))
    assert (wire.accepted, len(wire.requests)) == (2, 3)  # the first, the dropped one, its one retry


@pytest.mark.parametrize("interim", [b"HTTP/1.1 100 Continue\r\n\r\n",
                                     b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"],
                         ids=["100", "103"])
async def test_an_interim_answer_is_passed_over_for_the_final_one(serve, client, interim):
    # A receiver may send 1xx answers before its final one, asked for or not; only the final one says how the
    # delivery went, and it must not be left on the connection for the next request to read as its own.
    async def with_interim(turn: Turn) -> bool:
        turn.writer.write(interim)
        await turn.writer.drain()
        await asyncio.sleep(0.01)
        turn.writer.write(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n")
        await turn.writer.drain()
        return True

    wire = await serve(scripted({(1, 1): with_interim}, otherwise=reply(OK)))

    assert await post(client, at(wire)) == Answer(503, {"retry-after": "7", "content-length": "0"})
    assert (await post(client, at(wire))).status == 200


# Draining an answer's body


async def test_a_chunked_answer_is_drained_and_its_connection_kept(serve, client):
    async def chunked(turn: Turn) -> bool:
        # In pieces, so that the body arrives after the headers and has to be waited for.
        for piece in (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"5\r\nhello\r\n",
                      b"6\r\n world\r\n", b"0\r\n\r\n"):
            turn.writer.write(piece)
            await turn.writer.drain()
            await asyncio.sleep(0.01)
        return True

    wire = await serve(chunked)

    for _ in range(3):
        assert (await post(client, at(wire))).status == 200

    assert wire.accepted == 1


async def test_an_answer_larger_than_max_drain_returns_at_once_and_its_connection_is_not_kept(serve, client):
    size = 4 * MAX_DRAIN

    async def large(turn: Turn) -> bool:
        turn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size)
        await turn.writer.drain()
        return True

    wire = await serve(scripted({(1, 1): large}, otherwise=reply(OK)))
    started = time.monotonic()

    assert (await post(client, at(wire))).status == 200
    assert time.monotonic() - started < DRAIN_WAIT / 2  # stopped by the size, not by the wait

    for _ in range(2):  # the same server's short answers do keep their connection: only the large one was dropped
        await post(client, at(wire))
    assert wire.accepted == 2


async def test_an_answer_whose_body_stalls_returns_after_drain_wait_and_its_connection_is_not_kept(serve, client):
    async def stalled(turn: Turn) -> bool:
        turn.writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf!")  # and the other half never
        await turn.writer.drain()
        return True

    wire = await serve(scripted({(1, 1): stalled}, otherwise=reply(OK)))
    started = time.monotonic()

    assert (await post(client, at(wire))).status == 200
    assert time.monotonic() - started < DRAIN_WAIT + 0.5

    for _ in range(2):
        await post(client, at(wire))
    assert wire.accepted == 2


# Failures below HTTP


async def test_nothing_listening_is_a_delivery_error(client):
    port = free_port()

    with pytest.raises(DeliveryError, match="ConnectionRefusedError"):
        await post(client, Destination(f"http://127.0.0.1:{port}/hooks", "127.0.0.1", "127.0.0.1"))


@pytest.mark.parametrize("said", [b"", b"HTTP/1.1 200 OK\r\ncontent-"], ids=["nothing", "half-a-head"])
async def test_a_fresh_connection_closed_before_an_answer_is_a_delivery_error_not_a_retry(serve, client, said):
    async def close_after(turn: Turn) -> bool:
        turn.writer.write(said)
        await turn.writer.drain()
        return False

    wire = await serve(close_after)

    with pytest.raises(DeliveryError):
        await post(client, at(wire))
    assert wire.accepted == 1  # a request that may have reached the receiver is not sent again at once


async def test_an_answer_that_is_not_http_is_a_delivery_error_and_its_connection_closed(serve, client):
    wire = await serve(reply(b"SSH-2.0-OpenSSH_9.6\r\n"))

    with pytest.raises(DeliveryError, match="HttpParser"):
        await post(client, at(wire))
    await eventually(lambda: wire.ended_by_client == 1, timeout=2, what="the client closing the connection")


# TLS


class Authority:
    """A throwaway certificate authority: its certificate in a file, and server certificates it signs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "consent tests' CA")])
        self.certificate = (
            self._valid_now(x509.CertificateBuilder()).subject_name(name).issuer_name(name)
            .public_key(self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        self.file = directory / "ca.pem"
        self.file.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _valid_now(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
        now = datetime.now(UTC)
        return (builder.serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1)))

    def server_context(self, name: str, *also: x509.GeneralName) -> ssl.SSLContext:
        """A TLS server's context with a certificate for `name` (and `also`), signed by this authority."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            self._valid_now(x509.CertificateBuilder())
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name), *also]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        chain = self.directory / f"{name}.pem"
        chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain)
        return context


@pytest.fixture(scope="module")
def authority(tmp_path_factory) -> Authority:
    return Authority(tmp_path_factory.mktemp("tls"))


def localhost(authority: Authority) -> ssl.SSLContext:
    return authority.server_context("localhost", x509.IPAddress(ipaddress.ip_address("127.0.0.1")))


def pinned_localhost(wire: Wire) -> Destination:
    # Connected to the checked address; the certificate checked against the name.
    return Destination(f"https://localhost:{wire.port}/hook", "localhost", "127.0.0.1")


async def test_tls_to_a_pinned_address_checks_the_certificate_against_the_name_and_sends_it_as_sni(
        serve, clients, authority, monkeypatch):
    # How an operator adds a private CA; read when the client builds its context (ssl.create_default_context).
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.file))
    client = clients()
    wire = await serve(reply(OK), tls=localhost(authority))

    answer = await post(client, pinned_localhost(wire), b"secret")

    assert answer.status == 200
    assert wire.sni == ["localhost"]
    assert wire.requests[0].startswith(b"POST /hook HTTP/1.1\r\nhost: localhost:%d\r\n" % wire.port)
    assert wire.requests[0].endswith(b"\r\n\r\nsecret")


async def test_tls_refuses_a_certificate_for_another_name(serve, clients, authority, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.file))
    client = clients()
    wire = await serve(reply(OK), tls=authority.server_context("other.example"))

    with pytest.raises(DeliveryError, match="SSLCertVerificationError"):
        await post(client, pinned_localhost(wire))
    assert wire.requests == []


async def test_tls_refuses_a_certificate_from_an_authority_not_trusted(serve, clients, authority, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    client = clients()
    wire = await serve(reply(OK), tls=localhost(authority))

    with pytest.raises(DeliveryError, match="SSLCertVerificationError"):
        await post(client, pinned_localhost(wire))
    assert wire.requests == []


# Closing


async def test_aclose_closes_the_idle_connections(serve, client):
    wire = await serve(reply(OK))
    await asyncio.gather(post(client, at(wire)), post(client, at(wire)))  # at once: two connections
    await asyncio.sleep(0.05)  # time enough for a close to arrive, if one were sent
    assert (wire.accepted, wire.ended_by_client) == (2, 0)

    await client.aclose()

    await eventually(lambda: wire.ended_by_client == 2, timeout=2, what="the server seeing both connections closed")


async def test_no_more_idle_connections_are_kept_per_destination_than_asked(serve, clients):
    client = clients(keep_per_destination=1)
    wire = await serve(reply(OK))

    await asyncio.gather(post(client, at(wire)), post(client, at(wire)))

    await eventually(lambda: wire.ended_by_client == 1, timeout=2, what="the second connection closed")
    await post(client, at(wire))
    assert wire.accepted == 2  # the one kept served the third post
