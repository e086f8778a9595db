"""Sign-in with nothing but ssh, against a real OpenID provider and a real sshd upstream.

A person runs stock OpenSSH clients; the URL and code they read are approved on the provider's
own pages; the gateway binds the proven key and later logins need no browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

import asyncssh
import pytest

from tests.conftest import Keys
from tests.oidc.conftest import GatewayFactory, SshRun, fresh_client, oidc_block, start_ssh
from tests.support.gateway import Client, GatewayProcess
from tests.support.oidc import OidcProvider, Person, sign_in_lines
from tests.support.terminal import Terminal

ALICE = "idp:okta:human:alice@corp.com"


def keys_cli(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sshgate.cli", "keys", *args, "--config", str(gateway.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def fingerprint(key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(key)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def sign_in_with_key(run: SshRun, email: str) -> None:
    """What the person does: read the complete URL off the terminal and approve it."""
    _, _, complete = run.sign_in_lines()
    Person(email).approve(complete)


def test_first_ssh_with_a_key_signs_in_on_stderr_then_the_key_is_bound(
    oidc_gateway: GatewayProcess, tmp_path: Path
) -> None:
    laptop = fresh_client(oidc_gateway, tmp_path, "alice-laptop")
    sessions = len(oidc_gateway.events("session.start"))
    run = start_ssh(laptop, f"{ALICE}+web-1", "id -un; echo from-upstream")
    uri, code, complete = run.sign_in_lines()
    assert complete == f"{uri}?user_code={code}"
    time.sleep(0.5)
    assert run.stdout == b""  # nothing relayed, nothing bound before the sign-in completes
    assert len(oidc_gateway.events("session.start")) == sessions
    Person("alice@corp.com").approve(complete)
    assert run.finish() == 0, run.stderr
    assert run.stdout == b"sgtest\nfrom-upstream\n"
    success = oidc_gateway.wait_event("auth.success", method="oidc", key_fingerprint=fingerprint(laptop.key))
    assert (success["identity"], success["provider"]) == ("alice@corp.com", "okta")
    listed = keys_cli(oidc_gateway, "list")
    assert listed.returncode == 0
    line = next(x for x in listed.stdout.splitlines() if x.startswith(fingerprint(laptop.key)))
    assert line.split("\t")[1:3] == [ALICE, "engineers"]

    # The same key now works where no prompt can be shown (BatchMode=yes is in the client config).
    (tmp_path / "up.txt").write_text("payload\n")
    started = time.monotonic()
    assert laptop.ssh(f"{ALICE}+web-1", "true").returncode == 0
    scp = laptop.scp(f"{ALICE}+web-1", str(tmp_path / "up.txt"), "gw:/tmp/oidc-scp.txt")
    assert scp.returncode == 0, scp.stderr
    sftp = laptop.sftp(f"{ALICE}+web-1", f"get /tmp/oidc-scp.txt {tmp_path / 'back.txt'}\n")
    assert sftp.returncode == 0, sftp.stderr
    assert (tmp_path / "back.txt").read_text() == "payload\n"
    rsync = laptop.rsync(f"{ALICE}+web-1", str(tmp_path / "up.txt"), "gw:/tmp/oidc-rsync.txt")
    assert rsync.returncode == 0, rsync.stderr
    assert time.monotonic() - started < 30
    for result in (scp, sftp, rsync):
        assert b"Open http" not in result.stderr

    # Revoked: the next login asks again, and an open connection with the key is closed.
    open_run = start_ssh(laptop, f"{ALICE}+web-1", "echo open; sleep 60")
    deadline = time.monotonic() + 20
    while b"open" not in open_run.stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    revoked = keys_cli(oidc_gateway, "revoke", fingerprint(laptop.key))
    assert revoked.returncode == 0 and revoked.stdout.startswith("revoked\t" + fingerprint(laptop.key))
    revoked_at = time.monotonic()
    assert open_run.finish(timeout=10) != 0
    assert time.monotonic() - revoked_at < 5
    assert b"sign-in was revoked" in open_run.stderr
    again = start_ssh(laptop, f"{ALICE}+web-1", "true")
    again.sign_in_lines()
    again.kill()
    assert keys_cli(oidc_gateway, "revoke", fingerprint(laptop.key)).returncode == 1


def test_first_ssh_without_a_key_signs_in_through_keyboard_interactive(
    oidc_gateway: GatewayProcess, tmp_path: Path
) -> None:
    laptop = fresh_client(oidc_gateway, tmp_path, "alice-nokey")
    argv = laptop.ssh_argv(
        f"{ALICE}+web-1",
        options=("-o", "PubkeyAuthentication=no", "-o", "BatchMode=no", "-o", "LogLevel=INFO", "-tt"),
    )
    term = Terminal(argv)
    try:
        seen = term.read_until(rb"or open \S+\r?\n", timeout=20).decode()
        assert "sshgate: Open " in seen
        uri, code, _ = (
            seen.split("Open ")[1].split()[0],
            seen.split(" and enter ")[1].split()[0],
            None,
        )
        Person("alice@corp.com").enter_code(uri, code)  # typed from the terminal, as a person would
        term.read_until(r"[$#] ", timeout=30)
        term.write("echo shell-as-$(id -un)\r")
        term.read_until("shell-as-sgtest", timeout=10)
        term.write("exit\r")
    finally:
        term.close()
    success = oidc_gateway.wait_event("auth.success", method="oidc", identity="alice@corp.com")
    assert "key_fingerprint" not in success  # no key proven, nothing bound
    start = oidc_gateway.wait_event("session.start", identity="alice@corp.com", resource="web-1")
    assert start["native_user"] == "sgtest"


def test_groups_from_the_provider_reach_the_policy(oidc_gateway: GatewayProcess, tmp_path: Path) -> None:
    laptop = fresh_client(oidc_gateway, tmp_path, "bob-laptop")
    run = start_ssh(laptop, "idp:okta:human:bob@corp.com+web-1", "echo should-not-run")
    sign_in_with_key(run, "bob@corp.com")
    assert run.finish() == 1
    assert b"sshgate: Blocked by policy: engineers only" in run.stderr
    assert run.stdout == b""
    decision = oidc_gateway.wait_event("policy.decision", action="block", resource="web-1")
    assert decision["message"] == "engineers only"


@pytest.mark.parametrize(
    ("email", "login_email", "deny_at", "line"),
    [
        ("alice@corp.com", "alice@corp.com", "consent", "sshgate: sign-in denied"),
        ("alice@corp.com", "alice@corp.com", "device", "sshgate: sign-in denied"),
        (
            "bob@corp.com",
            "alice@corp.com",
            None,
            "sshgate: sign-in refused: you signed in as bob@corp.com, not alice@corp.com",
        ),
        (
            "dave@corp.com",
            "dave@corp.com",
            None,
            "sshgate: sign-in refused: the provider has not verified dave@corp.com",
        ),
    ],
)
def test_refused_sign_ins_bind_nothing(
    oidc_gateway: GatewayProcess, tmp_path: Path, email: str, login_email: str, deny_at: str | None, line: str
) -> None:
    laptop = fresh_client(oidc_gateway, tmp_path, "laptop")
    run = start_ssh(laptop, f"idp:okta:human:{login_email}+web-1", "echo should-not-run")
    _, _, complete = run.sign_in_lines()
    Person(email).approve(complete, deny_at=deny_at)
    assert run.finish() != 0
    assert line.encode() in run.stderr
    assert run.stdout == b""
    assert fingerprint(laptop.key) not in keys_cli(oidc_gateway, "list").stdout
    assert oidc_gateway.wait_event("auth.failure", method="oidc", identity=login_email)


class _DeniedSignIn(asyncssh.SSHClient):
    """A keyboard-interactive sign-in the person denies. On the gateway's line the client answers
    (as OpenSSH does), hangs up, or waits without answering."""

    def __init__(self, after_line: Literal["answer", "hang up", "wait"]) -> None:
        self.after_line = after_line
        self.instructions: list[str] = []
        self.conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    def kbdint_auth_requested(self) -> str:
        return ""

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: list[tuple[str, bool]]
    ) -> list[str]:
        self.instructions.append(instructions)
        if len(self.instructions) == 1:
            _, _, complete = sign_in_lines(instructions)
            await asyncio.to_thread(Person("alice@corp.com").approve, complete, "device")
        elif self.after_line == "hang up" and self.conn is not None:
            self.conn.abort()
        elif self.after_line == "wait":
            await asyncio.Event().wait()
        return []


async def _denied(port: int, after_line: Literal["answer", "hang up", "wait"]) -> tuple[str, object]:
    """The last line the client read, and the error its connection ended with (None: it hung up)."""
    client = _DeniedSignIn(after_line)
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                "127.0.0.1", port, username=ALICE, known_hosts=None, client_keys=None,
                agent_path=None, config=None, preferred_auth="keyboard-interactive",
                client_factory=lambda: client,
            ),
            15,
        )  # fmt: skip
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        return client.instructions[-1], exc
    conn.close()
    return client.instructions[-1], None


async def test_denied_sign_ins_count_once_whatever_the_client_does_next(
    oidc_gateway_factory: GatewayFactory, provider: OidcProvider
) -> None:
    """A denied keyboard-interactive sign-in is one failure as it fails, whether the client then
    answers, hangs up or waits; the gateway closes the connection rather than wait for an answer."""
    gateway = oidc_gateway_factory(oidc_block(provider.issuer), auth_failures_before_lockout=3)
    denied = "sshgate: sign-in denied"
    read, ended = await _denied(gateway.port, "answer")
    # Closed at once on the answer: the client may meet the closed socket (a broken pipe or a
    # reset) before it reads the disconnect message; either way it read the line first.
    assert read == denied + "\n" and isinstance(ended, asyncssh.DisconnectError | ConnectionError), repr(ended)
    assert not isinstance(ended, asyncssh.DisconnectError) or ended.reason == denied
    assert await _denied(gateway.port, "hang up") == (denied + "\n", None)
    read, ended = await _denied(gateway.port, "wait")
    assert read == denied + "\n" and isinstance(ended, asyncssh.DisconnectError), repr(ended)
    assert ended.reason == denied
    assert len(gateway.events("auth.failure", method="oidc")) == 3 and not gateway.events("auth.success")
    gateway.wait_event("auth.lockout", client_ip="127.0.0.1")
    with pytest.raises(asyncssh.DisconnectError, match=r"too many failed logins from 127\.0\.0\.1"):
        await asyncssh.connect(
            "127.0.0.1", gateway.port, username="alice", password="wrong", known_hosts=None,
            client_keys=None, agent_path=None, config=None, preferred_auth="password",
        )  # fmt: skip
    gateway.stop()


def test_an_email_outside_allowed_domains_never_starts_a_sign_in(
    oidc_gateway: GatewayProcess, tmp_path: Path
) -> None:
    laptop = fresh_client(oidc_gateway, tmp_path, "carol-laptop")
    result = laptop.ssh("idp:okta:human:carol@other.com+web-1", "true")
    assert result.returncode == 255 and b"Permission denied" in result.stderr
    assert b"Open http" not in result.stderr


@pytest.mark.parametrize(
    ("person", "reason"),
    [
        ("wrongaud@corp.com", "InvalidAudience"),
        ("expired@corp.com", "expired"),
        ("badkid@corp.com", "not in the JWKS"),
    ],
)
def test_tokens_that_do_not_hold_up_are_refused(
    oidc_gateway: GatewayProcess, tmp_path: Path, person: str, reason: str
) -> None:
    gateway = oidc_gateway
    # Warm up: a good sign-in, then past the cache's minimum refresh gap (5 s), so that an unknown
    # kid is free to cost its one refetch.
    warm = start_ssh(fresh_client(gateway, tmp_path, "warm"), f"{ALICE}+web-1", "true")
    sign_in_with_key(warm, "alice@corp.com")
    assert warm.finish() == 0, warm.stderr
    last = max(
        datetime.fromisoformat(e["timestamp"]).timestamp() for e in gateway.events("oidc.jwks_fetched")
    )
    time.sleep(max(0.0, last + 5.5 - time.time()))
    before = len(gateway.events("oidc.jwks_fetched"))
    laptop = fresh_client(gateway, tmp_path, "laptop")
    run = start_ssh(laptop, f"idp:okta:human:{person}+web-1", "echo should-not-run")
    sign_in_with_key(run, person)
    assert run.finish() != 0
    assert b"sshgate: sign-in failed: the provider's answer could not be verified" in run.stderr
    assert run.stdout == b""
    failure = gateway.wait_event("oidc.sign_in", result="invalid", email=person)
    assert reason in failure["reason"]
    assert fingerprint(laptop.key) not in keys_cli(gateway, "list").stdout
    # A token signed by an unknown key costs exactly one refetch of the JWKS, never a loop.
    assert len(gateway.events("oidc.jwks_fetched")) - before == (1 if person == "badkid@corp.com" else 0)


def test_an_expired_code_is_refused(
    oidc_gateway_factory: GatewayFactory, provider: OidcProvider, tmp_path: Path
) -> None:
    gateway = oidc_gateway_factory(oidc_block(provider.issuer, client_id="sshgate-short"))
    laptop = fresh_client(gateway, tmp_path, "laptop")
    run = start_ssh(laptop, f"{ALICE}+web-1", "echo should-not-run")
    run.sign_in_lines()
    assert run.finish(timeout=30) != 0  # nobody approves within the code's 3 s
    assert b"sshgate: sign-in code expired" in run.stderr
    assert fingerprint(laptop.key) not in keys_cli(gateway, "list").stdout
    gateway.stop()


def test_a_provider_that_is_down_makes_sign_in_unavailable_but_configured_keys_work(
    oidc_gateway_factory: GatewayFactory, keys: Keys, tmp_path: Path
) -> None:
    gateway = oidc_gateway_factory(oidc_block("http://127.0.0.1:9"))  # discard port: nothing listens
    laptop = fresh_client(gateway, tmp_path, "laptop")
    result = laptop.ssh(f"{ALICE}+web-1", "true")
    assert result.returncode != 0
    assert b"sshgate: sign-in unavailable" in result.stderr
    failure = gateway.wait_event("oidc.sign_in", result="unavailable")
    assert "127.0.0.1:9" in failure["reason"]
    assert fingerprint(laptop.key) not in keys_cli(gateway, "list").stdout
    configured = Client(gateway, keys.alice, tmp_path / "alice")
    result = configured.ssh("alice+web-1", "echo configured")
    assert result.returncode == 0 and result.stdout == b"configured\n", result.stderr
    gateway.stop()


def test_a_binding_expires_after_key_ttl(
    oidc_gateway_factory: GatewayFactory, provider: OidcProvider, tmp_path: Path
) -> None:
    gateway = oidc_gateway_factory(oidc_block(provider.issuer, key_ttl_s=3))
    laptop = fresh_client(gateway, tmp_path, "laptop")
    run = start_ssh(laptop, f"{ALICE}+web-1", "true")
    sign_in_with_key(run, "alice@corp.com")
    assert run.finish() == 0, run.stderr
    assert laptop.ssh(f"{ALICE}+web-1", "true").returncode == 0  # bound: no sign-in
    time.sleep(3.5)
    again = start_ssh(laptop, f"{ALICE}+web-1", "true")
    again.sign_in_lines()
    again.kill()
    gateway.stop()


def test_mfa_waits_for_a_fresh_sign_in_then_serves_later_sessions(
    oidc_gateway: GatewayProcess, tmp_path: Path
) -> None:
    laptop = fresh_client(oidc_gateway, tmp_path, "alice-mfa")
    first = start_ssh(laptop, f"{ALICE}+web-1", "true")
    sign_in_with_key(first, "alice@corp.com")
    assert first.finish() == 0
    run = start_ssh(laptop, f"{ALICE}+web-mfa", "echo stepped-up")
    run.wait_stderr("web-mfa asks for a fresh sign-in")
    _, _, complete = run.sign_in_lines()
    time.sleep(1.5)
    assert run.stdout == b"" and run.process.poll() is None  # the session waits
    page = Person("alice@corp.com").approve(complete)
    assert "signed in" in page
    assert run.finish() == 0, run.stderr
    assert run.stdout == b"stepped-up\n"
    step_up = oidc_gateway.wait_event("oidc.step_up", result="ok", resource="web-mfa")
    assert step_up["auth_time"] is not None
    assert oidc_gateway.events("policy.decision", action="mfa", resource="web-mfa")
    session = _session_json(oidc_gateway, run_identity="alice@corp.com", resource="web-mfa")
    assert session["decisions"][0]["action"] == "mfa" and session["decisions"][0]["mfa"]["result"] == "ok"
    # Within mfa.max_age_s the step-up serves this identity's next session.
    again = laptop.ssh(f"{ALICE}+web-mfa", "echo again")
    assert again.returncode == 0 and again.stdout == b"again\n"
    assert oidc_gateway.wait_event("oidc.step_up", result="reused", resource="web-mfa")


def test_mfa_without_a_provider_denies(
    oidc_gateway_factory: GatewayFactory, keys: Keys, tmp_path: Path
) -> None:
    gateway = oidc_gateway_factory(None)
    alice = Client(gateway, keys.alice, tmp_path / "alice")
    result = alice.ssh("alice+web-mfa", "echo should-not-run")
    assert result.returncode == 1 and result.stdout == b""
    assert (
        b"sshgate: this session needs a fresh sign-in, but no identity provider is configured"
        in result.stderr
    )
    gateway.stop()


def _session_json(gateway: GatewayProcess, run_identity: str, resource: str) -> dict[str, object]:
    """The newest ended recording of ``run_identity`` on ``resource``: the client's exit can come
    before the gateway writes the session's last session.json."""
    root = Path(gateway.config["data_dir"]) / "recordings"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for path in sorted(root.glob("*/*/session.json"), key=lambda p: p.stat().st_mtime, reverse=True):
            with contextlib.suppress(ValueError, OSError):  # replaced while read
                doc = json.loads(path.read_text())
                if doc.get("resource") == resource and doc.get("user") == run_identity:
                    if doc.get("status") != "active":
                        return doc  # type: ignore[no-any-return]
                    break
        time.sleep(0.05)
    raise AssertionError(f"no ended recording for {run_identity} on {resource}")


def test_a_person_approves_in_a_real_browser(oidc_gateway: GatewayProcess, tmp_path: Path) -> None:
    """Headless Chromium on the provider's pages: the same clicks a person makes."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    laptop = fresh_client(oidc_gateway, tmp_path, "alice-browser")
    run = start_ssh(laptop, f"{ALICE}+web-1", "echo approved-in-chromium")
    uri, code, _ = run.sign_in_lines()
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        wait = WebDriverWait(browser, 20)
        browser.get(uri)  # the plain URL; the person types the code they read
        wait.until(expected_conditions.presence_of_element_located((By.NAME, "user_code"))).send_keys(code)
        browser.find_element(By.CSS_SELECTOR, "button[form='op.deviceInputForm']").click()
        wait.until(expected_conditions.element_to_be_clickable((By.ID, "continue"))).click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "email"))).send_keys(
            "alice@corp.com"
        )
        browser.find_element(By.ID, "password").send_keys("password")
        browser.find_element(By.ID, "sign-in").click()
        wait.until(expected_conditions.element_to_be_clickable((By.ID, "allow"))).click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "done")))
        browser.save_screenshot(str(tmp_path / "signed-in.png"))
    finally:
        browser.quit()
    assert run.finish() == 0, run.stderr
    assert run.stdout == b"approved-in-chromium\n"
    assert (tmp_path / "signed-in.png").stat().st_size > 1000


def test_no_token_or_code_reaches_the_audit_log_or_recordings(
    oidc_gateway: GatewayProcess, tmp_path: Path
) -> None:
    laptop = fresh_client(oidc_gateway, tmp_path, "alice-secrets")
    run = start_ssh(laptop, f"{ALICE}+web-1", "echo recorded")
    _, code, complete = run.sign_in_lines()
    Person("alice@corp.com").approve(complete)
    assert run.finish() == 0, run.stderr
    oidc_gateway.wait_event("session.end")
    recordings = Path(oidc_gateway.config["data_dir"]) / "recordings"
    texts = ["".join(oidc_gateway.raw)] + [
        p.read_text(errors="replace") for p in recordings.rglob("*") if p.is_file()
    ]
    bindings = Path(oidc_gateway.config["data_dir"]) / "sso-bindings.json"
    texts.append(bindings.read_text())
    for text in texts:
        assert "eyJ" not in text  # every JWT (ID token) starts so
        assert code not in text  # the user code is for the person's eyes only
        assert "sshgate-test-secret" not in text
    assert "recorded" in "".join(texts)  # the recordings were read


def test_a_provider_that_offers_only_client_secret_post(
    oidc_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    post_only = OidcProvider(auth_methods="client_secret_post")
    try:
        gateway = oidc_gateway_factory(oidc_block(post_only.issuer))
        laptop = fresh_client(gateway, tmp_path, "laptop")
        run = start_ssh(laptop, f"{ALICE}+web-1", "echo posted")
        sign_in_with_key(run, "alice@corp.com")
        assert run.finish() == 0, run.stderr  # Basic auth would be refused as invalid_client
        assert run.stdout == b"posted\n"
        gateway.stop()
    finally:
        post_only.stop()


def test_keys_revoke_by_identity(oidc_gateway: GatewayProcess, tmp_path: Path) -> None:
    laptops = [fresh_client(oidc_gateway, tmp_path, f"carol-{n}") for n in range(2)]
    for laptop in laptops:
        run = start_ssh(laptop, "idp:okta:human:bob@corp.com", "formal", "list")
        sign_in_with_key(run, "bob@corp.com")
        assert run.finish() == 0, run.stderr
    listed = keys_cli(oidc_gateway, "list").stdout
    assert all(fingerprint(laptop.key) in listed for laptop in laptops)
    revoked = keys_cli(oidc_gateway, "revoke", "--identity", "Bob@Corp.com")
    assert revoked.returncode == 0
    lines = [line.split("\t") for line in revoked.stdout.splitlines()]
    assert {fingerprint(laptop.key) for laptop in laptops} <= {line[1] for line in lines}
    assert {line[2] for line in lines} == {"idp:okta:human:bob@corp.com"}  # nobody else's keys
    assert "bob@corp.com" not in keys_cli(oidc_gateway, "list").stdout
    nothing = keys_cli(oidc_gateway, "revoke", "--identity", "bob@corp.com")
    assert nothing.returncode == 1 and "no binding matches bob@corp.com" in nothing.stderr
