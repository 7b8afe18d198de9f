"""Print the OpenAPI document the server serves: `python -m consent.api.openapi_export > openapi/openapi.json`;
with `catalog`, the JSON Schema of a catalog document (openapi/catalog.schema.json, for editors and CI)."""

from __future__ import annotations

import json
import sys

from consent.api.app import create_app
from consent.config import Settings


def document() -> dict:
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"))
    return app.openapi_schema.to_schema()


def catalog_schema() -> dict:
    import msgspec

    from consent.api.schemas import CatalogDocument

    schema = msgspec.json.schema(CatalogDocument)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Consent catalog document", **schema}


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(catalog_schema() if sys.argv[1:] == ["catalog"] else document()))
