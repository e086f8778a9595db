"""The remote command grammar of docs/login.md (``formal <resource> ...``), parsed without I/O."""

from __future__ import annotations

import io
import shlex
from dataclasses import dataclass
from typing import Any

from sshgate.login import is_name
from sshgate.refusal import Refusal

COMMAND_WORDS = ("formal", "sshgate")

DEFAULT_PREFIX = "sshgate-"
USAGE = """usage: formal <resource> [--native-user NAME] [--shell CMD] [--container NAME] [--task ID]
                         [-- COMMAND ...]
       formal list [--detailed]
       formal ssh-config [--prefix P] [--vscode]
No resource was selected. Run `ssh <gateway> formal list` to see the resources you may use,
or log in as LOGIN+<resource>."""


class CommandError(Refusal, ValueError):
    """A ``formal`` command that cannot be understood; the message is safe to show the client,
    with the exit status of a usage error."""

    def __init__(self, message: str, exit_status: int = 2) -> None:
        super().__init__(message, exit_status=exit_status, event="command.invalid")


NUL_IN_COMMAND = "the command holds a NUL byte, which no remote shell takes; nothing was run"


@dataclass(frozen=True, slots=True)
class ListResources:
    """``formal list [--detailed]``."""

    detailed: bool = False


@dataclass(frozen=True, slots=True)
class SshConfig:
    """``formal ssh-config [--prefix P] [--vscode]``: Host blocks for the caller's resources."""

    prefix: str = DEFAULT_PREFIX
    vscode: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """``formal <resource> ...``: where to go, and what to run there (None: a shell)."""

    resource: str
    native_user: str | None = None
    shell: str | None = None
    container: str | None = None
    task: str | None = None
    command: str | None = None


_OPTIONS = {"--native-user": "native_user", "--shell": "shell", "--container": "container", "--task": "task"}
_LIST_FLAGS = {"--detailed": "detailed"}
_SSH_CONFIG_OPTIONS = {"--prefix": "prefix"}
_SSH_CONFIG_FLAGS = {"--vscode": "vscode"}

Command = Route | ListResources | SshConfig


def _options(words: list[str], valued: dict[str, str], flags: dict[str, str] | None = None) -> dict[str, Any]:
    """``--name VALUE`` / ``--name=VALUE`` for ``valued``, bare ``--name`` for ``flags``."""
    flags = flags or {}
    options: dict[str, Any] = {}
    rest = list(words)
    while rest:
        option = rest.pop(0)
        name, has_value, inline = option.partition("=")
        if name in flags and not has_value:
            options[flags[name]] = True
            continue
        key = valued.get(name)
        if key is None:
            raise CommandError(f"unknown option {option!r}; put the command after '--'")
        if has_value:
            value = inline
        elif rest:
            value = rest.pop(0)
        else:
            raise CommandError(f"option {option} needs a value")
        options[key] = value
    return options


def parse_command(text: str) -> Command | None:
    """Parse an exec request. None means it is not a ``formal`` command (pass it on verbatim).

    Quoting follows a POSIX shell so Cursor's ``--shell "/bin/bash -c '...'"`` survives. The
    text after ``--`` is kept exactly as written, like the command of ``ssh host COMMAND``.
    """
    if "\0" in text:  # sshd ends the whole connection over it; a shell would run less than the policy saw
        raise CommandError(NUL_IN_COMMAND, exit_status=1)
    stream = io.StringIO(text)
    lexer = shlex.shlex(stream, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        first = lexer.get_token()
        if first not in COMMAND_WORDS:
            return None
        words: list[str] = []
        command: str | None = None
        while (token := lexer.get_token()) is not None:
            if token == "--":
                command = text[stream.tell() :].strip()
                break
            words.append(token)
    except ValueError as exc:
        raise CommandError(f"cannot parse command: {exc}") from None
    if not words:
        raise CommandError(USAGE)
    verb, *rest = words
    if verb in ("list", "ssh-config"):
        if command is not None:
            raise CommandError(f"formal {verb} runs no command; drop the '--' and what follows")
        if verb == "list":
            return ListResources(**_options(rest, {}, _LIST_FLAGS))
        config = SshConfig(**_options(rest, _SSH_CONFIG_OPTIONS, _SSH_CONFIG_FLAGS))
        if not is_name(config.prefix):
            # It becomes ssh_config Host patterns: no globs, spaces or an empty `Host *`.
            raise CommandError(f"invalid prefix {config.prefix!r}: use letters, digits, '.', '_' or '-'")
        return config
    if not is_name(verb):
        raise CommandError(f"invalid resource name {verb!r}")
    options = _options(rest, _OPTIONS)
    native_user = options.get("native_user")
    if isinstance(native_user, str) and not is_name(native_user):
        raise CommandError(f"invalid native user {native_user!r}")
    if command == "":
        raise CommandError("nothing after '--': name the command to run")
    return Route(resource=verb, command=command, **options)
