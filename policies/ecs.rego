# ECS rules on the task's container, service and tags (`input.ecs`, present only for ecs resources).
package formal.v2

import rego.v1

# Only the `app` container is open to everyone; sidecars (proxies, log shippers) are for platform.
session_block contains msg if {
	input.ecs.container_name != "app"
	not "platform" in input.user.groups
	msg := sprintf("container %s is reserved for the platform group", [input.ecs.container_name])
}

# The payments service (any cluster) needs the payments group. A service ARN ends in
# `service/<cluster>/<name>`; tasks started outside a service have no service_arn at all.
session_block contains "the payments service needs the payments group" if {
	_ecs_service_name == "payments"
	not "payments" in input.user.groups
}

# Tasks tagged `data-class=restricted` need the group of the same name.
session_block contains "restricted tasks need the restricted group" if {
	input.ecs.task_tags["data-class"] == "restricted"
	not "restricted" in input.user.groups
}

_ecs_service_name := name if {
	parts := split(input.ecs.service_arn, "/")
	name := parts[count(parts) - 1]
}
