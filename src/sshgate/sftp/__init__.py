"""SFTP v3 decoding for auditing (recordings) and gating (policy request stage)."""

from sshgate.sftp.protocol import Mutation, Request, SftpProtocolError, status_packet
from sshgate.sftp.tracker import ClientPacket, SftpTracker

__all__ = ["ClientPacket", "Mutation", "Request", "SftpProtocolError", "SftpTracker", "status_packet"]
