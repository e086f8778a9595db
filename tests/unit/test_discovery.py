"""Discovery's pure parts: names, shared Name tags, invalid names, clashes, the ECS switch."""

from __future__ import annotations

from sshgate.aws.discovery import Discoverer, Found, Skipped, ec2_found, ecs_enabled, ecs_found, visible
from sshgate.config import Config, Discovery, Ec2Resource, EcsResource, parse_config

SETTINGS = Discovery.model_validate(
    {
        "ecs": {"container": "app", "shell": "/bin/bash"},
        "native_users": [{"username": "ops", "secret": "iam"}],
    }
)


def instance(instance_id: str, name: str | None = None, **tags: str) -> dict[str, object]:
    pairs = ({"Name": name} if name else {}) | tags
    return {"InstanceId": instance_id, "Tags": [{"Key": k, "Value": v} for k, v in pairs.items()]}


def test_ec2_names_come_from_the_name_tag_else_the_id() -> None:
    found, skipped = ec2_found([instance("i-2", "web", env="prod"), instance("i-1")], SETTINGS, "eu-west-1")
    assert [(r.name, r.instance_id, dict(r.tags)) for r in found if isinstance(r, Ec2Resource)] == [
        ("i-1", "i-1", {}),
        ("web", "i-2", {"Name": "web", "env": "prod"}),
    ]
    assert all(r.region == "eu-west-1" and r.native_users == SETTINGS.native_users for r in found)
    assert skipped == []


def test_shared_name_tags_are_listed_by_id_and_bad_names_skipped() -> None:
    found, skipped = ec2_found(
        [
            instance("i-a", "asg"),
            instance("i-b", "asg"),
            instance("i-c", "has space"),
            instance("i-d", "list"),
        ],
        SETTINGS,
        "r",
    )
    assert [r.name for r in found] == ["i-a", "i-b"]
    reasons = dict(skipped)
    assert "shared" in reasons["asg"]
    assert "not a valid resource name" in reasons["has space"]
    assert "formal list" in reasons["list"]  # a reserved word of the remote command


def test_ecs_one_resource_per_active_service() -> None:
    services = [
        {"serviceName": "api", "status": "ACTIVE", "tags": [{"key": "team", "value": "pay"}]},
        {"serviceName": "old", "status": "INACTIVE"},
        {"serviceName": "x" * 70, "status": "ACTIVE"},
    ]
    found, skipped = ecs_found("prod", services, SETTINGS, "r")
    (api,) = found
    assert isinstance(api, EcsResource)
    assert (api.name, api.cluster, api.service, api.container, api.shell) == (
        "prod-api",
        "prod",
        "api",
        "app",
        "/bin/bash",
    )
    assert dict(api.tags) == {"team": "pay"}
    assert [name for name, _ in skipped] == [f"prod-{'x' * 70}"]
    (by_arn,), _ = ecs_found("arn:aws:ecs:eu-west-1:1:cluster/prod", services[:1], SETTINGS, "r")
    assert by_arn.name == "prod-api"


def test_configured_names_win_and_a_name_two_discovered_claim_is_neither_s() -> None:
    found, _ = ec2_found([instance("i-1", "web"), instance("i-2", "db")], SETTINGS, "r")
    more, _ = ecs_found("c", [{"serviceName": "x", "status": "ACTIVE"}], SETTINGS, "r")
    shown, skipped = visible([*found, *more, *found], ["db"])
    assert [r.name for r in shown] == ["c-x"]  # web is claimed twice: whoever came first, no one
    assert [name for name, _ in skipped] == ["web", "db", "web", "db"]


def test_no_discovered_resource_can_take_another_s_name() -> None:
    # Service api-web of cluster prod and service web of cluster prod-api are both prod-api-web;
    # an instance tagged with another instance's id would take that instance's logins.
    services, _ = ecs_found("prod", [{"serviceName": "api-web", "status": "ACTIVE"}], SETTINGS, "r")
    others, _ = ecs_found("prod-api", [{"serviceName": "web", "status": "ACTIVE"}], SETTINGS, "r")
    victim, squatter = "i-0bbbbbbbbbbbbbbbb", "i-0aaaaaaaaaaaaaaaa"
    instances, skipped = ec2_found([instance(victim, "web"), instance(squatter, victim)], SETTINGS, "r")
    assert [r.name for r in instances] == [squatter, "web"]  # the squatter listed by its own id
    assert "looks like an instance id" in dict(skipped)[victim]
    shown, _ = visible([*instances, *services, *others], [])
    assert [r.name for r in shown] == [squatter, "web"]


def test_ecs_switch() -> None:
    off = Discovery()
    assert not ecs_enabled(off, {})
    assert ecs_enabled(off, {"ENABLE_ECS_AUTO_DISCOVERY": "true"})
    assert ecs_enabled(off, {"ENABLE_ECS_AUTO_DISCOVERY": "TRUE "})
    assert not ecs_enabled(off, {"ENABLE_ECS_AUTO_DISCOVERY": "false"})
    assert ecs_enabled(Discovery.model_validate({"ecs": {"enabled": True}}), {})


async def test_a_reload_during_a_round_that_switches_ec2_off_wins() -> None:
    """The round started with EC2 on; its answer must not bring the resources back."""
    on = parse_config("discovery: {ec2: {enabled: true, region: r}}")
    off = parse_config("discovery: {ec2: {enabled: false, region: r}}")

    class Reloaded(Discoverer):
        reload: Config | None = off

        async def _ec2(self) -> tuple[list[Found], list[Skipped]]:
            if self.reload is not None:  # SIGHUP arrives while AWS answers
                self.configure(self.reload)
                self.reload = None
            return ec2_found([instance("i-1", "web")], SETTINGS, "r")

    discoverer = Reloaded(on, environ={})
    await discoverer.refresh()
    assert discoverer.resources == ()
    discoverer.configure(on)
    await discoverer.refresh()  # a round with EC2 on again finds it
    assert [r.name for r in discoverer.resources] == ["web"]
