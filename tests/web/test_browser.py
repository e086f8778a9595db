"""The sessions web app in headless Chromium against a real gateway, sshd and OpenID provider:
find a session by a printed word and play it, own sessions only without a role, watch a live
shell and terminate it, and the API's refusals (docs/api.md)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from sshgate.web.store import COOKIE
from tests.conftest import Keys, Upstream
from tests.support.gateway import Client
from tests.support.net import free_port
from tests.support.oidc import OidcProvider, device_id_token
from tests.support.terminal import Terminal
from tests.web.conftest import ARTIFACTS, ROOT, WebSite, web_gateway


def wait_for(browser: Any, css: str, timeout: float = 15.0) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def sign_in(browser: Any, site: WebSite, email: str, path: str = "/") -> None:
    """As a person would: open the app, get sent to the provider, sign in, allow, come back."""
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    browser.get(site.url + path)
    wait_for(browser, "#email").send_keys(email)
    browser.find_element(By.ID, "password").send_keys("password")
    browser.find_element(By.ID, "sign-in").click()
    deadline = time.monotonic() + 15
    while not browser.current_url.startswith(site.url):
        allow = browser.find_elements(By.ID, "allow")
        if allow:
            allow[0].click()
        assert time.monotonic() < deadline, f"sign-in stuck at {browser.current_url}"
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while email not in browser.find_element(By.ID, "who").text:
        assert time.monotonic() < deadline, "the page never showed who signed in"
        time.sleep(0.05)


def browser_api(browser: Any, path: str, method: str = "GET", csrf: bool = True) -> tuple[int, Any]:
    """A request from the page itself: its cookie, and the CSRF token from its meta tag."""
    script = """
const [path, method, csrf, done] = arguments;
const headers = csrf ? {"X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content} : {};
fetch(path, {method, headers, credentials: "same-origin"})
  .then(async (r) => done([r.status, await r.text()])).catch((e) => done([0, String(e)]));
"""
    status, text = browser.execute_async_script(script, path, method, csrf)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def run_recorded(client: Client, login: str, command: str) -> str:
    result = client.ssh(login, command)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


@pytest.fixture(scope="module")
def recorded(site: WebSite, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two finished sessions: alice printed a word, john another; their ids from the audit log."""
    alice = Client(site.gateway, keys.alice, tmp_path_factory.mktemp("alice"))
    john = Client(site.gateway, keys.john, tmp_path_factory.mktemp("john"))
    before = len(site.gateway.events("session.end"))
    assert "zebra-7731" in run_recorded(alice, "alice+web-1", "echo zebra-$((7700+31))")
    assert "john-only-word" in run_recorded(john, "john+web-1", "echo john-only-word")
    ends = site.gateway.wait_events("session.end", before + 2)
    starts = {e["session_id"]: e for e in site.gateway.events("session.start")}
    ids = {str(starts[e["session_id"]]["identity"]).split("@")[0]: e["session_id"] for e in ends[before:]}
    return {"alice": ids["alice"], "john": ids["john"]}


def test_a_viewer_finds_a_session_by_a_printed_word_and_plays_it(
    browser: Any, site: WebSite, recorded: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, site, "sec@corp.com")
    wait_for(browser, "#sessions tbody tr")  # the first page, unfiltered
    browser.find_element(By.ID, "q").send_keys("zebra-7731")
    browser.find_element(By.ID, "search").click()
    deadline = time.monotonic() + 10
    while True:
        rows = browser.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")
        if len(rows) == 1 and "alice@corp.com" in rows[0].text:
            break
        assert time.monotonic() < deadline, [r.text for r in rows]
        time.sleep(0.05)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "list.png"))
    rows[0].find_element(By.CSS_SELECTOR, "a.session-link").click()
    assert wait_for(browser, "#fact-resource").text == "web-1"
    assert browser.find_element(By.ID, "fact-client-address").text == "127.0.0.1"
    assert browser.find_element(By.ID, "fact-native-user").text == "sgtest"
    assert browser.find_element(By.ID, "verify").text.startswith("Manifest check: OK")
    assert "allow" in browser.find_element(By.CSS_SELECTOR, "#decisions tbody").text
    browser.find_element(By.CSS_SELECTOR, "button.play[data-channel='1']").click()
    deadline = time.monotonic() + 10
    while "zebra-7731" not in browser.find_element(By.ID, "player").text:
        assert time.monotonic() < deadline, f"the player never showed the word: {browser.get_log('browser')}"
        time.sleep(0.1)
    browser.execute_script("window.scrollTo(0, document.getElementById('verify').offsetTop - 16)")
    browser.save_screenshot(str(ARTIFACTS / "player.png"))
    if os.environ.get("SSHGATE_DOCS_SCREENSHOT"):  # README's picture: SSHGATE_DOCS_SCREENSHOT=1 pytest ...
        shutil.copy(ARTIFACTS / "player.png", ROOT / "docs" / "web-app.png")


def test_a_user_without_a_role_sees_only_their_own_sessions(
    browser: Any, site: WebSite, recorded: dict[str, str]
) -> None:
    sign_in(browser, site, "alice@corp.com")  # engineers: neither viewer nor admin
    status, me = browser_api(browser, "/api/v1/me")
    assert status == 200 and me["role"] == "user" and me["email"] == "alice@corp.com"
    status, body = browser_api(browser, "/api/v1/sessions?limit=200")
    assert status == 200 and body["sessions"]
    assert {s["identity"] for s in body["sessions"]} == {"idp:formal:human:alice@corp.com"}
    assert recorded["alice"] in {s["id"] for s in body["sessions"]}
    assert browser_api(browser, f"/api/v1/sessions/{recorded['alice']}")[0] == 200
    for path in (
        f"/api/v1/sessions/{recorded['john']}",
        f"/api/v1/sessions/{recorded['john']}/channels/1/cast",
    ):
        status, body = browser_api(browser, path)
        assert status == 403, (path, body)
    status, body = browser_api(browser, "/api/v1/sessions?q=john-only-word")
    assert status == 200 and body["sessions"] == []


def test_live_view_shows_typing_within_a_second_and_an_admin_terminates(
    browser: Any, site: WebSite, keys: Keys, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    alice = Client(site.gateway, keys.alice, tmp_path)
    before = len(site.gateway.events("session.start"))
    term = Terminal(alice.ssh_argv("alice+web-1", options=["-tt"]), rows=30, cols=100)
    try:
        term.write("PS1='live> '\n")
        term.read_until("live> ")
        session_id = site.gateway.wait_events("session.start", before + 1)[before]["session_id"]
        sign_in(browser, site, "admin@corp.com", f"/sessions/{session_id}")
        wait_for(browser, "button.watch[data-channel='1']").click()
        time.sleep(0.5)  # the subscription reaches the gateway
        live = browser.find_element(By.ID, "live")
        typed = time.monotonic()
        term.write("echo typed-$((4000+242))")
        while "echo typed-$((4000+242))" not in live.text:
            assert time.monotonic() - typed < 1.0, f"not shown within a second: {live.text[-200:]!r}"
            time.sleep(0.02)
        term.write("\n")
        term.read_until("typed-4242")
        # A terminal, not a text dump: the cursor moves back and "right" overwrites "-part".
        term.write("printf 'cursor-left-part\\033[5Dright\\n'\n")
        deadline = time.monotonic() + 5
        while "cursor-leftright" not in live.text:
            assert time.monotonic() < deadline, f"escape sequences not applied: {live.text[-300:]!r}"
            time.sleep(0.05)
        browser.find_element(By.ID, "terminate").click()
        term.read_until("sshgate: session terminated by admin@corp.com", timeout=10)
        term.wait(timeout=10)
        assert term.process.returncode != 0
        wait_for(browser, "#live-ended:not([hidden])")
    finally:
        term.close()
    event = site.gateway.wait_event("session.terminated", session_id=session_id)
    assert event["by"] == "admin@corp.com"
    site.gateway.wait_event("session.end", session_id=session_id)
    status, doc = browser_api(browser, f"/api/v1/sessions/{session_id}")
    assert status == 200 and doc["end_reason"] == "terminated" and doc["terminated_by"] == "admin@corp.com"


def test_api_refusals_in_order(browser: Any, site: WebSite, recorded: dict[str, str]) -> None:
    sid = recorded["john"]
    assert site.request("/api/v1/me")[0] == 401
    assert site.request(f"/api/v1/sessions/{sid}")[0] == 401
    assert site.request("/api/v1/me", headers={"Authorization": "Bearer not-a-token"})[0] == 401
    assert site.request(f"/api/v1/sessions/{sid}/terminate", "POST")[0] == 401
    sign_in(browser, site, "admin@corp.com")
    status, body = browser_api(browser, f"/api/v1/sessions/{sid}/terminate", "POST", csrf=False)
    assert status == 403 and "CSRF" in body["error"]
    status, body = browser_api(browser, "/api/v1/sessions/0123456789abcdef0123456789abcdef")
    assert status == 404
    assert (
        browser_api(browser, "/api/v1/sessions/0123456789abcdef0123456789abcdef/terminate", "POST")[0] == 404
    )
    for bad in (
        "..",
        "..%2F..%2Fetc%2Fpasswd",
        quote("../" + sid, safe=""),
        "%2e%2e",
        "a%00b",
        sid + "%2F..%2F..",
    ):
        status, body = browser_api(browser, f"/api/v1/sessions/{bad}")
        assert status == 404, (bad, status, body)
        assert "root:" not in json.dumps(body)
    assert browser_api(browser, f"/api/v1/sessions/{sid}/channels/..%2F1/cast")[0] == 404
    assert browser_api(browser, f"/api/v1/sessions/{sid}/channels/9/cast")[0] == 404
    for digits in ("%C2%B2", "%D9%A1"):  # superscript two, Arabic-Indic one: digits to str, not to int
        assert browser_api(browser, f"/api/v1/sessions/{sid}/channels/{digits}/cast")[0] == 404
        assert browser_api(browser, f"/api/v1/sessions/{sid}/channels/{digits}/live")[0] == 404
    status, _ = site.request("/static/..%2F..%2F..%2Fconfig.py")
    assert status in (403, 404)
    # An admin may ask, but a finished session cannot be terminated.
    assert browser_api(browser, f"/api/v1/sessions/{sid}/terminate", "POST")[0] == 409


class LiveReader:
    """The ``live`` route read as a script would, line by line, in a thread."""

    def __init__(self, url: str, cookie: str) -> None:
        request = urllib.request.Request(url, headers={"Cookie": f"{COOKIE}={cookie}"})
        self.response = urllib.request.urlopen(request, timeout=20)
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in self.response:
                self.lines.append(line.decode())

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"{text!r} not in the live stream: {self.lines[-10:]}"
            time.sleep(0.02)


def test_with_two_workers_live_view_and_terminate_reach_sessions_on_every_worker(
    browser: Any, keys: Keys, upstream: Upstream, web_provider: OidcProvider, web_ports: tuple[int, int],
    tmp_path: Path,
) -> None:  # fmt: skip
    listen = {"host": "127.0.0.1", "port": free_port()}
    gateway = web_gateway(
        tmp_path / "gw", keys, upstream, web_provider.issuer, web_ports[1], workers=2, listen=listen
    )
    site = WebSite(gateway, web_ports[1])
    alice = Client(gateway, keys.alice, tmp_path / "alice")
    terms: list[tuple[Terminal, str]] = []
    try:
        # Sessions until both workers hold one (SO_REUSEPORT spreads them); the app runs in one.
        web_pid = gateway.wait_event("web.listening")["pid"]
        gateway.wait_events("gateway.listening", 2)
        owners: set[int] = set()
        while len(owners) < 2 and len(terms) < 10:
            before = len(gateway.events("session.start"))
            term = Terminal(alice.ssh_argv("alice+web-1", options=["-tt"]))
            terms.append((term, ""))
            term.write("PS1='w> '\n")
            term.read_until("w> ")
            start = gateway.wait_events("session.start", before + 1)[before]
            terms[-1] = (term, start["session_id"])
            owners.add(start["pid"])
        assert len(owners) == 2 and web_pid in owners, (owners, web_pid)
        sign_in(browser, site, "admin@corp.com")
        cookie = browser.get_cookie(COOKIE)["value"]
        for i, (term, session_id) in enumerate(terms):
            live = LiveReader(f"{site.url}/api/v1/sessions/{session_id}/channels/1/live", cookie)
            time.sleep(0.5)  # the watch reaches the owning worker
            term.write(f"echo worker-$((40+2))-{i}\n")
            live.wait_for(f"worker-42-{i}")
            status, body = browser_api(browser, f"/api/v1/sessions/{session_id}/terminate", "POST")
            assert status == 202, body
            term.read_until("sshgate: session terminated by admin@corp.com")
            live.wait_for("event: end")
        assert {e["pid"] for e in gateway.wait_events("session.terminated", len(terms))} == owners
    finally:
        for term, _ in terms:
            term.close()
        gateway.stop()


def test_scripts_use_a_bearer_id_token_with_the_same_roles(
    site: WebSite, web_provider: OidcProvider, recorded: dict[str, str]
) -> None:
    token = device_id_token(web_provider.issuer, "sec@corp.com")
    bearer = {"Authorization": f"Bearer {token}"}
    status, me = site.request("/api/v1/me", headers=bearer)
    assert status == 200 and me == {
        "email": "sec@corp.com",
        "groups": ["security"],
        "role": "viewer",
        "csrf_token": None,
    }
    status, doc = site.request(f"/api/v1/sessions/{recorded['john']}", headers=bearer)
    assert status == 200 and doc["verify"]["ok"] and doc["decisions"][0]["action"] == "allow"
    # No cookie, so no CSRF token to ask for; a viewer still may not terminate.
    assert site.request(f"/api/v1/sessions/{recorded['john']}/terminate", "POST", bearer)[0] == 403
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert site.request("/api/v1/me", headers={"Authorization": f"Bearer {tampered}"})[0] == 401


def test_a_session_page_lists_sftp_operations(
    browser: Any, site: WebSite, keys: Keys, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    alice = Client(site.gateway, keys.alice, tmp_path)
    before = len(site.gateway.events("session.end"))
    folder = f"/tmp/sshgate-web-{os.getpid()}-{int(time.time())}"
    result = alice.sftp("alice+web-1", f"mkdir {folder}\nrmdir {folder}\n")
    assert result.returncode == 0, result.stderr
    session_id = site.gateway.wait_events("session.end", before + 1)[before]["session_id"]
    sign_in(browser, site, "sec@corp.com", f"/sessions/{session_id}")
    status, doc = browser_api(browser, f"/api/v1/sessions/{session_id}")
    assert status == 200, doc
    (channel,) = [c for c in doc["channels"] if c["kind"] == "sftp"]
    ops = [(e.get("op"), e.get("path")) for e in channel["events"]]
    assert ("mkdir", folder) in ops and ("rmdir", folder) in ops, ops
    assert folder in wait_for(browser, f"#channel-{channel['n']} table.events").text
    assert browser.find_elements(By.CSS_SELECTOR, f"#channel-{channel['n']} button.play") == []


def test_a_sign_in_completes_only_in_the_browser_that_started_it(site: WebSite) -> None:
    """Login CSRF: a callback link with a real state and code, opened elsewhere, signs nobody in."""
    connection = http.client.HTTPConnection("127.0.0.1", int(site.url.rsplit(":", 1)[1]), timeout=10)
    connection.request("GET", "/signin?next=//evil.example/")
    answer = connection.getresponse()
    answer.read()
    assert answer.status == 302
    location = urllib.parse.urlparse(answer.headers["Location"])
    query = urllib.parse.parse_qs(location.query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["redirect_uri"] == [site.url + "/signin/callback"] and query["nonce"][0]
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("sshgate_signin=") and query["state"][0] not in cookie and "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    status, body = site.request(f"/signin/callback?state={query['state'][0]}&code=stolen")
    assert status == 400 and "not started in this browser" in body
    status, body = site.request("/signin/callback?state=%C3%A9&code=x")  # non-ASCII: refused, not a 500
    assert status == 400 and "not started in this browser" in body
    connection.close()
