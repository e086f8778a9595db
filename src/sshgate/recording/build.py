"""The recorder a configuration asks for."""

from __future__ import annotations

from sshgate.aws.clients import AwsClients
from sshgate.config import Config
from sshgate.recording.channels import Options
from sshgate.recording.local import FileRecorder
from sshgate.recording.manifest import load_signing_key
from sshgate.recording.s3 import S3Sink


def build_recorder(config: Config) -> FileRecorder:
    """A local recorder, or one spooling to ``recording_dir`` and shipping to S3.

    Raises :class:`RecordingError` for an unusable signing key. Call ``await recorder.start()``
    before serving: it marks sessions a crash left ``active`` as ``interrupted`` and uploads leftovers.
    """
    settings = config.recording
    key = load_signing_key(settings.signing_key) if settings.signing_key else None
    sink = None
    if settings.sink == "s3" and settings.s3 is not None:
        s3 = settings.s3
        clients = AwsClients(config.aws)
        sink = S3Sink(lambda: clients.client("s3", s3.region), s3.bucket, s3.prefix, config.recording_dir)
    options = Options(settings.capture_input, settings.forward_data, settings.transfer_data)
    return FileRecorder(config.recording_dir, options, key, sink, retention_days=settings.retention_days)
