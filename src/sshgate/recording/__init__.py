"""Session recordings (DESIGN §7)."""
