"""Tamper evidence: the SHA-256 of every file in session.json and an Ed25519 signature over
session.json's canonical JSON (sorted keys, no spaces, UTF-8, without the signature itself)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sshgate.recording.recorder import RecordingError
from sshgate.recording.store import FILE_NAME, LocalFiles, SessionFiles

SESSION_FILE = "session.json"


def canonical(doc: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def load_signing_key(path: str) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key in OpenSSH or PEM (PKCS#8) form."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RecordingError(f"recording.signing_key {path}: cannot read: {exc.strerror}") from None
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise RecordingError(f"recording.signing_key {path}: not a usable private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise RecordingError(f"recording.signing_key {path}: must be an Ed25519 key")
    return key


def load_public_key(path: str) -> Ed25519PublicKey:
    """An Ed25519 public key (OpenSSH line or PEM), or the public half of a private key file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).public_key()
    try:
        key: Any = (
            serialization.load_pem_public_key(data)
            if data.lstrip().startswith(b"-----")
            else serialization.load_ssh_public_key(data.strip())
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise RecordingError(f"{path}: not a usable public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise RecordingError(f"{path}: must be an Ed25519 key")
    return key


def public_text(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def fingerprint(key: Ed25519PublicKey) -> str:
    """``SHA256:...`` as ssh-keygen -l prints it."""
    blob = base64.b64decode(public_text(key).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def file_digest(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


def _digest(files: SessionFiles, name: str) -> dict[str, Any] | None:
    try:
        with files.open(name) as f:
            digest, size = hashlib.sha256(), 0
            while piece := f.read(1 << 20):
                digest.update(piece)
                size += len(piece)
    except (OSError, RecordingError):
        return None
    return {"sha256": digest.hexdigest(), "size": size}


def seal(
    doc: dict[str, Any],
    directory: Path,
    key: Ed25519PrivateKey | None,
    known: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Record the digest of every channel file, then sign the document if there is a key.

    ``known`` digests, taken by the writer as it wrote, spare reading a file back from disk.
    """
    known = known or {}
    doc["files"] = {
        p.name: known.get(p.name) or file_digest(p)
        for p in sorted(directory.iterdir())
        if p.name != SESSION_FILE and p.is_file()
    }
    doc.pop("signature", None)
    if key is not None:
        doc["signature"] = {
            "algorithm": "ed25519",
            "public_key": public_text(key.public_key()),
            "value": base64.b64encode(key.sign(canonical(doc))).decode(),
        }


def verify(directory: Path | SessionFiles, trusted: Ed25519PublicKey | None) -> list[str]:
    """Problems found, each naming its file; empty when the recording is intact.

    The signature is checked against ``trusted`` (the configured signing key); without one, only
    against the key the manifest names, which proves integrity but not origin.
    """
    files_at = LocalFiles(directory) if isinstance(directory, Path) else directory
    try:
        with files_at.open(SESSION_FILE) as f:
            doc = json.loads(f.read())
    except (OSError, ValueError, RecordingError) as exc:
        return [f"{SESSION_FILE}: unreadable ({exc})"]
    if not isinstance(doc, dict) or "files" not in doc:
        return [f"{SESSION_FILE}: no manifest (the session is still active, or the file was replaced)"]
    problems = []
    files = doc.get("files")
    if not isinstance(files, dict):
        return [f"{SESSION_FILE}: malformed manifest"]
    present = files_at.names()
    for name, expected in sorted(files.items()):
        if not FILE_NAME.fullmatch(name) or not isinstance(expected, dict):
            problems.append(f"{name}: not a recording file name")
        elif name not in present:
            problems.append(f"{name}: missing")
        elif _digest(files_at, name) != {"sha256": expected.get("sha256"), "size": expected.get("size")}:
            problems.append(f"{name}: changed (sha256 differs from the manifest)")
    for name in present:
        if name not in (SESSION_FILE, SESSION_FILE + ".tmp") and name not in files:
            problems.append(f"{name}: not in the manifest")
    signature = doc.get("signature")
    if signature is None:
        if trusted is not None:
            problems.append(f"{SESSION_FILE}: not signed")
        return problems
    try:
        named = serialization.load_ssh_public_key(signature["public_key"].encode())
        value = base64.b64decode(signature["value"], validate=True)
    except (KeyError, TypeError, AttributeError, ValueError, UnsupportedAlgorithm):
        return [*problems, f"{SESSION_FILE}: malformed signature"]
    key = trusted or named
    if not isinstance(key, Ed25519PublicKey):
        return [*problems, f"{SESSION_FILE}: signature key is not Ed25519"]
    if trusted is not None and public_text(trusted) != signature["public_key"]:
        problems.append(f"{SESSION_FILE}: signed by another key ({signature['public_key']})")
    try:
        key.verify(value, canonical(doc))
    except InvalidSignature:
        problems.append(f"{SESSION_FILE}: changed (signature does not match)")
    return problems


def check(
    files: SessionFiles, session_id: str, signature: Any, trusted: Ed25519PublicKey | None, source: str
) -> tuple[bool, list[str]]:
    """``verify`` as a verdict for people: ``(False, problems)``, or ``(True, [what the check
    proves])``. ``signature`` is the document's; ``source`` names where ``trusted`` came from."""
    problems = verify(files, trusted)
    if problems:
        return False, problems
    intact = f"{session_id}: every file matches its hash"
    if signature is None:
        return True, [f"{intact}; unsigned, so nothing proves who wrote them"]
    if trusted is not None:
        return True, [f"{intact}; signed by {fingerprint(trusted)} ({source})"]
    return True, [
        f"{intact}; the signature matches the key carried in the "
        "manifest, which proves the files are unchanged since signing, not who signed them "
        "(configure recording.signing_key or pass --public-key to check the origin)"
    ]
