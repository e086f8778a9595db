"""Upstreams: where a bound connection's channels go (an sshd, or EC2/ECS through SSM)."""
