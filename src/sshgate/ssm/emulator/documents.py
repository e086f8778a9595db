"""The AWS-managed session documents the emulator knows, resolved the way the service does
(docs/ssm-protocol.md §9).

``resolve(document, parameters)`` turns a StartSession request into the session type and the
``Properties`` object the agent puts into its HandshakeRequest.
"""

from __future__ import annotations

import re
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


_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_SESSION_TYPES = ("Standard_Stream", "InteractiveCommands", "NonInteractiveCommands", "Port")


def resolve_custom(
    name: str, content: Mapping[str, Any], parameters: Mapping[str, Sequence[str]]
) -> ResolvedDocument:
    """A Session document made with ssm:CreateDocument: its ``sessionType``, and its ``properties``
    with every ``{{ name }}`` replaced by the request's parameter (or the declared default)."""
    session_type = content.get("sessionType")
    if session_type not in _SESSION_TYPES:
        raise DocumentError(f"document {name} is not a Session document")
    declared = content.get("parameters") or {}
    values: dict[str, str] = {}
    for key, spec in declared.items():
        default = spec.get("default") if isinstance(spec, Mapping) else None
        values[key] = _first(parameters, key, None if default is None else str(default))
    unknown = set(parameters) - set(declared)
    if unknown:
        raise DocumentError(f"document {name} does not declare parameters {sorted(unknown)}")

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
        if isinstance(value, Mapping):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return ResolvedDocument(name, str(session_type), fill(content.get("properties")))


def shell_property(properties: Any, key: str, default: Any = None) -> Any:
    """The Linux value of a per-OS shell property."""
    if isinstance(properties, Mapping):
        linux = properties.get("linux")
        if isinstance(linux, Mapping):
            return linux.get(key, default)
    return default
