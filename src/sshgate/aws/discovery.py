"""Resources found in AWS (docs/configuration.md, ``discovery:``), refreshed in the background.

EC2: one resource per instance matching ``ec2.tag_filters``, named by its Name tag (else its id).
ECS: one resource per ACTIVE service of ``ecs.clusters`` (every cluster when none are listed),
named ``<cluster>-<service>``; ``ENABLE_ECS_AUTO_DISCOVERY=true`` turns it on. Discovered resources
carry their AWS tags (policies see them as ``input.resource.tags``) and ``discovery.native_users``
(none: the gateway's ambient credentials).

Nothing here runs on a login's path: a login reads :attr:`Discoverer.resources`, the result of
the last refresh. Each source (EC2, each ECS cluster) keeps its last good answer when AWS refuses
or throttles, and a name that breaks the grammar or repeats a configured resource is skipped
with one warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from sshgate import audit
from sshgate.aws.clients import AwsClients, call
from sshgate.aws.errors import AwsError
from sshgate.aws.targets import tag_map
from sshgate.config import Config, Discovery, Ec2Resource, EcsResource

ENV_ECS = "ENABLE_ECS_AUTO_DISCOVERY"
_LIVE_STATES = ["pending", "running", "stopping", "stopped"]
_DESCRIBE_SERVICES_MAX = 10  # ecs:DescribeServices takes at most ten services per call

Found = Ec2Resource | EcsResource
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")
Skipped = tuple[str, str]  # (name, why)


def ecs_enabled(settings: Discovery, environ: Mapping[str, str]) -> bool:
    return settings.ecs.enabled or environ.get(ENV_ECS, "").strip().lower() in ("true", "1", "yes")


def _build(model: type[Found], fields: dict[str, Any], skipped: list[Skipped]) -> Found | None:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        reason = "; ".join(e["msg"] for e in exc.errors())
        skipped.append((str(fields["name"]), f"not a valid resource name ({reason})"))
        return None


def ec2_found(
    instances: Iterable[Mapping[str, Any]], settings: Discovery, region: str
) -> tuple[list[Found], list[Skipped]]:
    """Resources for ``describe_instances`` results; two instances sharing a Name tag are each
    named by their id, so neither hides the other."""
    named = [(i, tag_map(i.get("Tags"))) for i in instances]
    counts: dict[str, int] = {}
    for _, tags in named:
        if tags.get("Name"):
            counts[tags["Name"]] = counts.get(tags["Name"], 0) + 1
    found: list[Found] = []
    skipped: list[Skipped] = []
    for instance, tags in sorted(named, key=lambda pair: str(pair[0]["InstanceId"])):
        instance_id = str(instance["InstanceId"])
        name = tags.get("Name") or instance_id
        if counts.get(name, 0) > 1:
            skipped.append((name, f"the Name tag is shared; {instance_id} is listed by its id"))
            name = instance_id
        elif name != instance_id and _INSTANCE_ID.fullmatch(name):  # would take that instance's logins
            why = f"the Name tag looks like an instance id; {instance_id} is listed by its id"
            skipped.append((name, why))
            name = instance_id
        fields = {
            "name": name,
            "type": "ec2",
            "instance_id": instance_id,
            "region": region,
            "tags": tags,
            "native_users": settings.native_users,
        }
        if (resource := _build(Ec2Resource, fields, skipped)) is not None:
            found.append(resource)
    return found, skipped


def ecs_found(
    cluster: str, services: Iterable[Mapping[str, Any]], settings: Discovery, region: str
) -> tuple[list[Found], list[Skipped]]:
    """Resources for ``describe_services`` results of one cluster (ACTIVE services only)."""
    found: list[Found] = []
    skipped: list[Skipped] = []
    for service in sorted(services, key=lambda s: str(s.get("serviceName"))):
        if service.get("status") != "ACTIVE":
            continue
        fields = {
            "name": f"{cluster.rsplit('/', 1)[-1]}-{service.get('serviceName')}",  # a cluster ARN too
            "type": "ecs",
            "cluster": cluster,
            "service": service.get("serviceName"),
            "container": settings.ecs.container,
            "shell": settings.ecs.shell,
            "region": region,
            "tags": tag_map(service.get("tags")),
            "native_users": settings.native_users,
        }
        if (resource := _build(EcsResource, fields, skipped)) is not None:
            found.append(resource)
    return found, skipped


def visible(found: Iterable[Found], configured: Iterable[str]) -> tuple[list[Found], list[Skipped]]:
    """What logins see: a configured resource always wins its name; a name that two discovered
    resources claim is neither's. First-found-wins let whoever can tag an instance or name an ECS
    service (``prod`` + ``api-web`` against ``prod-api`` + ``web``) take another's logins."""
    found = list(found)
    taken = set(configured)
    claims = Counter(resource.name for resource in found)
    shown: list[Found] = []
    skipped: list[Skipped] = []
    for resource in found:
        if resource.name in taken:
            skipped.append((resource.name, "the name is already a configured resource"))
        elif claims[resource.name] > 1:
            skipped.append((resource.name, f"{claims[resource.name]} discovered resources claim the name"))
        else:
            shown.append(resource)
    return shown, skipped


def _pages(paginator: Any, key: str, **kwargs: Any) -> list[Any]:
    """Every item under ``key`` of every page (runs in a worker thread through ``call``)."""
    return [item for page in paginator.paginate(**kwargs) for item in page.get(key, [])]


class Discoverer:
    """Holds the discovered resources and refreshes them every ``discovery.interval_s``."""

    def __init__(self, config: Config, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._log = audit.logger()
        self._found: dict[str, list[Found]] = {}  # source → its last good answer
        self._source_skips: dict[str, list[Skipped]] = {}
        self._warned: set[Skipped] = set()
        self._wake = asyncio.Event()
        self.resources: tuple[Found, ...] = ()
        self._config = config
        self._clients = AwsClients(config.aws)
        self.configure(config)

    @property
    def settings(self) -> Discovery:
        return self._config.discovery

    def enabled(self) -> bool:
        return self.settings.ec2.enabled or ecs_enabled(self.settings, self._environ)

    def configure(self, config: Config) -> None:
        """A (re)loaded configuration: names are re-checked now, switched-off sources vanish now,
        and changed settings refresh at once (until then each source keeps what it found)."""
        changed = (config.discovery, config.aws) != (self.settings, self._config.aws)
        if config.aws != self._config.aws:
            self._clients = AwsClients(config.aws)
        self._config = config
        if changed:
            self._wake.set()
        self._drop_disabled()
        self._publish()

    def _drop_disabled(self) -> None:
        for source in list(self._found):
            on = self.settings.ec2.enabled if source == "ec2" else ecs_enabled(self.settings, self._environ)
            if not on:
                self._drop(source)

    def _publish(self) -> None:
        found = [r for source in sorted(self._found) for r in self._found[source]]
        shown, skipped = visible(found, (r.name for r in self._config.resources))
        self.resources = tuple(shown)
        for item in [s for skips in self._source_skips.values() for s in skips] + skipped:
            if item not in self._warned:
                self._warned.add(item)
                self._log.warning("discovery.skipped", name=item[0], reason=item[1])

    async def run(self, stopped: asyncio.Event) -> None:
        """Refresh now, then every ``interval_s`` and after each reload, until ``stopped``."""
        while not stopped.is_set():
            self._wake.clear()
            if self.enabled():
                try:
                    await self.refresh()
                except Exception as exc:  # a bug here must not end discovery for the process
                    self._log.error("discovery.error", source="all", error=repr(exc))
            waits = [asyncio.ensure_future(e.wait()) for e in (stopped, self._wake)]
            try:
                interval = self.settings.interval_s
                await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter

    async def refresh(self) -> None:
        """One round over every enabled source; a failing source keeps what it found last."""
        sources: dict[str, Callable[[], Awaitable[tuple[list[Found], list[Skipped]]]]] = {}
        if self.settings.ec2.enabled:
            sources["ec2"] = self._ec2
        if ecs_enabled(self.settings, self._environ):
            try:
                clusters = await self._clusters()
            except AwsError as exc:
                self._failed("ecs", exc)
                clusters = [s.split(":", 1)[1] for s in self._found if s.startswith("ecs:")]
            for cluster in clusters:
                sources[f"ecs:{cluster}"] = functools.partial(self._ecs, cluster)
            for gone in [s for s in self._found if s.startswith("ecs:") and s not in sources]:
                self._drop(gone)
        for source, fetch in sources.items():
            try:
                found, skipped = await fetch()
            except AwsError as exc:
                self._failed(source, exc)
                continue
            if [r.name for r in found] != [r.name for r in self._found.get(source, [])]:
                self._log.info("discovery.updated", source=source, resources=[r.name for r in found])
            self._found[source], self._source_skips[source] = found, skipped
        self._drop_disabled()  # a reload during this round may have switched a source off
        self._publish()

    def _drop(self, source: str) -> None:
        self._found.pop(source, None)
        self._source_skips.pop(source, None)

    def _failed(self, source: str, exc: AwsError) -> None:
        self._log.warning(
            "discovery.error",
            source=source,
            error=str(exc),
            reason=exc.detail,
            kept=[r.name for r in self._found.get(source, [])],
        )

    async def _ec2(self) -> tuple[list[Found], list[Skipped]]:
        settings = self.settings.ec2
        region = self._clients.region(settings.region)
        client = self._clients.client("ec2", region)
        filters: list[dict[str, Any]] = [{"Name": "instance-state-name", "Values": _LIVE_STATES}]
        filters += [{"Name": f"tag:{key}", "Values": [value]} for key, value in settings.tag_filters.items()]
        reservations: Sequence[Mapping[str, Any]] = await call(
            "discovering EC2 instances",
            _pages,
            paginator=client.get_paginator("describe_instances"),
            key="Reservations",
            Filters=filters,
        )
        instances = [i for r in reservations for i in r.get("Instances", [])]
        return ec2_found(instances, self.settings, region)

    async def _clusters(self) -> list[str]:
        if self.settings.ecs.clusters:
            return list(self.settings.ecs.clusters)
        client = self._clients.client("ecs", self.settings.ecs.region)
        arns: list[str] = await call(
            "listing ECS clusters", _pages, paginator=client.get_paginator("list_clusters"), key="clusterArns"
        )
        return sorted(arn.rsplit("/", 1)[-1] for arn in arns)

    async def _ecs(self, cluster: str) -> tuple[list[Found], list[Skipped]]:
        region = self._clients.region(self.settings.ecs.region)
        client = self._clients.client("ecs", region)
        arns: list[str] = await call(
            f"listing the services of ECS cluster {cluster}",
            _pages,
            paginator=client.get_paginator("list_services"),
            key="serviceArns",
            cluster=cluster,
        )
        services: list[Mapping[str, Any]] = []
        for start in range(0, len(arns), _DESCRIBE_SERVICES_MAX):
            described = await call(
                f"describing the services of ECS cluster {cluster}",
                client.describe_services,
                cluster=cluster,
                services=arns[start : start + _DESCRIBE_SERVICES_MAX],
                include=["TAGS"],
            )
            services += described.get("services", [])
        return ecs_found(cluster, services, self.settings, region)
