"""The remote command grammar of docs/login.md (``formal <resource> ...``), parsed without I/O."""

from __future__ import annotations

import io
import shlex
from dataclasses import dataclass

from sshgate.login import is_name

COMMAND_WORDS = ("formal", "sshgate")

USAGE = """usage: formal <resource> [--native-user NAME] [--shell CMD] [--container NAME] [--task ID]
                         [-- COMMAND ...]
       formal list
No resource was selected. Run `ssh <gateway> formal list` to see the resources you may use,
or log in as LOGIN+<resource>."""


class CommandError(ValueError):
    """A ``formal`` command that cannot be understood; the message is safe to show the client."""


@dataclass(frozen=True, slots=True)
class ListResources:
    """``formal list``."""


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


def parse_command(text: str) -> Route | ListResources | None:
    """Parse an exec request. None means it is not a ``formal`` command (pass it on verbatim).

    Quoting follows a POSIX shell so Cursor's ``--shell "/bin/bash -c '...'"`` survives. The
    text after ``--`` is kept exactly as written, like the command of ``ssh host COMMAND``.
    """
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
    if words == ["list"]:
        return ListResources()
    if not words:
        raise CommandError(USAGE)
    resource, *rest = words
    if not is_name(resource):
        raise CommandError(f"invalid resource name {resource!r}")
    options: dict[str, str] = {}
    while rest:
        option = rest.pop(0)
        key = _OPTIONS.get(option.split("=", 1)[0])
        if key is None:
            raise CommandError(f"unknown option {option!r}; put the command after '--'")
        if "=" in option:
            value = option.split("=", 1)[1]
        elif rest:
            value = rest.pop(0)
        else:
            raise CommandError(f"option {option} needs a value")
        options[key] = value
    if options.get("native_user") is not None and not is_name(options["native_user"]):
        raise CommandError(f"invalid native user {options['native_user']!r}")
    if command == "":
        raise CommandError("nothing after '--': name the command to run")
    return Route(resource=resource, command=command, **options)
