"""Fresh virtualenvs for an install test: the repository's wheels, built from the Docker build context,
installed by pip; their dependencies are the ones this environment runs the suite with, linked in, and
no others, so an import the wheels do not declare fails there."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from collections.abc import Iterable
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def build_wheels(repo: Path, sources: Iterable[str], projects: Iterable[str], dest: Path) -> list[Path]:
    """Copy ``sources`` (paths relative to ``repo``) aside and build each project there, as Docker does."""
    context = dest.parent / "context"
    context.mkdir(parents=True)
    for source in sources:
        path = repo / source
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
            shutil.copytree(path, context / source, ignore=ignore)
        else:
            shutil.copy2(path, context / source)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "--no-build-isolation",
         "--wheel-dir", str(dest), *(str(context / p) for p in projects)],
        cwd=context, capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return sorted(dest.glob("*.whl"))


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The unconditional ``Requires-Dist`` of a built wheel (extras such as ``dev`` left out)."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(z.read(name).decode())
    requirements = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def installed_closure(roots: Iterable[Requirement], skip: set[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``roots`` need, transitively, with the extras they ask for."""
    todo = list(roots)
    seen: set[tuple[str, frozenset[str]]] = set()
    found: dict[str, importlib.metadata.Distribution] = {}
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in skip or (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        dist = found.setdefault(name, importlib.metadata.distribution(name))
        assert req.specifier.contains(dist.version, prereleases=True), f"{name} {dist.version} is not {req}"
        for r in map(Requirement, dist.requires or []):
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in {"", *req.extras}):
                todo.append(r)
    return list(found.values())


def fresh_venv(root: Path, wheels: Path, names: list[str]) -> Path:
    """A virtualenv with the wheels ``names`` installed by pip and their dependencies linked in from
    this environment; ``pip check`` must find every requirement met. Returns its bin directory."""
    venv.create(root, with_pip=False)
    python = root / "bin" / "python"
    installed = [w for w in wheels.glob("*.whl") if canonicalize_name(w.name.split("-")[0]) in names]
    roots = [r for wheel in installed for r in wheel_requirements(wheel)]
    deps = root / "deps"
    deps.mkdir()
    for dist in installed_closure(roots, skip=set(names)):
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}:
            if not (deps / top).exists():
                (deps / top).symlink_to(Path(str(dist.locate_file(top))))
    purelib = sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)})
    Path(purelib, "_dependencies.pth").write_text(f"{deps}\n")
    for argv in (["install", "-q", "--no-deps", "--no-index", *map(str, installed)], ["check"]):
        done = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(python), *argv], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return root / "bin"
