"""Print the OpenAPI document the server serves: `python -m consent.api.openapi_export > openapi/openapi.json`."""

from __future__ import annotations

import json
import sys

from consent.api.app import create_app
from consent.config import Settings


def document() -> dict:
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"))
    return app.openapi_schema.to_schema()


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(document()))
