"""sshgate: an identity-aware SSH gateway."""

__version__ = "0.1.0"
