"""Session and request policies (DESIGN §6)."""
