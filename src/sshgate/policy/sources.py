"""Which ``.rego`` files a ``policies.paths`` list names, read as modules (file I/O only)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class PolicyLoadError(Exception):
    """A policy set that cannot be served; the message names the file (and line) at fault."""


@dataclass(frozen=True, slots=True)
class RegoModule:
    path: str
    text: str


def is_test_file(path: Path) -> bool:
    return path.name.endswith("_test.rego")


def rego_files(paths: Iterable[str], include_tests: bool = False) -> list[Path]:
    """Files as given plus every ``.rego`` below each directory, sorted so loads are repeatable.

    Test files (``*_test.rego``) are served by nobody: they only join ``policy test`` runs.
    Hidden directories are skipped: a Kubernetes ConfigMap volume keeps a second copy of every
    file under ``..data``, which would otherwise load each rule twice.
    """
    found: set[Path] = set()
    for entry in paths:
        root = Path(entry)
        if root.is_dir():
            found.update(
                p
                for p in root.rglob("*.rego")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])
            )
        elif root.is_file():
            found.add(root)
        else:
            raise PolicyLoadError(f"{entry}: no such policy file or directory")
    return sorted(p for p in found if include_tests or not is_test_file(p))


def load_modules(paths: Iterable[str], include_tests: bool = False) -> list[RegoModule]:
    """Read every policy file; a configured set with no file at all is refused, not served empty."""
    paths = list(paths)
    modules = []
    for file in rego_files(paths, include_tests):
        try:
            modules.append(RegoModule(str(file), file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyLoadError(f"{file}: cannot read: {exc}") from None
    if not modules:
        raise PolicyLoadError(f"no .rego policy files under {', '.join(paths)}")
    return modules
