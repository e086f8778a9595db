"""One OpenID provider, one gateway with the web app and one headless Chromium per module
(browser tests are slow); screenshots of the page a failing test left go to test-output/web/."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.oidc.conftest import oidc_block
from tests.support.gateway import GatewayProcess
from tests.support.net import free_port
from tests.support.oidc import CLIENT_SECRET, OidcProvider

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SSHGATE_TEST_OUTPUT", ROOT / "test-output")) / "web"
WEB_ROLES = {"viewer_groups": ["security"], "admin_groups": ["security-admins"]}


class WebSite:
    """A gateway's web app: its URL and plain HTTP requests against it."""

    def __init__(self, gateway: GatewayProcess, port: int) -> None:
        self.gateway = gateway
        self.url = f"http://127.0.0.1:{port}"

    def request(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")


def web_gateway(
    root: Path, keys: Keys, upstream: Upstream, issuer: str, port: int, **extra: Any
) -> GatewayProcess:
    config = base_config(keys, upstream)
    config["identities"]["oidc"] = oidc_block(issuer)
    config["web"] = {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}", **WEB_ROLES}
    config["shutdown_grace_s"] = 1
    config.update(extra)
    gateway = GatewayProcess(
        root, config, env={"SGRO_PASSWORD": upstream.sshd.password, "OIDC_CLIENT_SECRET": CLIENT_SECRET}
    )
    gateway.start()
    gateway.wait_event("web.listening")
    return gateway


@pytest.fixture(scope="module")
def web_ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def web_provider(web_ports: tuple[int, int]) -> Iterator[OidcProvider]:
    redirects = ",".join(f"http://127.0.0.1:{p}/signin/callback" for p in web_ports)
    server = OidcProvider(web_redirect=redirects)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site(
    keys: Keys,
    upstream: Upstream,
    web_provider: OidcProvider,
    web_ports: tuple[int, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WebSite]:
    gateway = web_gateway(tmp_path_factory.mktemp("web"), keys, upstream, web_provider.issuer, web_ports[0])
    yield WebSite(gateway, web_ports[0])
    gateway.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--window-size=1280,900", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(10)
    yield driver
    driver.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def screenshot_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not request.node.stash.get(_FAILED, False) or "browser" not in request.fixturenames:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = request.getfixturevalue("browser")
    driver.save_screenshot(str(ARTIFACTS / f"{request.node.name}-{int(time.time())}.png"))
