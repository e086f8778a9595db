"""Text that others chose (clients, the identity provider), made safe for an operator's terminal."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with its control characters shown as escapes: a terminal must not act on escape
    sequences someone else wrote (a title change, a cleared screen, hidden text)."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
