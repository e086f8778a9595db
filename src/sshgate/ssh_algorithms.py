"""The SSH ciphers the gateway offers, on both sides: to clients and to upstream sshds."""

from __future__ import annotations

# AES-GCM first: asyncssh's chacha20 costs about twice the CPU per byte (bench/bench_relay.py).
ENCRYPTION_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
]
