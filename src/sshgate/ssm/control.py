"""The Session Manager control plane: start a session, resume it, terminate it (docs/ssm-protocol.md §2).

One API for the gateway, the tests and the benchmarks. ``SsmControl`` wraps a boto3 SSM client
(plus an ECS client for ECS Exec); every call runs in a worker thread through
:func:`sshgate.aws.clients.call`, so throttling is retried with backoff and a failure is an
``AwsError`` whose text a user may see. ``start_session`` / ``execute_command`` return the
``StreamTarget`` that :func:`sshgate.ssm.client.connect` (or ``open_shell`` / ``open_command`` /
``open_port``) opens; the same object is the ``control`` a live session uses to resume after a
dropped websocket and to terminate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sshgate.aws.clients import call
from sshgate.ssm.client import StreamTarget


class SsmControl:
    """``ssm:StartSession`` / ``ResumeSession`` / ``TerminateSession`` and ``ecs:ExecuteCommand``.

    ``subject`` names what the sessions reach in error messages ("starting an SSM session on
    SUBJECT"); ``ecs_client`` is needed only for :meth:`execute_command`.
    """

    def __init__(self, ssm_client: Any, ecs_client: Any = None, *, subject: str = "") -> None:
        self._ssm = ssm_client
        self._ecs = ecs_client
        self._subject = subject

    def _on(self, target: str) -> str:
        return self._subject or target

    async def start_session(
        self,
        target: str,
        document: str | None = None,
        parameters: Mapping[str, Sequence[str]] | None = None,
        *,
        reason: str | None = None,
        doing: str | None = None,
    ) -> StreamTarget:
        """ssm:StartSession; ``parameters`` are lists of strings (``{"portNumber": ["22"]}``), no
        document means the account's default shell document."""
        kwargs: dict[str, Any] = {"Target": target}
        if document:
            kwargs["DocumentName"] = document
        if parameters:
            kwargs["Parameters"] = {key: list(values) for key, values in parameters.items()}
        if reason:
            kwargs["Reason"] = reason
        what = doing or f"starting an SSM session on {self._on(target)}"
        return StreamTarget.from_response(await call(what, self._ssm.start_session, **kwargs))

    async def execute_command(
        self, cluster: str, task: str, command: str, container: str | None = None
    ) -> StreamTarget:
        """ecs:ExecuteCommand, always interactive (ECS offers nothing else)."""
        if self._ecs is None:
            raise ValueError("SsmControl was made without an ECS client")
        kwargs: dict[str, Any] = {"cluster": cluster, "task": task, "command": command, "interactive": True}
        if container:
            kwargs["container"] = container
        what = f"starting ECS exec on {self._on(task)}"
        return StreamTarget.from_response(await call(what, self._ecs.execute_command, **kwargs))

    async def resume(self, session_id: str) -> str:
        """A fresh token (ssm:ResumeSession); an empty string means the session timed out."""
        response = await call(
            f"resuming SSM session {session_id}", self._ssm.resume_session, SessionId=session_id
        )
        return str(response.get("TokenValue") or "")

    async def terminate(self, session_id: str) -> None:
        await call(f"terminating SSM session {session_id}", self._ssm.terminate_session, SessionId=session_id)
