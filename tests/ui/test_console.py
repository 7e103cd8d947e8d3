"""The console's files at /ui (proxy/ui/): served from the package, behind the admin API's auth."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.ui import STATIC
from tests.fake_upstream import FakeUpstream
from tests.proxyserver import ProxyServer

TOKEN = "console-s3cret"


def basic(password: str, user: str = "me") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    with FakeUpstream() as upstream, ProxyServer(tmp_path_factory.mktemp("ui"), upstream.url, admin_token=TOKEN) as px:
        yield px


def test_the_page_and_its_modules_are_served_on_loopback(proxy: ProxyServer) -> None:
    page = httpx.get(proxy.url + "/ui")
    module = httpx.get(proxy.url + "/ui/static/app.js")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/static/app.js">' in page.text
    assert module.status_code == 200 and module.headers["content-type"].startswith("text/javascript")
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_a_trailing_slash_is_the_same_page(proxy: ProxyServer) -> None:
    assert httpx.get(proxy.url + "/ui/").text == httpx.get(proxy.url + "/ui").text


def test_the_vendored_graph_library_is_served_as_a_module(proxy: ProxyServer) -> None:
    r = httpx.get(proxy.url + "/ui/static/vendor/cytoscape.esm.min.mjs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert "export{" in r.text[-400:]


@pytest.mark.parametrize("path", ["/ui/static/../__init__.py", "/ui/static/vendor/VERSIONS", "/ui/static/nope.js"])
def test_nothing_but_console_files_is_served(proxy: ProxyServer, path: str) -> None:
    assert httpx.get(proxy.url + path).status_code in (400, 404)


def test_with_a_token_the_page_asks_the_browser_for_basic_credentials(locked: ProxyServer) -> None:
    r = httpx.get(locked.url + "/ui")
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="Interlock"'


def test_the_browser_prompt_credentials_open_the_page_and_the_api(locked: ProxyServer) -> None:
    assert httpx.get(locked.url + "/ui", headers=basic(TOKEN)).status_code == 200
    assert httpx.get(locked.url + "/api/runs", headers=basic(TOKEN)).status_code == 200
    assert httpx.get(locked.url + "/ui", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_wrong_password_is_refused(locked: ProxyServer) -> None:
    assert httpx.get(locked.url + "/ui", headers=basic("wrong")).status_code == 401
    assert httpx.get(locked.url + "/api/runs", headers=basic("wrong")).status_code == 401


def test_the_committed_vendor_files_match_their_pinned_checksums() -> None:
    vendor = STATIC / "vendor"
    for line in (vendor / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert {p.name for p in vendor.glob("LICENSE.*")} == {"LICENSE.cytoscape", "LICENSE.cytoscape-dagre", "LICENSE.dagre"}


def test_every_module_the_page_imports_exists() -> None:
    for js in STATIC.glob("*.js"):
        for line in js.read_text().splitlines():
            if line.startswith("import ") and " from " in line:
                target = line.rsplit(" from ", 1)[1].strip(' ";')
                assert (js.parent / target).resolve().is_file(), f"{js.name}: {target}"


def test_the_console_files_are_package_data() -> None:
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"ui/static/*", "ui/static/vendor/*"' in text
