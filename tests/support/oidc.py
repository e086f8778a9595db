"""A real OpenID provider for the tests (tests/oidc_provider, node) and a person who uses its pages.

The person drives the provider's own HTML over HTTP, as a browser without JavaScript would:
open the verification link, press Continue (or Abort), sign in, allow (or deny) access.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

PROVIDER_DIR = Path(__file__).resolve().parents[1] / "oidc_provider"
CLIENT_SECRET = "sshgate-test-secret"
PASSWORD = "password"


class OidcProvider:
    """``node server.mjs`` on 127.0.0.1; ``issuer`` once it printed ``ready``."""

    def __init__(
        self,
        port: int = 0,
        auth_methods: str = "client_secret_basic,client_secret_post",
        web_redirect: str | None = None,
    ) -> None:
        node = shutil.which("node")
        if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(
                "the test provider needs node and `npm ci` in tests/oidc_provider (scripts/bootstrap)"
            )
        self.process = subprocess.Popen(
            [node, "server.mjs", "--port", str(port), "--auth-methods", auth_methods]
            + (["--web-redirect", web_redirect] if web_redirect else []),
            cwd=PROVIDER_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready = threading.Event()
        found: list[str] = []

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                if line.startswith("ready "):
                    found.append(line.split()[1])
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30) or not found:
            self.stop()
            raise RuntimeError("the test OpenID provider did not start")
        self.issuer = found[0]
        self.port = int(self.issuer.rsplit(":", 1)[1])

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.issuer}/__stats", timeout=5) as response:
            return dict(json.loads(response.read()))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (name, value)


class _Forms(HTMLParser):
    """Forms with their hidden fields, and the buttons that submit them (also via form="id")."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, Form] = {}
        self._current: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = a.get("id") or f"form{len(self.forms)}"
            self.forms[self._current] = Form(a.get("action", ""), a.get("method", "get").lower())
        elif tag == "input" and self._current is not None and a.get("name"):
            self.forms[self._current].fields[a["name"]] = a.get("value", "")
        elif tag == "button":
            owner = a.get("form") or self._current
            if owner in self.forms:
                self.forms[owner].buttons[a.get("id", "")] = (a.get("name", ""), a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


class _StopAt(urllib.request.HTTPRedirectHandler):
    """Follows redirects, except one to ``prefix``: the test delivers that one itself."""

    def __init__(self) -> None:
        self.prefix: str | None = None
        self.stopped: str | None = None

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if self.prefix is not None and newurl.startswith(self.prefix):
            self.stopped = newurl
            return None  # urllib then raises HTTPError for the redirect
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Person:
    """Someone at a browser with their own cookies, approving (or not) a device sign-in, or
    signing in to a web app with the authorization code flow."""

    def __init__(self, email: str, password: str = PASSWORD) -> None:
        self.email = email
        self.password = password
        self._redirects = _StopAt()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), self._redirects
        )
        self.url = ""
        self.page = ""

    def _go(self, url: str, data: dict[str, str] | None = None) -> str:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        with self.opener.open(urllib.request.Request(url, data=body), timeout=10) as response:
            self.url = response.geturl()
            self.page = response.read().decode()
        if "document.forms[0].submit()" in self.page:  # what the page's script would do at once
            form = next(iter(self._forms().forms.values()))
            return self._go(urllib.parse.urljoin(self.url, form.action), form.fields)
        return self.page

    def _forms(self) -> _Forms:
        parser = _Forms()
        parser.feed(self.page)
        return parser

    def _press(self, button: str, extra: dict[str, str] | None = None) -> str:
        for form in self._forms().forms.values():
            if button in form.buttons:
                data = dict(form.fields)
                name, value = form.buttons[button]
                if name:
                    data[name] = value
                data.update(extra or {})
                return self._go(urllib.parse.urljoin(self.url, form.action), data)
        raise AssertionError(f"no button {button!r} on {self.url}:\n{self.page[:2000]}")

    def approve(self, verification_url: str, deny_at: str | None = None) -> str:
        """Open the link, continue, sign in, allow. ``deny_at``: "device" (Abort) or "consent"
        (Deny) stops there. Returns the last page's text."""
        self._go(verification_url)
        if "user_code" not in verification_url:
            raise AssertionError("use the complete verification URL, or enter_code()")
        return self._after_code(deny_at)

    def enter_code(self, verification_uri: str, user_code: str, deny_at: str | None = None) -> str:
        """Open the plain URL and type the code, as someone reading it off the terminal would."""
        self._go(verification_uri)
        form = next(iter(self._forms().forms.values()))
        self._go(urllib.parse.urljoin(self.url, form.action), {**form.fields, "user_code": user_code})
        return self._after_code(deny_at)

    def _after_code(self, deny_at: str | None) -> str:
        if deny_at == "device":
            return self._press("abort")
        self._press("continue")
        if "/interaction/" in self.url and 'id="sign-in"' in self.page:
            self._press("sign-in", {"email": self.email, "password": self.password})
        if deny_at == "consent":
            return self._press("deny")
        if 'id="allow"' in self.page:
            self._press("allow")
        return " ".join(self._forms().text)

    def authorize(self, authorization_url: str, redirect_uri: str) -> str:
        """The code flow at the provider: sign in, allow. Returns the provider's redirect to
        ``redirect_uri`` (with ``code`` and ``state``), not followed."""
        self._redirects.prefix, self._redirects.stopped = redirect_uri, None
        try:
            self._go(authorization_url)
            if 'id="sign-in"' in self.page:
                self._press("sign-in", {"email": self.email, "password": self.password})
            if 'id="allow"' in self.page:
                self._press("allow")
        except urllib.error.HTTPError:
            if self._redirects.stopped is None:
                raise
        finally:
            self._redirects.prefix = None
        assert self._redirects.stopped is not None, f"no redirect to {redirect_uri}: {self.page[:500]}"
        return self._redirects.stopped


def sign_in_lines(text: str) -> tuple[str, str, str]:
    """The plain URL, the code and the complete URL from what the client printed."""
    match = re.search(r"Open (\S+) and enter (\S+)\s+.*?or open (\S+)", text, re.S)
    if match is None:
        raise AssertionError(f"no sign-in instruction in {text!r}")
    return match.group(1), match.group(2), match.group(3)


def device_id_token(issuer: str, email: str) -> str:
    """An ID token for ``email`` from the provider's device flow, as a script would get one (for
    bearer requests to the web API)."""
    with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=10) as answer:
        meta = json.loads(answer.read())
    auth = "Basic " + base64.b64encode(f"sshgate:{CLIENT_SECRET}".encode()).decode()

    def post(url: str, form: dict[str, str]) -> dict[str, Any]:
        request = urllib.request.Request(url, urllib.parse.urlencode(form).encode(), {"Authorization": auth})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return dict(json.loads(answer.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))

    start = post(meta["device_authorization_endpoint"], {"scope": "openid email groups"})
    Person(email).approve(start["verification_uri_complete"])
    grant = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": start["device_code"],
    }
    for _ in range(20):
        tokens = post(meta["token_endpoint"], grant)
        if "id_token" in tokens:
            return str(tokens["id_token"])
        time.sleep(0.5)
    raise AssertionError(f"no ID token: {tokens}")
