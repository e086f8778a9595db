"""``formal list`` and ``formal ssh-config`` (docs/login.md): the resources an identity may use.

A resource is usable when the identity gets a native user there and the session policy does not
block it (``mfa`` lists it: a fresh sign-in opens it). The policy is asked without AWS facts (no
AWS call per listed resource), so a rule on ``input.ec2`` / ``input.ecs`` still decides at connect
time. Listing binds nothing: no upstream, no recording, only audit lines.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence

import asyncssh

from sshgate.aws.errors import AwsError
from sshgate.command import ListResources, SshConfig
from sshgate.config import AnyResource, Ec2Resource, SshResource
from sshgate.gateway.binding import BindContext, choose_native, decide_session
from sshgate.identity import Identity
from sshgate.listing import GatewayAddress, Listed, list_text, ssh_config_text
from sshgate.login import Login, login_for
from sshgate.native_users import NativeChoice
from sshgate.policy.input import ConnectionFacts
from sshgate.refusal import Refusal
from sshgate.upstream.planning import aws_credentials

STATE_LOOKUP_TIMEOUT_S = 5.0


async def usable(
    ctx: BindContext, identity: Identity, connection: ConnectionFacts
) -> list[tuple[AnyResource, NativeChoice]]:
    """Every resource (configured and discovered) with a native user and no blocking policy."""
    found = []
    for resource in ctx.resources():
        try:
            native = choose_native(resource, identity, None)
        except Refusal:
            continue
        decision, _ = await decide_session(ctx, identity, resource, native, connection, None)
        if decision.allowed or decision.action == "mfa":  # usable after a fresh sign-in
            found.append((resource, native))
    return found


def _row(resource: AnyResource, native: NativeChoice, login: Login) -> Listed:
    return Listed(
        resource.name,
        resource.type,
        native.user.username,
        login=login_for(login, resource.name),
        tags=resource.tags,
        sshd=isinstance(resource, SshResource)
        or (isinstance(resource, Ec2Resource) and resource.ssh is not None),
    )


async def _details(
    ctx: BindContext, identity: Identity, resource: AnyResource, native: NativeChoice, row: Listed
) -> Listed:
    """State (EC2: the instance's) and region; "unknown" when AWS does not answer in time."""
    if isinstance(resource, SshResource):
        return row
    try:
        region = ctx.aws.clients.region(resource.region)
    except AwsError:
        region = "-"
    state = "-"
    if isinstance(resource, Ec2Resource):
        try:
            credentials = await aws_credentials(ctx.aws, resource, native, identity)
            target = await asyncio.wait_for(
                ctx.aws.targets.find_ec2(resource, credentials), STATE_LOOKUP_TIMEOUT_S
            )
            state = target.facts.state
        except (Refusal, TimeoutError):  # an AwsError is a Refusal
            state = "unknown"
    return Listed(row.name, row.type, row.native_user, row.login, state, region, row.tags, row.sshd)


async def list_output(
    ctx: BindContext, identity: Identity, login: Login, connection: ConnectionFacts, command: ListResources
) -> str:
    found = await usable(ctx, identity, connection)
    rows: Sequence[Listed] = [_row(r, n, login) for r, n in found]
    if command.detailed:
        rows = await asyncio.gather(*(_details(ctx, identity, r, n, _row(r, n, login)) for r, n in found))
    return list_text(rows, command.detailed)


async def ssh_config_output(
    ctx: BindContext,
    identity: Identity,
    login: Login,
    connection: ConnectionFacts,
    command: SshConfig,
    connected_to: tuple[str, int],
    host_key: asyncssh.SSHKeyPair | None,
) -> str:
    """Host blocks pointing at ``public_address``, else at the address the client connected to,
    pinning the host key this client just verified (the key itself, not a certificate of it)."""
    host, port = ctx.config.public_host_port or connected_to
    keys = []
    if host_key is not None:
        keys.append(
            f"{host_key.key_algorithm.decode()} {base64.b64encode(host_key.key_public_data).decode()}"
        )
    rows = [_row(r, n, login) for r, n in await usable(ctx, identity, connection)]
    address = GatewayAddress(host, port, keys)
    return ssh_config_text(rows, address, identity.name, command.prefix, command.vscode)
