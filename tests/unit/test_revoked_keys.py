"""Revoked keys: KRLs made by the real ``ssh-keygen -k`` and text key lists, judged the way
``ssh-keygen -Q`` (sshd's own check) judges them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh
import pytest

from sshgate.config import ConfigError
from sshgate.revoked_keys import RevokedKeysFile, parse_revoked_keys
from tests.support.sshd import keygen, sign_cert


def _key(path: Path) -> asyncssh.SSHKey:
    return asyncssh.read_public_key(f"{path}.pub")


def _cert(path: Path) -> asyncssh.SSHCertificate:
    return asyncssh.read_certificate(f"{path}-cert.pub")


def _sshkeygen_says_revoked(krl: Path, public: Path) -> bool:
    result = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(public)], capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    return "REVOKED" in result.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("krl")
    made = {name: keygen(root / name, name) for name in ("ca", "ca2", "lost", "byhash", "bysha1", "ok")}
    for serial in (5, 6, 12, 25, 100, 104, 131, 200, 0, 999, 50000, 500000, 700000):
        made[f"serial{serial}"] = keygen(root / f"s{serial}", f"s{serial}")
        sign_cert(made["ca"], Path(f"{made[f'serial{serial}']}.pub"), f"id-{serial}", "a@corp.com",
                  extra=("-z", str(serial)))  # fmt: skip
    made["byid"] = keygen(root / "byid", "byid")
    sign_cert(made["ca"], Path(f"{made['byid']}.pub"), "stolen-laptop", "a@corp.com", extra=("-z", "7"))
    made["otherca"] = keygen(root / "otherca", "otherca")  # serial 5, but from another CA
    sign_cert(made["ca2"], Path(f"{made['otherca']}.pub"), "id-5", "a@corp.com", extra=("-z", "5"))
    made["lostcert"] = keygen(root / "lostcert", "lostcert")  # certificate of a revoked key
    made["lostcert"].with_suffix(".pub")
    (root / "lostcert.pub").write_bytes((root / "lost.pub").read_bytes())
    (root / "lostcert").write_bytes((root / "lost").read_bytes())
    sign_cert(made["ca"], root / "lostcert.pub", "id-lost", "a@corp.com", extra=("-z", "9"))
    byhash = subprocess.run(["ssh-keygen", "-l", "-f", f"{made['byhash']}.pub"], capture_output=True, text=True)
    spec = root / "spec"
    spec.write_text(
        "serial: 5\nserial: 10-20\n"
        + "".join(f"serial: {n}\n" for n in range(100, 164, 2))  # dense: ssh-keygen writes a bitmap
        + "serial: 1000-100000\nserial: 500000\nserial: 900000\n"  # a range and a list
        + "id: stolen-laptop\n"
        + f"key: {(root / 'lost.pub').read_text()}"
        + f"sha1: {(root / 'bysha1.pub').read_text()}"
        + f"hash: {byhash.stdout.split()[1]}\n"
    )
    made["krl"] = root / "revoked.krl"
    subprocess.run(["ssh-keygen", "-k", "-f", str(made["krl"]), "-s", f"{made['ca']}.pub", str(spec)],
                   check=True, capture_output=True)  # fmt: skip
    return made


CASES = {
    "serial5": True, "serial6": False, "serial12": True, "serial25": False, "serial100": True,
    "serial104": True, "serial131": False, "serial200": False, "serial0": False, "byid": True,
    "otherca": False, "lostcert": True, "serial999": False, "serial50000": True, "serial500000": True,
    "serial700000": False,
}  # fmt: skip


@pytest.mark.parametrize(("name", "revoked"), CASES.items())
def test_certificates_are_revoked_exactly_as_ssh_keygen_says(
    world: dict[str, Path], name: str, revoked: bool
) -> None:
    parsed = parse_revoked_keys(world["krl"].read_bytes())
    assert _sshkeygen_says_revoked(world["krl"], Path(f"{world[name]}-cert.pub")) is revoked
    assert (parsed.why(_key(world[name]), _cert(world[name])) is not None) is revoked


@pytest.mark.parametrize(("name", "revoked"), [("lost", True), ("byhash", True), ("bysha1", True), ("ok", False)])
def test_plain_keys_are_revoked_by_blob_and_by_fingerprint(world: dict[str, Path], name: str, revoked: bool) -> None:
    parsed = parse_revoked_keys(world["krl"].read_bytes())
    assert _sshkeygen_says_revoked(world["krl"], Path(f"{world[name]}.pub")) is revoked
    assert (parsed.why(_key(world[name]), None) is not None) is revoked


def test_a_revoked_ca_key_revokes_every_certificate_it_signed(world: dict[str, Path], tmp_path: Path) -> None:
    listed = tmp_path / "list"
    listed.write_text(Path(f"{world['ca']}.pub").read_text())
    why = parse_revoked_keys(listed.read_bytes()).why(_key(world["serial6"]), _cert(world["serial6"]))
    assert why == "certificate authority revoked"
    assert parse_revoked_keys(listed.read_bytes()).why(_key(world["ok"]), None) is None


@pytest.mark.parametrize(
    "content",
    [b"not a key\n", b"SSHKRL\n\x00" + b"\x00" * 5, b"SSHKRL\n\x00\x00\x00\x00\x02" + b"\x00" * 40],
)
def test_a_file_that_is_no_list_is_a_configuration_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "revoked"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match=str(bad)):
        RevokedKeysFile(str(bad))


def test_a_list_that_breaks_after_start_refuses_every_key(world: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "revoked"
    path.write_bytes(world["krl"].read_bytes())
    revoked = RevokedKeysFile(str(path))
    assert revoked.why(_key(world["ok"]), None) is None
    path.write_bytes(b"garbage\n")
    assert "every key refused" in (revoked.why(_key(world["ok"]), None) or "")
    path.unlink()
    assert "cannot read" in (revoked.why(_key(world["ok"]), None) or "")
