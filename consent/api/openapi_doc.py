"""The OpenAPI document partners read and generate clients from (/schema/openapi.json, `make openapi`).

Litestar builds it from the routes. What the routes cannot say through Litestar is added here, in one pass
over the built document (`finish`), so that a route added later gets it too:
- `security: []` on the routes that declare it: Litestar drops an empty list, and the document's global
  bearer requirement would then claim that they need a token;
- the 413, 429 and 503 problem answers, wherever they can happen;
- the stable problem codes (PROBLEM_CODES), as an enum on Problem.code;
- typed schemas of the OAuth forms and an example of every request body (consent/api/request_examples.py).
Each operation's id comes from OPERATION_IDS: the names generated clients call their methods by, so a
renamed handler does not rename a client's method.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import msgspec
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import OpenAPI

from consent.api.openapi_webhooks import webhooks_section
from consent.api.request_examples import BODY_SCHEMAS, REQUEST_EXAMPLES
from consent.domain.errors import PROBLEM_CODES

# "METHOD /path" (path parameters by name) -> operationId. A route missing here is named after its
# handler; tests/integration/test_openapi_document.py insists that every route is listed.
OPERATION_IDS = {
    "GET /health/live": "getLiveness",
    "GET /health/ready": "getReadiness",
    "GET /metrics": "getMetrics",
    "GET /.well-known/jwks.json": "getReceiptKeys",
    "GET /.well-known/oauth-authorization-server": "getAuthorizationServerMetadata",
    "POST /v1/oauth/token": "issueToken",
    "POST /v1/oauth/revoke": "revokeToken",
    "GET /v1/purposes": "listPurposes",
    "GET /v1/purposes/{purpose_id}": "getPurpose",
    "PUT /v1/purposes/{purpose_id}": "putPurpose",
    "POST /v1/purposes/{purpose_id}/retire": "retirePurpose",
    "GET /v1/scopes": "listScopes",
    "GET /v1/scopes/{scope_id}": "getScope",
    "PUT /v1/scopes/{scope_id}": "putScope",
    "GET /v1/partners": "listPartners",
    "GET /v1/partners/{partner_id}": "getPartner",
    "PUT /v1/partners/{partner_id}": "putPartner",
    "POST /v1/partners/{partner_id}/suspend": "suspendPartner",
    "POST /v1/partners/{partner_id}/reinstate": "reinstatePartner",
    "POST /v1/partners/{partner_id}/terminate": "terminatePartner",
    "GET /v1/partners/{partner_id}/health": "getPartnerHealth",
    "POST /v1/partners/{partner_id}/credentials": "createCredential",
    "POST /v1/partners/{partner_id}/credentials/{client_id}/rotate": "rotateCredential",
    "DELETE /v1/partners/{partner_id}/credentials/{client_id}": "revokeCredential",
    "GET /v1/subjects/{subject_id}/consents": "getConsents",
    "POST /v1/subjects/{subject_id}/consents": "changeConsents",
    "GET /v1/subjects/{subject_id}/history": "getHistory",
    "POST /v1/subjects/{subject_id}/erase": "eraseSubject",
    "POST /v1/subjects/{subject_id}/privacy-center/sessions": "createPrivacyCenterLink",
    "GET /v1/subjects/{subject_id}/export": "exportSubject",
    "GET /v1/subjects/{subject_id}/receipts/{event_id}": "getReceipt",
    "GET /v1/subjects/{subject_id}/pseudonyms/{partner_id}": "getPseudonym",
    "GET /v1/subjects/{subject_id}/permissions": "getPermissions",
    "POST /v1/decisions": "decide",
    "POST /v1/decisions/batch": "decideBatch",
    "GET /v1/audit": "getAuditLog",
    "GET /v1/catalog": "exportCatalog",
    "POST /v1/catalog/plan": "planCatalog",
    "POST /v1/catalog/apply": "applyCatalog",
    "POST /v1/partners/{partner_id}/webhooks": "createWebhook",
    "GET /v1/partners/{partner_id}/webhooks": "listWebhooks",
    "GET /v1/partners/{partner_id}/webhooks/{webhook_id}": "getWebhook",
    "PATCH /v1/partners/{partner_id}/webhooks/{webhook_id}": "updateWebhook",
    "DELETE /v1/partners/{partner_id}/webhooks/{webhook_id}": "deleteWebhook",
    "POST /v1/partners/{partner_id}/webhooks/{webhook_id}/rotate-secret": "rotateWebhookSecret",
    "GET /v1/partners/{partner_id}/webhooks/{webhook_id}/deliveries": "listWebhookDeliveries",
    "POST /v1/partners/{partner_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry": "retryWebhookDelivery",
    "POST /v1/partners/{partner_id}/webhooks/{webhook_id}/replay": "replayWebhook",
}

# Operations that never answer a problem 503: they read nothing from the database (readiness answers
# its own 503, with its checks).
NO_DATABASE = {"getLiveness", "getReadiness", "getMetrics", "getReceiptKeys", "getAuthorizationServerMetadata"}
# Requirements naming these schemes authenticate with a bearer token, and partner tokens are rate limited.
BEARER_SCHEMES = {"bearer", "partner"}

_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_SECONDS = {"type": "integer", "minimum": 0}
_RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": _SECONDS}
RATE_LIMITED = {
    "description": "rate_limited: the partner's token exceeded its requests a second",
    "headers": {"Retry-After": _RETRY_AFTER,
                "RateLimit-Limit": {"description": "Requests a second allowed to this partner", "schema": _SECONDS},
                "RateLimit-Remaining": {"description": "Requests left now: 0", "schema": _SECONDS},
                "RateLimit-Reset": {"description": "Seconds until a request is allowed again", "schema": _SECONDS}},
    "content": _PROBLEM,
}
PAYLOAD_TOO_LARGE = {"description": "payload_too_large: the body exceeds CONSENT_MAX_BODY_BYTES", "content": _PROBLEM}
UNAVAILABLE = {"description": "unavailable: the database does not answer, retry later (or master_key_unavailable: "
                              "this server lacks the key to the data)",
               "headers": {"Retry-After": _RETRY_AFTER}, "content": _PROBLEM}


def operation_key(http_method: str, path_components: list) -> str:
    """"METHOD /path", as OPERATION_IDS names routes; Litestar gives path parameters as definitions."""
    path = "/".join(part if isinstance(part, str) else "{" + part.name + "}" for part in path_components)
    return f"{HttpMethod(http_method).value} /{path}"


def declares_public(route_handler: HTTPRouteHandler) -> bool:
    """The handler says `security=[]`, and no layer above it asks for credentials."""
    return route_handler.security is not None and not route_handler.resolve_security()


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


class DocumentedOpenAPIConfig(OpenAPIConfig):
    """OpenAPIConfig that names operations from OPERATION_IDS and finishes the document Litestar builds."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.operation_id_creator = self._operation_id
        self._public_operations: set[str] = set()

    def _operation_id(self, route_handler: HTTPRouteHandler, http_method: str, path_components: list) -> str:
        # Called once per operation while Litestar builds the document: the one place that sees both the
        # handler and the operation, so it also notes which operations the handlers declare public.
        operation_id = OPERATION_IDS.get(operation_key(http_method, path_components),
                                         _camel(route_handler.handler_name))
        if declares_public(route_handler):
            self._public_operations.add(operation_id)
        return operation_id

    def to_openapi_schema(self) -> OpenAPI:
        self._public_operations = set()  # Litestar calls this first when it (re)builds the document
        built = super().to_openapi_schema()
        document = _FinishedOpenAPI(**{field.name: getattr(built, field.name) for field in fields(built)})
        document.public_operations = self._public_operations
        return document


class _FinishedOpenAPI(OpenAPI):
    """The built document; what is served and exported (`to_schema`) is finished."""

    public_operations: set[str]

    def to_schema(self) -> dict[str, Any]:
        return finish(super().to_schema(), self.public_operations)


def finish(document: dict[str, Any], public_operations: set[str]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for operation in _operations(document):
        operation_id = operation["operationId"]
        if operation_id in public_operations:
            operation["security"] = []
        requirements = operation.get("security", document.get("security", []))
        responses = operation["responses"]
        if any(BEARER_SCHEMES & requirement.keys() for requirement in requirements):
            responses.setdefault("429", copy.deepcopy(RATE_LIMITED))
        if operation_id in BODY_SCHEMAS and "requestBody" not in operation:  # a body the handler reads itself
            # Documented as JSON; the handler also reads the same document as application/yaml (the route's
            # description says so): a second media type trips up client generators (openapi-python-client).
            operation["requestBody"] = {"required": True, "content": {"application/json": {}}}
        body = operation.get("requestBody")
        if body is not None:
            responses.setdefault("413", copy.deepcopy(PAYLOAD_TOO_LARGE))
            _document_body(body, operation_id, schemas)
        if operation_id not in NO_DATABASE:
            responses.setdefault("503", copy.deepcopy(UNAVAILABLE))
        for response in responses.values():
            _any_of_answers(response)
    if "Problem" in schemas:
        schemas["Problem"]["properties"]["code"] = problem_code_schema()
    document["webhooks"] = webhooks_section()  # what partners receive (OpenAPI 3.1)
    return document


def _any_of_answers(response: dict[str, Any]) -> None:
    """An answer of one shape or another (e.g. the consents now, or as of `at`): `anyOf`, since the shapes
    do not exclude each other (an answer with `at` is also a valid answer without it, extra field and all)."""
    for media in response.get("content", {}).values():
        schema = media.get("schema", {})
        if "oneOf" in schema:
            schema["anyOf"] = schema.pop("oneOf")


def _operations(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict) and "responses" in operation:
                yield operation


def _document_body(body: dict[str, Any], operation_id: str, schemas: dict[str, Any]) -> None:
    typed = BODY_SCHEMAS.get(operation_id)
    if typed is not None:
        (ref,), components = msgspec.json.schema_components([typed], ref_template="#/components/schemas/{name}")
        schemas.update(components)
        for media in body["content"].values():
            media["schema"] = ref
    if operation_id in REQUEST_EXAMPLES:
        for media in body["content"].values():
            media["example"] = copy.deepcopy(REQUEST_EXAMPLES[operation_id])


def problem_code_schema() -> dict[str, Any]:
    meanings = "\n".join(f"- `{code}`: {meaning}" for code, meaning in PROBLEM_CODES.items())
    return {"type": "string", "enum": list(PROBLEM_CODES),
            "description": f"Stable, machine-readable reason; `type` is `urn:consent:problem:<code>`.\n\n{meanings}"}
