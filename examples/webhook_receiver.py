"""Receive consent events by webhook, with the standard library's HTTP server and the consent-client SDK.

Run: WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py [PORT]   (default 8080)
Every request is checked (Standard Webhooks signature and timestamp) before its CloudEvent is read;
replace `handle` with your own work.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from consent_client import CONSENT_ENDED, CloudEvent, InvalidEvent, WebhookVerificationError, WebhookVerifier

MAX_BODY = 1_048_576


def handle(event: CloudEvent) -> None:
    if event.type in CONSENT_ENDED:
        change = event.consent_change()
        print(f"consent ended: {event.kind} {change.purpose if change else ''} (event {event.id})")
    else:
        print(f"event {event.kind} (event {event.id})")


class SeenIds:
    """The last webhook ids handled: a sender retries after a timeout, so one event may come twice."""

    def __init__(self, size: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def first_time(self, webhook_id: str) -> bool:
        if webhook_id in self._ids:
            return False
        self._ids[webhook_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


def make_server(verifier: WebhookVerifier, port: int, on_event: Callable[[CloudEvent], None] = handle,
                host: str = "127.0.0.1") -> ThreadingHTTPServer:
    seen = SeenIds()

    class WebhookHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server looks for
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._answer(413)
            body = self.rfile.read(length)
            try:
                event = verifier.verify(body, self.headers)
            except WebhookVerificationError:
                return self._answer(401)  # not from the service, or replayed: never processed
            except InvalidEvent:
                return self._answer(400)
            if seen.first_time(self.headers["webhook-id"]):
                on_event(event)
            self._answer(204)  # 2xx tells the sender not to retry

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # the default line names the client's address; keep logs free of it

    return ThreadingHTTPServer((host, port), WebhookHandler)


if __name__ == "__main__":
    server = make_server(WebhookVerifier(os.environ["WEBHOOK_SECRET"]), int(sys.argv[1]) if len(sys.argv) > 1 else 8080)
    print(f"listening on http://127.0.0.1:{server.server_port}/")
    server.serve_forever()
