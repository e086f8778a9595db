"""The AWS-managed session documents the emulator knows, resolved the way the service does (§9).

``resolve(document, parameters)`` turns a StartSession request into the session type and the
``Properties`` object the agent puts into its HandshakeRequest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_DOCUMENT = "SSM-SessionManagerRunShell"
ECS_DOCUMENT = "AmazonECS-ExecuteInteractiveCommand"


class DocumentError(ValueError):
    """Unknown document or bad parameters (the service's InvalidDocument / ValidationException)."""


@dataclass(frozen=True, slots=True)
class ResolvedDocument:
    name: str
    session_type: str
    properties: Any


def _first(parameters: Mapping[str, Sequence[str]], name: str, default: str | None = None) -> str:
    values = parameters.get(name)
    if values:
        return str(values[0])
    if default is None:
        raise DocumentError(f"document parameter {name} is required")
    return default


def _shell_properties(command: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    per_os = {"commands": command, "runAsElevated": False, **extra}
    return {"windows": dict(per_os), "linux": dict(per_os), "macos": dict(per_os)}


def resolve(document: str | None, parameters: Mapping[str, Sequence[str]] | None) -> ResolvedDocument:
    params = parameters or {}
    name = document or DEFAULT_DOCUMENT
    if name == DEFAULT_DOCUMENT:
        return ResolvedDocument(name, "Standard_Stream", None)
    if name == "AWS-StartSSHSession":
        return ResolvedDocument(name, "Port", {"portNumber": _first(params, "portNumber", "22")})
    if name in ("AWS-StartPortForwardingSession", "AWS-StartPortForwardingSessionToRemoteHost"):
        props = {
            "portNumber": _first(params, "portNumber", "80"),
            "type": "LocalPortForwarding",
            "localPortNumber": _first(params, "localPortNumber", "0"),
        }
        if name.endswith("ToRemoteHost"):
            props["host"] = _first(params, "host")
        return ResolvedDocument(name, "Port", props)
    if name in ("AWS-StartInteractiveCommand", ECS_DOCUMENT):
        return ResolvedDocument(name, "InteractiveCommands", _shell_properties(_first(params, "command"), {}))
    if name == "AWS-StartNonInteractiveCommand":
        extra = {
            "separateOutputStream": _first(params, "separateOutputStream", "false").lower() == "true",
            "stdoutSeparatorPrefix": _first(params, "stdoutSeparatorPrefix", ""),
            "stderrSeparatorPrefix": _first(params, "stderrSeparatorPrefix", ""),
        }
        return ResolvedDocument(
            name, "NonInteractiveCommands", _shell_properties(_first(params, "command"), extra)
        )
    raise DocumentError(f"document {name} does not exist in the emulator")


def shell_property(properties: Any, key: str, default: Any = None) -> Any:
    """The Linux value of a per-OS shell property."""
    if isinstance(properties, Mapping):
        linux = properties.get("linux")
        if isinstance(linux, Mapping):
            return linux.get(key, default)
    return default
