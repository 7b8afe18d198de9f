"""The SDK's examples in examples/ work as their docstrings say: the partner's check against the embedded
server, the webhook receiver with requests signed by the reference library."""

from __future__ import annotations

import base64
import importlib.util
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import standardwebhooks
from conftest import Admin, free_port, new_subject
from consent_client import PartnerClient, WebhookVerifier, sign

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_partner_example_prints_the_decision_and_exits_by_it(embedded: Admin, acme_credential, capsys):
    example = load("partner_decision")
    subject = new_subject()
    embedded.consent(subject)
    with PartnerClient(embedded.base, *acme_credential) as client:
        assert example.check(client, subject, "marketing", ["profile.email"]) == 0
        assert "profile.email: permitted until" in capsys.readouterr().out
        assert example.check(client, subject, "marketing", ["profile.email", "orders.history"]) == 1
        assert "orders.history: denied (scope_not_approved)" in capsys.readouterr().out
        assert example.check(client, subject, "marketing", []) == 2  # no scope: a malformed question
        assert "refused: validation_failed" in capsys.readouterr().err


@pytest.fixture
def receiver():
    example = load("webhook_receiver")
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    received = []
    server = example.make_server(WebhookVerifier(secret), free_port(), received.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", secret, received
    server.shutdown()
    server.server_close()


EVENT = (b'{"specversion":"1.0","id":"0b9f6b1e-8f0e-4c59-9d1e-2f8c2b1f5d10","source":"/consent",'
         b'"type":"io.consent.v1.subject.withdrawn","time":"2026-03-03T12:00:00Z","subject":"user-42",'
         b'"datacontenttype":"application/json","data":{"purpose":"marketing","partner":"acme","scopes":null,'
         b'"purpose_version":1,"source":"web","occurred_at":"2026-03-03T12:00:00Z","reason":null,'
         b'"position":7,"stream_version":2}}')


def test_the_webhook_receiver_accepts_signed_events_once_and_refuses_the_rest(receiver):
    url, secret, received = receiver
    stamp = datetime.now(UTC)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(stamp.timestamp())),
               "webhook-signature": standardwebhooks.Webhook(secret).sign("msg_1", stamp, EVENT.decode()),
               "content-type": "application/cloudevents+json"}
    assert httpx.post(url, content=EVENT, headers=headers).status_code == 204
    assert httpx.post(url, content=EVENT, headers=headers).status_code == 204  # a retry: acknowledged, not redone
    assert [e.consent_change().purpose for e in received] == ["marketing"]

    assert httpx.post(url, content=EVENT.replace(b"acme", b"evil"), headers=headers).status_code == 401
    stale = sign(secret, "msg_2", EVENT, timestamp=int(time.time()) - 3600)
    assert httpx.post(url, content=EVENT, headers=stale).status_code == 401
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    assert httpx.post(url, content=EVENT, headers=sign(other, "msg_3", EVENT)).status_code == 401
    not_an_event = b'{"hello": "world"}'
    assert httpx.post(url, content=not_an_event, headers=sign(secret, "msg_4", not_an_event)).status_code == 400
    assert len(received) == 1
