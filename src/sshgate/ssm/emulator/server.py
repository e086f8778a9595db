"""``Emulator``: one HTTP port that plays AWS for the gateway's tests and demos.

* ``/v1/data-channel/<session-id>`` -- the data-channel websocket (first frame: the text
  open-data-channel JSON with the session's current token; otherwise closed with 1008).
* AWS JSON 1.1 calls ``AmazonSSM.StartSession``, ``ResumeSession``, ``TerminateSession``,
  ``DescribeSessions``, ``DescribeInstanceInformation`` and
  ``AmazonEC2ContainerServiceV20141113.ExecuteCommand`` and EC2 Instance Connect's
  ``SendSSHPublicKey`` (see ``instance_connect``) are served here; every other request is
  forwarded to an in-process moto server (ECS answers mended: ``patch_ecs_answer``).
* ``/_emulator/sessions`` (GET), ``/_emulator/faults`` (POST JSON) and ``/_emulator/drop`` (POST)
  let outside tools inspect sessions and flip the fault switch; ``/_emulator/api-faults`` (POST
  JSON, see ``api_faults``) makes chosen AWS actions throttle or be denied;
* EC2 StartInstances is forwarded to moto, then the instance boots with realistic timing (see
  ``boot``);
  ``/_emulator/instances/<id>/latest/meta-data/managed-ssh-keys/active-keys/<user>/`` (GET) is the
  instance metadata an sshd asks for Instance Connect keys.

Python use::

    async with Emulator() as emu:            # 127.0.0.1, a free port
        boto3.client("ssm", endpoint_url=emu.url, ...)
        emu.faults.configure(drop_rate=0.05)  # lossy links for every session
        emu.api_faults.configure({"ec2:DescribeInstances": "throttle"})
        emu.drop_connections()                # break the live websockets (clients resume)
        emu.sessions()                        # [{"SessionId": ..., "Status": ...}, ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from typing import Any

import aiohttp
from aiohttp import web
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from sshgate.ssm.codec import CodecError, OpenDataChannel
from sshgate.ssm.emulator.agent import AgentSession, SessionSpec
from sshgate.ssm.emulator.api_faults import ApiFaults
from sshgate.ssm.emulator.aws import (
    ECS_PREFIX,
    JSON_TYPE,
    SSM_PREFIX,
    ApiError,
    Caller,
    ec2_instance,
    execute_command_spec,
    instance_information,
    patch_ecs_answer,
    start_session_spec,
)
from sshgate.ssm.emulator.boot import Boots
from sshgate.ssm.emulator.faults import Faults
from sshgate.ssm.emulator.instance_connect import EIC_PREFIX, InstanceConnect
from sshgate.ssm.websocket_direct import DirectWebSocketResponse

DEFAULT_AGENT_VERSION = "3.3.1142.0"
HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}
)


class Emulator:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        agent_version: str = DEFAULT_AGENT_VERSION,
        region: str = "us-east-1",
        flush_timeout: float = 2.0,
        reconnect_window: float = 120.0,
        boot_delay: float = 1.0,
        agent_delay: float = 1.0,
    ) -> None:
        self.host, self.port = host, port
        self.agent_version = agent_version
        self.region = region
        self.flush_timeout = flush_timeout
        self.reconnect_window = reconnect_window
        self.kms_key_id: str | None = None
        self.faults = Faults()
        self.api_faults = ApiFaults()
        self.boots = Boots(boot_delay, agent_delay)
        self.assume_role_calls: list[dict[str, str]] = []
        self.instance_connect = InstanceConnect()
        self._sessions: dict[str, AgentSession] = {}
        self._moto: ThreadedMotoServer | None = None
        self._moto_url = ""
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        await asyncio.to_thread(self._moto.start)
        moto_host, moto_port = self._moto.get_host_and_port()
        self._moto_url = f"http://{moto_host}:{moto_port}"
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/data-channel/{session_id}", self._data_channel)
        app.router.add_get("/_emulator/sessions", self._admin_sessions)
        app.router.add_post("/_emulator/faults", self._admin_faults)
        app.router.add_post("/_emulator/drop", self._admin_drop)
        app.router.add_post("/_emulator/api-faults", self._admin_api_faults)
        app.router.add_get("/_emulator/assume-role-calls", self._admin_assume_role_calls)
        app.router.add_get(
            "/_emulator/instances/{instance}/latest/meta-data/managed-ssh-keys/active-keys/{user}/",
            self._instance_connect_keys,
        )
        app.router.add_route("*", "/{tail:.*}", self._aws)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self.boots.close()
        for session in list(self._sessions.values()):
            await session.close("emulator shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()
        if self._moto is not None:
            await asyncio.to_thread(self._moto.stop)
            self._moto = None

    # -- inspection and faults -----------------------------------------------------------------
    def sessions(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        return [s.describe() for s in self._sessions.values() if not active_only or s.status != "Terminated"]

    def session(self, session_id: str) -> AgentSession:
        return self._sessions[session_id]

    def drop_connections(self, session_id: str | None = None) -> int:
        """Abort live websockets (of one session or all); returns how many were dropped."""
        return sum(s.drop_connection() for s in self._sessions.values() if session_id in (None, s.session_id))

    async def _admin_sessions(self, request: web.Request) -> web.Response:
        return web.json_response({"Sessions": self.sessions()})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.configure(**await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _admin_api_faults(self, request: web.Request) -> web.Response:
        try:
            self.api_faults.configure(await request.json())
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _admin_drop(self, request: web.Request) -> web.Response:
        return web.json_response({"dropped": self.drop_connections(request.query.get("session_id"))})

    # -- data channel --------------------------------------------------------------------------
    async def _data_channel(self, request: web.Request) -> web.StreamResponse:
        session = self._sessions.get(request.match_info["session_id"])
        if session is None or session.status == "Terminated":
            raise web.HTTPNotFound(text="no such session")
        transport = request.transport
        ws = DirectWebSocketResponse(max_msg_size=0, compress=False)  # like gorilla's default upgrader
        await ws.prepare(request)
        try:
            first = await ws.receive(timeout=10.0)
            opening = OpenDataChannel.from_json(first.data) if first.type == aiohttp.WSMsgType.TEXT else None
        except (TimeoutError, CodecError):
            opening = None
        if opening is None:
            await ws.close(code=1008, message=b"expected the open-data-channel text frame")
            return ws
        if opening.token_value != session.token:
            await ws.close(code=1008, message=b"invalid token")
            return ws

        def abort() -> None:
            if transport is not None:
                transport.abort()

        await session.serve(ws, opening, abort)
        return ws

    # -- AWS APIs ------------------------------------------------------------------------------
    async def _aws(self, request: web.Request) -> web.StreamResponse:
        target = request.headers.get("X-Amz-Target", "")
        caller = Caller.from_headers(request.headers, self.region)
        if target:
            action = target.rsplit(".", 1)[-1]
        elif request.content_type == "application/x-www-form-urlencoded":  # EC2 and STS: query protocol
            action = _query_param(await request.read(), "Action")
        else:
            action = ""  # S3 and the rest: REST, not subject to faults
        failed = self.api_faults.response(f"{caller.service}:{action}", bool(target), caller.owner)
        if failed is not None:
            return failed
        handler = {
            SSM_PREFIX + "StartSession": self._start_session,
            SSM_PREFIX + "ResumeSession": self._resume_session,
            SSM_PREFIX + "TerminateSession": self._terminate_session,
            SSM_PREFIX + "DescribeSessions": self._describe_sessions,
            SSM_PREFIX + "DescribeInstanceInformation": self._describe_instance_information,
            ECS_PREFIX + "ExecuteCommand": self._execute_command,
            EIC_PREFIX + "SendSSHPublicKey": self._send_ssh_public_key,
        }.get(target)
        if handler is None:
            return await self._forward(request, target)
        try:
            body = json.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise ApiError("SerializationException", "request body must be a JSON object")
            result = await handler(request, caller, body)
        except ApiError as exc:
            return web.json_response(exc.body(), status=exc.status, content_type=JSON_TYPE)
        except ValueError as exc:
            return web.json_response(
                {"__type": "SerializationException", "message": str(exc)}, status=400, content_type=JSON_TYPE
            )
        return web.json_response(result, content_type=JSON_TYPE)

    def _stream_url(self, request: web.Request, session_id: str) -> str:
        return f"ws://{request.host}/v1/data-channel/{session_id}?stream=input&role=publish_subscribe"

    def _open(self, spec: SessionSpec) -> AgentSession:
        session = AgentSession(
            spec,
            faults=self.faults,
            flush_timeout=self.flush_timeout,
            reconnect_window=self.reconnect_window,
        )
        self._sessions[spec.session_id] = session
        return session

    def _live(self, body: dict[str, Any]) -> AgentSession:
        session = self._sessions.get(str(body.get("SessionId", "")))
        if session is None or session.status == "Terminated":
            raise ApiError("DoesNotExistException", f"Session {body.get('SessionId')} does not exist.")
        return session

    async def _start_session(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
        session = self._open(
            start_session_spec(caller, body, self.agent_version, self.kms_key_id, self.boots)
        )
        sid = session.session_id
        return {"SessionId": sid, "TokenValue": session.token, "StreamUrl": self._stream_url(request, sid)}

    async def _resume_session(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
        session = self._live(body)
        sid = session.session_id
        return {
            "SessionId": sid,
            "TokenValue": session.new_token(),
            "StreamUrl": self._stream_url(request, sid),
        }

    async def _terminate_session(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
        sid = str(body.get("SessionId", ""))
        session = self._sessions.get(sid)
        if session is not None:
            await session.close("")
        return {"SessionId": sid}

    async def _describe_sessions(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
        active = body.get("State") != "History"
        sessions = [
            {
                "SessionId": s["SessionId"],
                "Target": s["Target"],
                "Status": s["Status"],
                "StartDate": s["StartDate"],
                "Owner": s["Owner"],
                "DocumentName": s["DocumentName"],
                "Reason": s["Reason"],
            }
            for s in self.sessions()
            if (s["Status"] != "Terminated") == active
        ]
        return {"Sessions": sessions}

    async def _describe_instance_information(
        self, request: web.Request, caller: Caller, body: dict[str, Any]
    ) -> Any:
        return instance_information(caller, body, self.agent_version, self.boots)

    async def _execute_command(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
        spec, fields = execute_command_spec(caller, body, self.agent_version, self.kms_key_id)
        session = self._open(spec)
        sid = session.session_id
        fields["session"] = {
            "sessionId": sid,
            "streamUrl": self._stream_url(request, sid),
            "tokenValue": session.token,
        }
        return fields

    async def _send_ssh_public_key(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
        return self.instance_connect.send_ssh_public_key(caller, body)

    async def _instance_connect_keys(self, request: web.Request) -> web.Response:
        keys = self.instance_connect.active_keys(request.match_info["instance"], request.match_info["user"])
        return web.Response(text="".join(f"{key}\n" for key in keys))

    def _note_assume_role(self, body: bytes) -> None:
        """moto ignores SourceIdentity; tests ask the emulator what AssumeRole was called with."""
        if b"Action=AssumeRole" not in body:
            return
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        keys = ("RoleArn", "RoleSessionName", "SourceIdentity")
        self.assume_role_calls.append({k: form[k][0] for k in keys if k in form})

    async def _admin_assume_role_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"Calls": self.assume_role_calls})

    async def _forward(self, request: web.Request, target: str) -> web.StreamResponse:
        """Pass a request to moto unchanged; mend its ECS answers (``patch_ecs_answer``)."""
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        data = await request.read()
        self._note_assume_role(data)
        caller = Caller.from_headers(request.headers, self.region)
        starting = self._stopped_to_start(caller, data)
        async with self._http.request(
            request.method, self._moto_url + request.path_qs, headers=headers, data=data
        ) as upstream:
            body = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
            if upstream.status == 200 and target.startswith(ECS_PREFIX):
                with contextlib.suppress(ValueError):
                    action, asked = target[len(ECS_PREFIX) :], json.loads(data or b"{}")
                    answer = patch_ecs_answer(caller, action, asked, json.loads(body), self.agent_version)
                    body = json.dumps(answer).encode()
            if upstream.status == 200 and starting:
                self.boots.started(starting)
            return web.Response(status=upstream.status, body=body, headers=out_headers)

    def _stopped_to_start(self, caller: Caller, data: bytes) -> list[Any]:
        """The stopped instances an ec2:StartInstances request names (moto will start them)."""
        if caller.service != "ec2" or _query_param(data, "Action") != "StartInstances":
            return []
        form = urllib.parse.parse_qs(data.decode("utf-8", "replace"))
        ids = [v[0] for k, v in form.items() if k.startswith("InstanceId.")]
        found = [ec2_instance(caller, i) for i in ids]
        return [i for i in found if i is not None and i.instance_state.name == "stopped"]


def _query_param(data: bytes, name: str) -> str:
    """A parameter of a query-protocol (form-encoded) request body, or ""."""
    values = urllib.parse.parse_qs(data.decode("utf-8", "replace")).get(name)
    return values[0] if values else ""
