"""Session recordings (docs/recordings.md)."""
