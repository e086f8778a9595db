"""Session and request policies (docs/policy.md)."""
