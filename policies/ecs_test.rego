package formal.v2

import rego.v1

ecs_input(service, container, tags, groups) := with_input({
	"resource": {"name": "orders", "type": "ecs", "tags": {}},
	"ecs": {
		"cluster_arn": "arn:aws:ecs:eu-west-1:123456789012:cluster/main",
		"service_arn": sprintf("arn:aws:ecs:eu-west-1:123456789012:service/main/%s", [service]),
		"task_id": "0123456789abcdef", "task_arn": "arn:aws:ecs:eu-west-1:123456789012:task/main/0123456789abcdef",
		"task_tags": tags, "container_name": container,
	},
	"user": {"groups": groups},
})

test_app_container_for_everyone if {
	session.action == "allow" with input as ecs_input("orders", "app", {}, [])
}

test_sidecar_needs_platform if {
	d := session with input as ecs_input("orders", "envoy", {}, ["dev"])
	d.message == "container envoy is reserved for the platform group"
}

test_sidecar_for_platform if {
	session.action == "allow" with input as ecs_input("orders", "envoy", {}, ["platform"])
}

test_payments_needs_payments_group if {
	d := session with input as ecs_input("payments", "app", {}, ["dev"])
	d.message == "the payments service needs the payments group"
	session.action == "allow" with input as ecs_input("payments", "app", {}, ["payments"])
}

test_restricted_task_tag if {
	d := session with input as ecs_input("orders", "app", {"data-class": "restricted"}, [])
	d.message == "restricted tasks need the restricted group"
}

test_task_without_service if {
	standalone := json.remove(ecs_input("x", "app", {}, []), ["ecs/service_arn"])
	session.action == "allow" with input as standalone
}
