"""The asciinema player shipped in the package is exactly what scripts/vendor-asciinema-player
fetched from npm for the pinned version, and the pages load nothing from elsewhere."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from sshgate.web.app import STATIC

ROOT = Path(__file__).resolve().parents[2]
VENDOR = STATIC / "vendor"


def test_vendored_files_match_their_recorded_hashes_and_the_pinned_version() -> None:
    sums = dict(
        reversed(line.split("  ", 1)) for line in (VENDOR / "SHA256SUMS").read_text().splitlines() if line
    )
    assert set(sums) == {"asciinema-player.min.js", "asciinema-player.css", "asciinema-player.LICENSE"}
    for name, digest in sums.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    pinned = re.search(r"^VERSION=(\S+)$", (ROOT / "scripts" / "vendor-asciinema-player").read_text(), re.M)
    assert pinned is not None
    assert (VENDOR / "VERSION").read_text().strip() == f"asciinema-player@{pinned.group(1)}"


def test_pages_load_only_their_own_files() -> None:
    for page in ("index.html", "session.html"):
        text = (STATIC / page).read_text()
        references = re.findall(r'(?:src|href)="([^"]+)"', text)
        assert references and all(r.startswith("/") and not r.startswith("//") for r in references), (
            references
        )
    for script in STATIC.glob("*.js"):
        assert not re.search(r"https?://", script.read_text()), script.name
