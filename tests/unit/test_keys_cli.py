"""``sshgate keys list`` prints what the identity provider chose without its escape sequences."""

import asyncio
from pathlib import Path

import pytest

from sshgate.cli import main
from sshgate.oidc.bindings import KeyBinding
from sshgate.state.local import LocalState


def test_keys_list_shows_control_characters_in_groups_and_emails_as_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\n")
    binding = KeyBinding(
        "SHA256:abc", "okta", "bob\x1b[8m@corp.com", ("ops\x1b]0;owned\x07", "dev"), 0.0, 4102444800.0
    )

    async def bind() -> None:
        state = LocalState(str(tmp_path / "data"))
        await state.bind(binding)
        await state.aclose()

    asyncio.run(bind())
    assert main(["keys", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert out.split("\t")[1:3] == ["idp:okta:human:bob\\x1b[8m@corp.com", "ops\\x1b]0;owned\\x07,dev"]
