"""`sshgate demo` on a fresh directory: the printed ssh lines work as pasted, Ctrl-C stops it."""

from __future__ import annotations

import http.cookiejar
import json
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request


def test_demo_prints_working_ssh_lines() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "sshgate.cli", "demo", "--port", "0", "--web-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(lines) < 4 and time.monotonic() < deadline:
            line = demo.stdout.readline()
            match = re.match(
                r"\s+(Interactive shell|One command|What you may reach|Sessions web app):\s+(.*)$", line
            )
            if match:
                lines[match.group(1)] = match.group(2)
        assert len(lines) == 4, lines
        one = subprocess.run(shlex.split(lines["One command"]), capture_output=True, timeout=30, input=b"")
        assert one.returncode == 0, one.stderr
        assert one.stdout.startswith(b"Linux ")
        listing = subprocess.run(
            shlex.split(lines["What you may reach"]), capture_output=True, timeout=30, input=b""
        )
        assert listing.stdout == b"demo\tssh\tdemo\n"
        shell = subprocess.run(
            [*shlex.split(lines["Interactive shell"]), "-T"],
            input=b"cat README.txt\nexit 7\n",
            capture_output=True,
            timeout=30,
        )
        assert b"reached through sshgate" in shell.stdout
        assert shell.returncode == 7
        _web_app_shows_the_sessions(lines["Sessions web app"])
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            assert demo.wait(timeout=15) == 0
        finally:
            if demo.poll() is None:  # it did not stop: the test fails, and leaves nothing running
                demo.kill()
                demo.wait()


def _web_app_shows_the_sessions(link: str) -> None:
    """The printed one-time link signs in as admin, once; the app lists the sessions just run."""
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/signin/once\?token=[\w-]{40,}", link), link
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with browser.open(link, timeout=10) as page:
        assert b'<meta name="csrf-token" content="' in page.read()
    base = link.split("/signin/")[0]
    with browser.open(base + "/api/v1/me", timeout=10) as answer:
        assert json.loads(answer.read())["role"] == "admin"
    with browser.open(base + "/api/v1/sessions", timeout=10) as answer:
        sessions = json.loads(answer.read())["sessions"]
    assert len(sessions) == 2 and {s["resource"] for s in sessions} == {"demo"}  # `formal list` binds none
    try:
        urllib.request.urlopen(link, timeout=10)
        raise AssertionError("a one-time link worked twice")
    except urllib.error.HTTPError as exc:
        assert exc.code == 403
