"""Nothing a user sees needs the internet: /docs, /redoc and the web page name no other
host, and every file they load is served by the service itself (a 200). The report's HTML
is checked in tests/test_html_report.py with the same helpers. Runs in-process: no network
at all."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from app.main import create_app
from jobs.settings import Settings
from tests.offline import css_urls, is_external, local_urls, page_urls

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

PAGES = ("/docs", "/redoc", "/")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    data_dir: Path = tmp_path_factory.mktemp("offline")
    app = create_app(Settings(data_dir=data_dir, database_url="", broker_url=""))
    return TestClient(app, base_url="http://balancer.internal")


@pytest.mark.parametrize("path", PAGES)
def test_page_names_no_other_host_and_serves_what_it_loads(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    urls = page_urls(page.text)
    assert [u for u in urls if is_external(u)] == [], f"{path} loads from another host"
    local = local_urls(urls)
    assert local, f"{path} names no local file: the parser missed them"
    for url in local:
        asset = client.get(url)
        assert asset.status_code == 200, (path, url)
        assert asset.content, (path, url)
        if asset.headers["content-type"].startswith("text/css"):
            assert not [u for u in css_urls(asset.text) if is_external(u)], url
            for inner in local_urls(css_urls(asset.text)):
                assert client.get(inner).status_code == 200, (url, inner)


def test_docs_load_swagger_ui_redoc_and_a_favicon_from_here(client: TestClient) -> None:
    docs = local_urls(page_urls(client.get("/docs").text))
    redoc = local_urls(page_urls(client.get("/redoc").text))
    assert any(u.endswith("swagger-ui-bundle.js") for u in docs), docs
    assert any(u.endswith("swagger-ui.css") for u in docs), docs
    assert any(u.endswith("redoc.standalone.js") for u in redoc), redoc
    assert any(u.endswith("favicon.png") for u in docs) and any(
        u.endswith("favicon.png") for u in redoc
    )
    assert "/openapi.json" in docs and "/openapi.json" in redoc
    # Swagger UI would send the schema's URL to validator.swagger.io for a badge.
    assert '"validatorUrl": null' in client.get("/docs").text
    # And the browser is told to load nothing from elsewhere (ReDoc's code asks for a logo).
    for path in ("/docs", "/redoc", "/"):
        csp = client.get(path).headers["content-security-policy"]
        assert "default-src 'self'" in csp and "http" not in csp and "*" not in csp, path


def test_the_checker_sees_external_urls() -> None:
    html = (
        '<link href="https://cdn.jsdelivr.net/x.css"><script src="//cdn.example/x.js"></script>'
        "<style>body{background:url(https://fonts.example/a.png)}</style>"
        "<script>const ui = SwaggerUIBundle({url: 'https://elsewhere.example/openapi.json'})"
        '</script><svg xmlns="http://www.w3.org/2000/svg"></svg><img src="data:image/png;,">'
    )
    assert [u for u in page_urls(html) if is_external(u)] == [
        "https://cdn.jsdelivr.net/x.css",
        "//cdn.example/x.js",
        "https://fonts.example/a.png",
        "https://elsewhere.example/openapi.json",
    ]
