"""Which of a client's environment variables reach the upstream session (docs/login.md, Binding)."""

from __future__ import annotations

from sshgate.gateway.channels import _forwarded_env


def test_only_short_plain_locale_and_time_zone_values_pass() -> None:
    env = {
        "LANG": "C.UTF-8",
        "LC_TIME": "x" * 256,
        "TZ": "Europe/Paris",
        "PATH": "/tmp/evil",  # not the locale
        "LC_PROBE": "$(id)\n;rm -rf x",
        "LC_ESC": "\x1b]0;title\x07",
        "LC_DEL": "C\x7f",
        "LC_TAB": "C\tUTF-8",
        "LC_NUL": "C\0evil",
        "LANGUAGE": "x" * 257,
        "LC_\x01": "C",
    }
    assert _forwarded_env(env) == {"LANG": "C.UTF-8", "LC_TIME": "x" * 256, "TZ": "Europe/Paris"}
