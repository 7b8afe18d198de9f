"""First contact: the API viewer at /schema (Swagger UI), and `GET /`, which points to it.

The viewer's files are served from the package (consent/api/static/, the vendored version in its
README.md): the page loads nothing from elsewhere, so it works without internet and tells no third party
who reads the API. It runs no inline script, and the /schema routes send a Content-Security-Policy
that lets it load its own files only. Litestar's other viewers (Redoc, Elements, RapiDoc) would load
theirs from public CDNs: they are not served.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from litestar import Request, Router, get
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, YamlRenderPlugin
from litestar.static_files import create_static_files_router

SCHEMA_PATH = "/schema"
STATIC = Path(__file__).parent / "static"
ASSETS = "viewer-assets"  # the route name of the viewer's files, under /schema/static
# Its own files, its own document; Swagger UI sets inline styles and shows data: images.
VIEWER_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
              "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
              "frame-ancestors 'none'")


class LocalSwaggerUI(OpenAPIRenderPlugin):
    """Swagger UI from the package's own files, at /schema and /schema/swagger."""

    def __init__(self) -> None:
        super().__init__(path=["/", "/swagger"])

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        def asset(name: str) -> str:
            return html.escape(request.app.route_reverse(ASSETS, file_path=f"/{name}"))

        info = openapi_schema["info"]
        title = html.escape(f"{info['title']} {info['version']}")
        document = html.escape(self.get_openapi_json_route(request))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<link rel="icon" type="image/png" href="{asset('swagger-ui/favicon-32x32.png')}">
<link rel="stylesheet" href="{asset('swagger-ui/swagger-ui.css')}">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{document}"></div>
<script src="{asset('swagger-ui/swagger-ui-bundle.js')}"></script>
<script src="{asset('viewer.js')}"></script>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        # Public library code that changes only with a release: caches may keep it for an hour.
        router.register(create_static_files_router(
            path="/static", directories=[STATIC], name=ASSETS,
            cache_control=CacheControlHeader(max_age=3600, public=True)))


def render_plugins() -> list[OpenAPIRenderPlugin]:
    return [LocalSwaggerUI(), JsonRenderPlugin(), YamlRenderPlugin()]


def schema_router() -> Router:
    """The router Litestar serves the document and the viewer from (OpenAPIConfig.openapi_router)."""
    return Router(SCHEMA_PATH, route_handlers=[], include_in_schema=False,
                  response_headers=[ResponseHeader(name="Content-Security-Policy", value=VIEWER_CSP)])


@get("/", security=[], include_in_schema=False, sync_to_thread=False)
def index(request: Request) -> dict[str, Any]:
    """Where to start: no credentials needed, nothing but addresses."""
    config = request.app.openapi_config
    return {
        "service": config.title,
        "version": config.version,
        "documentation": SCHEMA_PATH,
        "openapi": f"{SCHEMA_PATH}/openapi.json",
        "health": {"live": "/health/live", "ready": "/health/ready"},
        "metrics": "/metrics",
        "oauth_authorization_server": "/.well-known/oauth-authorization-server",
    }
