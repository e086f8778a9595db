"""A gateway with the shipped policies plus rules the attacks try to get around: shell programs
containing ``forbidden``, sftp changes under ``/home/sgtest/sg-protected-*`` (``path`` or
``target_path``), and sftp writes whose ``path`` is under ``/home/sgtest/sg-pathonly-*``."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import GatewayProcess, pub

REPO_POLICIES = str(Path(__file__).resolve().parents[2] / "policies")
PROTECTED_PREFIX = "/home/sgtest/sg-protected-"
PATH_ONLY_PREFIX = "/home/sgtest/sg-pathonly-"

RULES = f"""package formal.v2

import rego.v1

request_block contains sprintf("shell program %q is not allowed", [input.request.command]) if {{
\tinput.request.kind == "shell"
\tcontains(input.request.command, "forbidden")
}}

request_block contains sprintf("%s is protected", [path]) if {{
\tinput.request.kind == "sftp"
\tsome path in [object.get(input.request, "path", ""), object.get(input.request, "target_path", "")]
\tstartswith(path, "{PROTECTED_PREFIX}")
}}

request_block contains sprintf("writes under %s need ops", [input.request.path]) if {{
\tinput.request.kind == "sftp"
\tinput.request.operation == "write"
\tstartswith(input.request.path, "{PATH_ONLY_PREFIX}")
}}

request_block contains sprintf("sftp %s is not allowed", [input.request.operation]) if {{
\tinput.request.kind == "sftp"
\tstartswith(input.request.operation, "extended:")
}}
"""


@pytest.fixture(scope="package")
def guarded(
    keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("guarded")
    (root / "rules").mkdir()
    (root / "rules" / "guard.rego").write_text(RULES)
    config = base_config(keys, upstream)
    config["identities"]["users"].append(
        {"email": "audrey@corp.com", "groups": ["auditors"], "authorized_keys": [pub(keys.stranger)]}
    )
    config["policies"] = {"paths": [REPO_POLICIES, str(root / "rules")]}
    gw = GatewayProcess(root / "gw", config).start()
    yield gw
    gw.stop()


@pytest.fixture
def protected() -> Iterator[Path]:
    """A directory of the upstream account ``sgtest`` (it could change it) that policy protects."""
    directory = Path(f"{PROTECTED_PREFIX}{uuid.uuid4().hex[:8]}")
    directory.mkdir()
    (directory / "file").write_text("original\n")
    (directory / "file").chmod(0o644)
    shutil.chown(directory, "sgtest", "sgtest")
    shutil.chown(directory / "file", "sgtest", "sgtest")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def recording(gw: GatewayProcess, session_id: str, timeout: float = 10) -> dict[str, Any]:
    """The ended recording of ``session_id`` (session.json), waiting for it to be sealed."""
    root = Path(gw.config["data_dir"]) / "recordings"
    deadline = time.monotonic() + timeout
    while True:
        for path in root.glob(f"[0-9]*/{session_id}/session.json"):
            doc: dict[str, Any] = json.loads(path.read_text())
            if doc["status"] != "active":
                doc["dir"] = str(path.parent)
                return doc
        if time.monotonic() > deadline:
            raise TimeoutError(f"no ended recording for {session_id}")
        time.sleep(0.1)
