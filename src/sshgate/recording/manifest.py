"""Tamper evidence: the SHA-256 of every file in session.json and an Ed25519 signature over
session.json's canonical JSON (sorted keys, no spaces, UTF-8, without the signature itself)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sshgate.recording.recorder import RecordingError

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


def public_text(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def file_digest(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


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


def verify(directory: Path, trusted: Ed25519PublicKey | None) -> list[str]:
    """Problems found, each naming its file; empty when the recording is intact.

    The signature is checked against ``trusted`` (the configured signing key); without one, only
    against the key the manifest names, which proves integrity but not origin.
    """
    doc = json.loads((directory / SESSION_FILE).read_text(encoding="utf-8"))
    problems = []
    files: dict[str, Any] = doc.get("files") or {}
    for name, expected in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif file_digest(path)["sha256"] != expected.get("sha256"):
            problems.append(f"{name}: changed (sha256 differs from the manifest)")
    for path in sorted(directory.iterdir()):
        if path.name != SESSION_FILE and path.name not in files:
            problems.append(f"{path.name}: not in the manifest")
    signature = doc.get("signature")
    if signature is None:
        if trusted is not None:
            problems.append(f"{SESSION_FILE}: not signed")
        return problems
    named = serialization.load_ssh_public_key(signature["public_key"].encode())
    key = trusted or named
    if not isinstance(key, Ed25519PublicKey):
        return [*problems, f"{SESSION_FILE}: signature key is not Ed25519"]
    if trusted is not None and public_text(trusted) != signature["public_key"]:
        problems.append(f"{SESSION_FILE}: signed by another key ({signature['public_key']})")
    try:
        key.verify(base64.b64decode(signature["value"]), canonical(doc))
    except InvalidSignature:
        problems.append(f"{SESSION_FILE}: changed (signature does not match)")
    return problems
