"""The AsyncAPI 3.0 document of the events, generated from the event Structs.

`python -m consent.adapters.asyncapi > openapi/asyncapi.yaml`; a test fails when the
committed document differs from what the code can emit.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec
import yaml

from consent.adapters.cloudevents import PRIVATE_FIELDS, PSEUDONYMOUS, TYPE_PREFIX, is_published
from consent.domain.events import EVENT_TYPES

# How an id is written as one subject token (consent/adapters/cloudevents.py, `subject_token`).
TOKEN_FORM = ("one subject token: every character outside A-Z a-z 0-9 _ - is written %XX per UTF-8 byte "
              "(a dot as %2E), so a wildcard `*` matches any id; decode with any URL decoder")


def _channel(tag: str) -> tuple[str, str, dict[str, Any]]:
    aggregate, kind = tag.split(".", 1)
    if aggregate == "subject":
        address = f"consent.v1.subject.{kind}.{{purpose}}.{{partner}}"
        parameters = {"purpose": {"description": f"purpose id, or _ when none; {TOKEN_FORM}"},
                      "partner": {"description": f"partner id, or _ for a first-party choice; {TOKEN_FORM}"}}
    else:
        address = f"consent.v1.{aggregate}.{kind}.{{id}}"
        parameters = {"id": {"description": f"{aggregate} id; {TOKEN_FORM}"}}
        if aggregate == "scope":
            parameters["id"]["examples"] = ["orders", "profile%2Eemail"]
    return f"{aggregate}_{kind}", address, parameters


def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components([c for t, c in EVENT_TYPES.items() if is_published(t)],
                                                   ref_template="#/components/schemas/{name}")
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for tag, cls in sorted(EVENT_TYPES.items()):
        if not is_published(tag):
            continue
        name, address, parameters = _channel(tag)
        data = dict(components[cls.__name__])
        data["properties"] = {k: v for k, v in data["properties"].items() if k not in (*PRIVATE_FIELDS, "type")}
        data["properties"]["position"] = {"type": "integer", "description": "global position in the log"}
        data["properties"]["stream_version"] = {"type": "integer", "description": "version within its stream"}
        data["required"] = sorted({*[r for r in data.get("required", []) if r in data["properties"]],
                                   "position", "stream_version"})
        components[cls.__name__] = data
        messages[name] = {
            "name": TYPE_PREFIX + tag,
            "title": cls.__name__,
            "contentType": "application/cloudevents+json",
            "headers": {"type": "object", "properties": {
                "Nats-Msg-Id": {"type": "string", "description": "the event id; the server drops duplicates"}}},
            "payload": {
                "type": "object",
                "required": ["specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"],
                "properties": {
                    "specversion": {"const": "1.0"},
                    "id": {"type": "string", "format": "uuid"},
                    "source": {"type": "string", "description": "this service's URI, /consent by default"},
                    "type": {"const": TYPE_PREFIX + tag},
                    "time": {"type": "string", "format": "date-time"},
                    "subject": {"type": "string", "description": "the subject, purpose, scope or partner id"},
                    "datacontenttype": {"const": "application/json"},
                    "data": {"$ref": f"#/components/schemas/{cls.__name__}"},
                },
            },
        }
        if tag.startswith("subject.") and "partner" in data["properties"]:
            payload = messages[name]["payload"]["properties"]
            payload["subject"] = {"type": "string", "description": (
                "the subject id; for an event about a partner with pairwise identifiers, that partner's "
                "pseudonym of the subject instead (the subject id is then in no field)")}
            payload[PSEUDONYMOUS] = {"type": "boolean", "description": (
                "CloudEvents extension, present (true) only when `subject` is a pairwise pseudonym")}
        channels[name] = {"address": address, "parameters": parameters,
                          "messages": {name: {"$ref": f"#/components/messages/{name}"}}}
        operations[f"receive_{name}"] = {"action": "receive", "channel": {"$ref": f"#/channels/{name}"}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Consent service events", "version": "1.0.0",
                 "description": "Every consent and catalog change, on the JetStream stream CONSENT over "
                                "consent.v1.>, as CloudEvents 1.0 in structured JSON mode. Per stream, "
                                "events arrive in stream-version order. Each id in a subject is one token, "
                                "percent-encoded (scope profile.email: consent.v1.scope.defined.profile%2Eemail); "
                                "the CloudEvent's `subject` holds the id itself. Earlier builds wrote a dotted "
                                "scope id as several tokens (consent.v1.scope.defined.profile.email) and a stream "
                                "may still hold such messages: consent.v1.scope.defined.> matches both forms."},
        "defaultContentType": "application/cloudevents+json",
        "servers": {"nats": {"host": "localhost:4222", "protocol": "nats"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": components},
    }


def render() -> str:
    return yaml.safe_dump(document(), sort_keys=True, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(render())
