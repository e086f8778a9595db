"""Both distributions installed from their built wheels into fresh virtualenvs, then every console script
that docker-compose.yml, the Dockerfile and the docs name is started from there.

The wheels are built from the files the Dockerfile's build stage copies and installed by pip; their
declared dependencies, and only those, come from this environment (``tests/support/install.py``), so
an undeclared import fails, and a plain ``sshgate`` install holds no moto and no emulator.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.deploy.common import PYPROJECTS, REPO, console_scripts, dockerfile_stages
from tests.support.emulator import aws_client, emulator_process
from tests.support.install import build_wheels, fresh_venv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheels")
    build = dockerfile_stages()["build"]
    sources = [s for op, arg in build if op == "COPY" for s in shlex.split(arg)[:-1]]
    projects = [str(p.parent.relative_to(REPO)) for p in PYPROJECTS.values()]
    built = build_wheels(REPO, sources, projects, root / "ours")
    assert {w.name.split("-")[0] for w in built} == {"sshgate", "sshgate_aws_emulator"}
    return root / "ours"


def test_each_wheel_holds_exactly_its_part_of_src(wheels: Path) -> None:
    """Every file under src/sshgate is in one wheel (data files too: include-package-data is off)."""
    src = REPO / "src"
    files = {p.relative_to(src).as_posix() for p in (src / "sshgate").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip
    emulator = {f for f in files if f.startswith("sshgate/ssm/emulator/")}
    for wheel, expected in (("sshgate-", files - emulator), ("sshgate_aws_emulator-", emulator)):
        with zipfile.ZipFile(next(wheels.glob(f"{wheel}*.whl"))) as z:
            assert {n for n in z.namelist() if ".dist-info/" not in n} == expected, wheel


def run(bin_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=60)


def test_the_gateway_alone_installs_no_emulator_and_every_command_runs(wheels: Path, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv", wheels, ["sshgate"])
    assert {p.name for p in bin_dir.iterdir() if p.name.startswith("sshgate")} == console_scripts("sshgate")
    no_moto = run(bin_dir, "python", "-c", "import moto")
    assert "No module named 'moto'" in no_moto.stderr
    no_emulator = run(bin_dir, "python", "-c", "import sshgate.ssm.emulator")
    assert "No module named 'sshgate.ssm.emulator'" in no_emulator.stderr

    usage = run(bin_dir, "sshgate", "--help")
    assert usage.returncode == 0
    for command in ("serve", "demo", "check-config", "token", "policy", "recordings"):
        assert command in usage.stdout
    checked = run(bin_dir, "sshgate", "check-config", "--config", str(REPO / "deploy/compose/gateway.yaml"))
    assert checked.returncode == 0 and ": OK (1 resources" in checked.stdout, checked.stderr
    token = run(bin_dir, "sshgate", "token", "new")
    assert token.returncode == 0 and re.match(r"token: \S+\nhash:  scrypt\$", token.stdout)
    rego = run(bin_dir, "sshgate", "policy", "test", str(REPO / "policies"))
    assert rego.returncode == 0, rego.stdout + rego.stderr

    # `sshgate demo` is the gateway serving from the installed package: one command goes through it.
    demo = subprocess.Popen(
        [str(bin_dir / "sshgate"), "demo", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        ssh = ""
        for _ in range(40):
            match = re.match(r"\s+One command:\s+(ssh .*)$", demo.stdout.readline())
            if match:
                ssh = match.group(1)
                break
        assert ssh, "the demo printed no ssh line"
        one = subprocess.run(shlex.split(ssh), capture_output=True, timeout=30, input=b"")
        assert one.returncode == 0 and one.stdout.startswith(b"Linux "), one.stderr
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=20) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def test_the_emulator_distribution_serves_the_aws_apis(wheels: Path, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv", wheels, ["sshgate", "sshgate-aws-emulator"])
    scripts = {p.name for p in bin_dir.iterdir() if p.name.startswith("sshgate")}
    assert scripts == console_scripts("sshgate") | console_scripts("sshgate-aws-emulator")
    with emulator_process(exe=bin_dir / "sshgate-aws-emulator") as url:
        assert url.startswith("http://127.0.0.1:")
        assert aws_client(url, "ec2").describe_instances()["Reservations"] == []
