"""``sshgate policy test`` and ``policy eval`` as the lead's argparse CLI will call them."""

import argparse
import json
from pathlib import Path

import pytest

from sshgate.policy.cli import add_policy_commands

from .conftest import POLICIES


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sshgate")
    add_policy_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_shipped_policies_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("policy", "test", str(POLICIES)) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    passed = int(last.split()[0])
    assert passed >= 30 and last.endswith(" passed, 0 failed")


def test_a_failing_test_fails_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.rego").write_text("package formal.v2\nimport rego.v1\nx := 1\n")
    (tmp_path / "p_test.rego").write_text(
        "package formal.v2\nimport rego.v1\ntest_one if x == 1\ntest_two if x == 2\ntest_err if 1 / 0\n"
    )
    assert _run("policy", "test", "-v", str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert f"PASS data.formal.v2.test_one ({tmp_path}/p_test.rego)" in out
    assert f"FAIL data.formal.v2.test_two ({tmp_path}/p_test.rego): undefined" in out
    assert "FAIL data.formal.v2.test_err" in out
    assert out.endswith("1 passed, 2 failed\n")


def test_no_tests_or_broken_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.rego").write_text("package formal.v2\nx := 1\n")
    assert _run("policy", "test", str(tmp_path)) == 1
    (tmp_path / "p.rego").write_text("package formal.v2\nx := \n")
    assert _run("policy", "test", str(tmp_path)) == 2
    assert "p.rego:3" in capsys.readouterr().err


def test_eval_prints_the_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"native_user": "devops", "user": {"email": "john@corp.com", "groups": []}}
    (tmp_path / "in.json").write_text(json.dumps(doc))
    assert _run("policy", "eval", "--input", str(tmp_path / "in.json"), "--policies", str(POLICIES)) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["action"] == "block" and decision["stage"] == "session"
    assert decision["client_text"] == "Blocked by policy: john@corp.com may not use the devops account"


def test_eval_request_stage_from_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"user": {"groups": []}, "request": {"kind": "exec", "command": "reboot"}}
    (tmp_path / "in.json").write_text(json.dumps(doc))
    config = tmp_path / "sshgate.yaml"
    config.write_text(f"policies:\n  paths: [{POLICIES}]\n")
    status = _run(
        "policy", "eval", "--input", str(tmp_path / "in.json"), "--stage=request", f"--config={config}"
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert json.loads(captured.out)["message"] == '"reboot" needs the sre group'


def test_eval_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.json").write_text("{not json")
    assert _run("policy", "eval", "--input", str(tmp_path / "in.json"), "--policies", str(POLICIES)) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_configmap_style_hidden_copies_are_not_loaded_twice(tmp_path: Path) -> None:
    from sshgate.policy.sources import rego_files

    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "a.rego").write_text("package formal.v2\n")
    (tmp_path / "a.rego").write_text("package formal.v2\n")
    assert rego_files([str(tmp_path)]) == [tmp_path / "a.rego"]
