"""First contact: the API viewer at /schema works without internet, and `GET /` points to it."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib.metadata import version

from consent.api.viewer import STATIC

ABSOLUTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class PageAssets(HTMLParser):
    """What a page makes the browser load, and any script or style written into the page itself."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self.document_url: str | None = None
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self._in_script = True
            if attributes.get("src"):
                self.urls.append(attributes["src"])
        elif tag == "link" and attributes.get("href"):
            self.urls.append(attributes["href"])
        elif tag == "style" or attributes.get("style") or any(name.startswith("on") for name in attributes):
            self.inline.append(tag)
        if "data-openapi-url" in attributes:
            self.document_url = attributes["data-openapi-url"]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data.strip()[:80])


async def test_the_viewer_loads_only_the_services_own_files(client):
    page = await client.get("/schema")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (await client.get("/schema/swagger")).text == page.text
    assets = PageAssets()
    assets.feed(page.text)
    assert assets.inline == [], "inline scripts and styles need a weaker Content-Security-Policy"
    assert len(assets.urls) >= 3 and [url for url in assets.urls if ABSOLUTE.match(url)] == []
    for url in assets.urls:
        answer = await client.get(url)
        assert answer.status_code == 200, url
        assert answer.headers["content-type"].startswith(CONTENT_TYPES[url[url.rindex("."):]]), url
        if url.endswith(".css"):  # no font or image from elsewhere either
            assert [u for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", answer.text) if ABSOLUTE.match(u)] == []
            assert "@import" not in answer.text
    document = await client.get(assets.document_url)
    assert document.status_code == 200 and document.json()["openapi"].startswith("3.")


async def test_the_viewer_page_runs_under_its_content_security_policy(client):
    page = await client.get("/schema")
    policy = dict(directive.strip().split(" ", 1) for directive in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert "no-store" in page.headers["cache-control"]
    initializer = (STATIC / "viewer.js").read_text()
    # Swagger UI's default validator would send the document's address to a third party.
    assert "validatorUrl: null" in initializer


async def test_the_viewers_that_load_from_public_cdns_are_not_served(client):
    for viewer in ("redoc", "elements", "rapidoc"):
        assert (await client.get(f"/schema/{viewer}")).status_code == 404, viewer


def test_the_vendored_viewer_is_the_version_its_readme_names():
    readme = (STATIC / "swagger-ui" / "README.md").read_text()
    pinned = re.search(r"swagger-ui-dist@(\d+\.\d+\.\d+)", readme).group(1)
    assert f'"{pinned}"' in (STATIC / "swagger-ui" / "swagger-ui-bundle.js").read_text()
    assert "Apache License" in (STATIC / "swagger-ui" / "LICENSE").read_text()
    assert (STATIC / "swagger-ui" / "NOTICE").is_file()  # Apache-2.0 §4(d): kept with the files


async def test_the_root_points_to_the_viewer_the_document_and_the_health_checks(client):
    root = await client.get("/")  # no credentials
    assert root.status_code == 200, root.text
    pointers = root.json()
    assert (pointers["documentation"], pointers["openapi"]) == ("/schema", "/schema/openapi.json")
    assert pointers["version"] == version("consent")
    document = (await client.get(pointers["openapi"])).json()
    assert document["info"]["version"] == version("consent")
    viewer = await client.get(pointers["documentation"])
    assert viewer.status_code == 200 and "swagger-ui" in viewer.text
    links = [pointers["metrics"], pointers["oauth_authorization_server"], *pointers["health"].values()]
    for link in links:
        assert (await client.get(link)).status_code == 200, link
