"""/docs: Swagger UI from the service's own assets, rendered in a real browser; KV_DOCS=off."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import httpx
import pytest

from tests.conftest import CI, Server, ServerFactory

# What a page may reference and the content type each kind of asset must be served with.
ASSET_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}
# Swagger UI 5 renders one block per operation: the method, then the path as the document has it.
OPERATION = re.compile(
    r'class="opblock-summary-method">(\w+)</span>'
    r'.*?class="opblock-summary-path" data-path="([^"]+)"',
    re.S,
)


class _References(HTMLParser):
    """Every src and href in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def page_references(html: str) -> list[str]:
    """The URLs a docs page loads: its src/href attributes and the document Swagger UI fetches."""
    parser = _References()
    parser.feed(html)
    return parser.urls + re.findall(r"\burl: '([^']*)'", html)


def chromium() -> str:
    """The Chromium binary; skip (or, with CI=true, fail) when it is not installed."""
    path = shutil.which("chromium")
    if path:
        return path
    reason = "chromium is not installed (apt-get install chromium; .ci/run installs it)"
    if CI:
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


def rendered_dom(url: str) -> str:
    """The DOM of `url` once headless Chromium ran its scripts; no other host resolves."""
    with tempfile.TemporaryDirectory(prefix="kvkit-chromium-") as profile:
        command = [
            chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            # Offline as on a machine without internet: any name but the service's fails.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=8000",
            "--dump-dom",
            url,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-5_000:]
    return result.stdout


@pytest.fixture(scope="module")
def docs_server(server_factory: ServerFactory) -> Server:
    return server_factory("sqlite")


@pytest.fixture(scope="module")
def docs(docs_server: Server) -> httpx.Client:
    return docs_server.client()


@pytest.fixture(scope="module")
def no_docs(server_factory: ServerFactory) -> httpx.Client:
    return server_factory("sqlite", KV_DOCS="off").client()


def test_docs_page_references_nothing_outside_the_service(docs: httpx.Client) -> None:
    """The /docs page names no other host: no CDN, no fonts, only the service's own paths."""
    response = docs.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert re.findall(r"(?:https?:)?//[\w.-]+", response.text) == []
    references = page_references(response.text)
    assert references
    assert all(url.startswith("/") and not url.startswith("//") for url in references), references


def test_every_asset_of_the_docs_page_is_served(docs: httpx.Client) -> None:
    """Each URL the /docs page loads answers 200 with the content type of its kind."""
    references = page_references(docs.get("/docs").text)
    assert {"/openapi.json", "/docs/assets/swagger-ui-bundle.js"} <= set(references)
    for url in references:
        response = docs.get(url)
        assert response.status_code == 200, url
        expected = ASSET_TYPES[url[url.rindex(".") :]]
        assert response.headers["content-type"].split(";")[0] == expected, url
        assert response.content, url


def test_served_swagger_ui_is_version_5_or_later(docs: httpx.Client) -> None:
    """The bundle is Swagger UI 5+, the first to render OpenAPI 3.1 (what FastAPI emits)."""
    bundle = docs.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"', bundle.text)
    assert version, "no Swagger UI version in the bundle"
    assert int(version[1]) >= 5, version[0]
    assert docs.get("/openapi.json").json()["openapi"].startswith("3.1")


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/..%2F__init__.py",
        "/docs/assets/%2e%2e%2fcore.py",
        "/docs/assets/redoc.standalone.js",  # in the same package directory, but not listed
        "/docs/assets/",
        "/docs/assets",
    ],
)
def test_asset_route_serves_no_other_file(docs: httpx.Client, path: str) -> None:
    """A name that is not one of Swagger UI's listed files is a 404 problem, never a file."""
    response = docs.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_redoc_is_not_served(docs: httpx.Client) -> None:
    """/redoc (FastAPI's ReDoc page loads its script and fonts from the internet) is 404."""
    response = docs.get("/redoc")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_browser_renders_every_operation_of_the_api(
    docs_server: Server, docs: httpx.Client
) -> None:
    """Headless Chromium, offline, renders /docs with one Swagger UI block per API operation."""
    spec = docs.get("/openapi.json").json()
    expected = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
    }
    assert {("POST", "/v1/items"), ("GET", "/v1/items/{key}")} <= expected
    dom = rendered_dom(docs_server.url + "/docs")
    assert set(OPERATION.findall(dom)) == expected, dom[-5_000:]


@pytest.mark.parametrize(
    "path", ["/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"]
)
def test_docs_off_serves_neither_page_nor_document(no_docs: httpx.Client, path: str) -> None:
    """With KV_DOCS=off the docs pages, their assets and the OpenAPI document are 404 problems."""
    response = no_docs.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
